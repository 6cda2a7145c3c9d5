//! loom models of cport's concurrency protocols live in `tests/`; this crate has no code of its own.
