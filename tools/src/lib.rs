//! fjord-tools: the library behind `fjordctl`, the operator's command-line tool.
//!
//! Each `fjordctl` command lives in its own module; `main.rs` only parses the
//! command line and maps results to exit codes.

pub mod client;
pub mod error;
pub mod kafka;
pub mod log;
pub mod tune;

pub use error::Error;

/// Lets the process end quietly, killed by `SIGPIPE`, when the reader of
/// its output goes away (`fjordctl dump-log ... | head`), as command-line
/// tools do. Rust ignores `SIGPIPE`, so the next `println!` would panic on
/// the broken pipe instead. Call first thing in `main`.
pub fn end_quietly_when_output_closes() {
    // SAFETY: restores the default disposition of one signal, before the
    // process has started any thread or installed any handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
