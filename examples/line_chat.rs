//! A line-based chat room on cport's session layer: every line a member types goes to every
//! other member. Talk to it with `nc` or `telnet`.
//!
//! ```text
//! cargo run --release --example line_chat -- [ADDR]      # default 127.0.0.1:7878
//! nc 127.0.0.1 7878
//! ```
//!
//! Commands: `/nick NAME`, `/who`, `/quit`. The room is a map of [`Connection`] handles; a
//! session sends to the others through them while it runs, and leaves the room in `closed`.
//! A member whose terminal stops reading is closed once its backlog passes the server's
//! output limit, without holding up anyone else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cport::session::{Closed, Connection, Outbox, Server, Session};

/// Longest line accepted; a member typing more is told so and disconnected.
const MAX_LINE: usize = 4096;

/// Who is in the room: connection id -> (nickname, handle).
#[derive(Default)]
struct Room {
    members: Mutex<BTreeMap<u64, (String, Connection)>>,
}

impl Room {
    /// Sends `line` to every member except `from`.
    fn broadcast(&self, from: u64, line: &str) {
        let members = self.members.lock().unwrap();
        for (id, (_, conn)) in members.iter() {
            if *id != from {
                // A member that is closing, or over its backlog limit, just misses the line.
                let _ = conn.send(line.as_bytes());
            }
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.members.lock().unwrap().values().any(|(n, _)| n == name)
    }
}

struct Member {
    room: Arc<Room>,
    id: u64,
    name: String,
}

impl Member {
    fn command(&mut self, line: &str, out: &mut Outbox<'_>) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("/nick") => match words.next() {
                Some(new) if new.len() <= 32 && !self.room.name_taken(new) => {
                    let old = std::mem::replace(&mut self.name, new.to_string());
                    if let Some(entry) = self.room.members.lock().unwrap().get_mut(&self.id) {
                        entry.0 = self.name.clone();
                    }
                    self.room.broadcast(self.id, &format!("* {old} is now {new}\n"));
                    out.send(format!("* you are now {new}\n").as_bytes());
                }
                Some(_) => out.send(b"* that name is taken or too long\n"),
                None => out.send(b"* usage: /nick NAME\n"),
            },
            Some("/who") => {
                let names: Vec<String> = self.room.members.lock().unwrap().values().map(|(n, _)| n.clone()).collect();
                out.send(format!("* here: {}\n", names.join(", ")).as_bytes());
            }
            Some("/quit") => {
                out.send(b"* bye\n");
                out.close();
            }
            _ => out.send(b"* commands: /nick NAME, /who, /quit\n"),
        }
    }
}

impl Session for Member {
    fn opened(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        let conn = out.connection().clone();
        self.room.members.lock().unwrap().insert(self.id, (self.name.clone(), conn));
        out.send(format!("* welcome, {}. /nick NAME, /who, /quit\n", self.name).as_bytes());
        self.room.broadcast(self.id, &format!("* {} joined\n", self.name));
        Ok(())
    }

    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let mut used = 0;
        // Whole lines only: a partial line stays unconsumed and comes back with more bytes.
        while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
            let raw = &data[used..used + end];
            used += end + 1;
            let text = String::from_utf8_lossy(raw);
            let line = text.trim_end_matches('\r');
            if line.starts_with('/') {
                self.command(line, out);
                if line.trim() == "/quit" {
                    return Ok(used);
                }
            } else if !line.is_empty() {
                self.room.broadcast(self.id, &format!("<{}> {line}\n", self.name));
            }
        }
        if data.len() - used > MAX_LINE {
            out.send(b"* line too long\n");
            out.close();
            return Ok(data.len());
        }
        Ok(used)
    }

    fn closed(&mut self, _why: &Closed) {
        self.room.members.lock().unwrap().remove(&self.id);
        self.room.broadcast(self.id, &format!("* {} left\n", self.name));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7878".to_string());
    let room = Arc::new(Room::default());
    let server = Server::builder().bind(addr.parse()?, move |conn| {
        Box::new(Member { room: room.clone(), id: conn.id(), name: format!("guest{}", conn.id() & 0xffff_ffff) })
    })?;
    println!("listening {}", server.local_addr());
    // Two threads handle the room; the main thread is one of them.
    let other = server.clone();
    let helper = std::thread::spawn(move || other.run());
    server.run()?;
    helper.join().expect("chat thread panicked")?;
    Ok(())
}
