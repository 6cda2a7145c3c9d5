//! The header (`include/cport.h`) against this module: every exported function with the same
//! parameter and return types, every constant with the same value, every struct with the same
//! fields in the same order. A change on one side without the other fails here.

const HEADER: &str = include_str!("include/cport.h");
const RUST: &str = include_str!("mod.rs");
/// The `completion_port_*` layer and its header, checked the same way.
const COMPAT_HEADER: &str = include_str!("include/completion_port.h");
const COMPAT_RUST: &str = include_str!("compat.rs");

/// The C spelling of a Rust type of the C API.
fn c_type(rust: &str) -> String {
    let t: String = rust.split_whitespace().collect::<Vec<_>>().join(" ");
    let (ptr, base) = if let Some(b) = t.strip_prefix("*mut ") {
        ("*", b)
    } else if let Some(b) = t.strip_prefix("*const ") {
        ("const*", b)
    } else {
        ("", t.as_str())
    };
    if base == "CompletionPort" {
        // The original API's handle: a typedef'd pointer.
        assert_eq!(ptr, "*", "CompletionPort is only used by pointer");
        return "COMPLETION_PORT_HANDLE".to_string();
    }
    let base = match base {
        "CportPort" => "cport_port",
        "CportOptions" => "cport_options",
        "CportIsb" => "cport_isb",
        "CportCompletion" => "cport_completion",
        "CompletionPortIngressData" => "COMPLETION_PORT_INGRESS_DATA",
        "SocketHandle" => "SOCKET_HANDLE",
        "OnEventComplete" => "ON_COMPLETION_PORT_EVENT_COMPLETE",
        "EpollBufferData" => "EPOLL_BUFFER_DATA",
        "c_void" | "()" => "void",
        "c_char" => "char",
        "c_int" => "int",
        "usize" => "size_t",
        "u64" => "uint64_t",
        "u32" => "uint32_t",
        "i64" => "int64_t",
        "libc::iovec" => "struct iovec",
        other => panic!("a Rust type the header check does not know: {other}"),
    };
    match (ptr, base) {
        ("*", _) => format!("{base} *"),
        ("const*", _) => format!("const {base} *"),
        _ => base.to_string(),
    }
}

/// `name -> (return type, parameter types)` of every `extern "C" fn` of the Rust side.
fn rust_functions(rust: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for part in rust.split("extern \"C\" fn ").skip(1) {
        let name = part[..part.find('(').unwrap()].trim().to_string();
        let args = &part[part.find('(').unwrap() + 1..part.find(')').unwrap()];
        let after = &part[part.find(')').unwrap() + 1..part.find('{').unwrap()];
        let ret = after.trim().strip_prefix("->").map_or("void".to_string(), |r| c_type(r.trim()));
        let params = args
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| c_type(a.split_once(':').expect("name: type").1))
            .collect();
        out.push((name, ret, params));
    }
    out.sort();
    out
}

/// The same from the header's prototypes (`type name(type param, ...);`).
fn header_functions(header: &str, prefix: &str) -> Vec<(String, String, Vec<String>)> {
    // Comments out first (they span lines), then the preprocessor lines.
    let mut uncommented = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        uncommented.push_str(&rest[..i]);
        rest = rest[i..].split_once("*/").map_or("", |(_, r)| r);
    }
    uncommented.push_str(rest);
    let plain: String = uncommented.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    for decl in plain.split(';') {
        let decl = decl.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(open) = decl.find(prefix).filter(|_| decl.contains('(') && !decl.contains('{')) else {
            continue;
        };
        let head = &decl[..decl.find('(').unwrap()];
        let name_at = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let name = head[name_at..].to_string();
        if !name.starts_with(prefix) || open > name_at {
            continue;
        }
        let ret = normalize(&head[..name_at]);
        let args = &decl[decl.find('(').unwrap() + 1..decl.rfind(')').unwrap()];
        let params = if args.trim() == "void" {
            Vec::new()
        } else {
            args.split(',').map(|a| normalize(strip_name(a.trim()))).collect()
        };
        out.push((name, ret, params));
    }
    out.sort();
    out
}

/// `const char *name` -> `const char *`.
fn strip_name(param: &str) -> &str {
    let end = param.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    &param[..end]
}

fn normalize(t: &str) -> String {
    let t = t.replace('*', " * ");
    let words: Vec<&str> = t.split_whitespace().collect();
    let stars = words.iter().filter(|w| **w == "*").count();
    let base = words.iter().filter(|w| **w != "*").copied().collect::<Vec<_>>().join(" ");
    if stars == 0 {
        base
    } else {
        format!("{base} {}", "*".repeat(stars))
    }
}

#[test]
fn ffi_header_matches_the_rust_side() {
    check_functions(rust_functions(RUST), header_functions(HEADER, "cport_"), 20);
    check_functions(rust_functions(COMPAT_RUST), header_functions(COMPAT_HEADER, "completion_port_"), 5);
}

fn check_functions(rust: Vec<(String, String, Vec<String>)>, header: Vec<(String, String, Vec<String>)>, least: usize) {
    assert!(rust.len() >= least, "found only {} Rust functions", rust.len());
    let names = |v: &[(String, String, Vec<String>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&header), names(&rust), "the same functions on both sides");
    for (r, h) in rust.iter().zip(&header) {
        assert_eq!(r, h, "the signature of {} (Rust side first)", r.0);
    }
}

#[test]
fn ffi_header_constants_match() {
    check_constants(RUST, HEADER, "CPORT_", 25);
    check_constants(COMPAT_RUST, COMPAT_HEADER, "COMPLETION_PORT_", 7);
}

fn check_constants(rust: &str, header: &str, prefix: &str, least: usize) {
    let mut rust: Vec<(String, String)> = rust
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            Some((name.trim().to_string(), rest.split_once('=')?.1.trim().trim_end_matches(';').to_string()))
        })
        .collect();
    let define = format!("#define {prefix}");
    let mut header: Vec<(String, String)> = header
        .lines()
        .filter_map(|l| l.trim().strip_prefix(define.as_str()))
        .map(|l| {
            let mut w = l.split_whitespace();
            (format!("{prefix}{}", w.next().unwrap_or("")), w.next().unwrap_or("").to_string())
        })
        .filter(|(_, value)| !value.is_empty()) // the include guard
        .collect();
    rust.sort();
    header.sort();
    assert!(rust.len() >= least, "found only {} constants", rust.len());
    assert_eq!(header, rust, "the same constants with the same values");
}

/// Field names and C types of a `#[repr(C)] pub struct` of the Rust side.
fn rust_struct(rust: &str, name: &str) -> Vec<(String, String)> {
    let body = rust.split(&format!("pub struct {name} {{")).nth(1).expect("the struct").split('}').next().unwrap();
    body.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pub "))
        .map(|l| {
            let (n, t) = l.trim_start_matches("pub ").split_once(':').unwrap();
            (n.trim().to_string(), c_type(t.trim().trim_end_matches(',')))
        })
        .collect()
}

/// The same from the header's `typedef struct name { ... } name;`.
fn header_struct(header: &str, name: &str) -> Vec<(String, String)> {
    let body =
        header.split(&format!("typedef struct {name} {{")).nth(1).expect("the struct").split('}').next().unwrap();
    body.lines()
        .map(|l| l.split("/*").next().unwrap_or("").trim())
        .filter(|l| l.ends_with(';'))
        .map(|l| {
            let l = l.trim_end_matches(';');
            let field = l[l.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1)..].to_string();
            (field.clone(), normalize(&l[..l.len() - field.len()]))
        })
        .collect()
}

#[test]
fn ffi_header_structs_match() {
    for (rust, c) in
        [("CportOptions", "cport_options"), ("CportIsb", "cport_isb"), ("CportCompletion", "cport_completion")]
    {
        assert_eq!(header_struct(HEADER, c), rust_struct(RUST, rust), "the fields of {c}");
    }
    for (rust, c) in [
        ("EpollBufferData", "EPOLL_BUFFER_DATA_TAG"),
        ("CompletionPortIngressData", "COMPLETION_PORT_INGRESS_DATA_TAG"),
    ] {
        assert_eq!(header_struct(COMPAT_HEADER, c), rust_struct(COMPAT_RUST, rust), "the fields of {c}");
    }
}
