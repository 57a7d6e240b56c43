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
