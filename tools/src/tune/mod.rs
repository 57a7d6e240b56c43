//! `fjordctl tune`: compare a host's kernel, disk, CPU and process-limit
//! settings with a tuning profile, and optionally apply the profile.
//!
//! The profiles are TOML files under `tuning/profiles/` in the repository and
//! are embedded in the binary, so `fjordctl tune --check` needs no checkout.
//! Everything read from or written to `/proc` and `/sys` goes through
//! [`system::SystemRoot`], so tests run against a fake tree in a directory.

pub mod apply;
pub mod check;
pub mod command;
pub mod profile;
pub mod report;
pub mod sysctl_file;
pub mod system;
