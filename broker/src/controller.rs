//! The controller: orders metadata changes as records in the metadata log.

pub mod log;
