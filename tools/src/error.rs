//! The one error type of fjord-tools.

use std::path::PathBuf;

/// Every failure a `fjordctl` command reports. Each renders as one line, which
/// `main` prints on stderr before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--profile NAME` named no profile embedded in the binary.
    #[error("unknown profile `{name}` (known: {known})")]
    UnknownProfile { name: String, known: String },

    /// A profile file could not be read.
    #[error("cannot read profile file {path}: {source}")]
    ReadProfile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A profile's TOML is malformed or breaks a rule of the profile format.
    /// The message is folded onto one line (TOML errors quote the source).
    #[error("invalid profile {origin}: {}", one_line(&fault.to_string()))]
    InvalidProfile {
        origin: String,
        #[source]
        fault: ProfileFault,
    },

    /// `--apply` was asked for by a process whose effective uid is not 0.
    #[error("--apply changes kernel settings and must run as root (effective uid is {uid}); use --check to only report, or --write-sysctl-file to produce a file")]
    NotRoot { uid: u32 },

    /// The effective uid could not be determined from `/proc/self/status`.
    #[error("cannot determine the effective uid from {path}: {message}")]
    Uid { path: PathBuf, message: String },

    /// Writing the sysctl.d file failed.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// `dump-log` was given a file whose name is none the engine writes.
    #[error("{path}: not a segment, index, time index, producer snapshot or partition.checkpoint file (kind is taken from the name, e.g. 00000000000000000000.log)")]
    UnknownLogFile { path: PathBuf },

    /// A file given to `dump-log` could not be read.
    #[error("cannot read {path}: {source}")]
    ReadLogFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The data directory given to `verify-log` could not be listed.
    #[error("cannot read data directory {path}: {source}")]
    ReadDataDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A broker did not accept a connection.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },

    /// A connection failed while a request was in flight.
    #[error("connection to {address} failed: {source}")]
    Network {
        address: String,
        source: std::io::Error,
    },

    /// A request or response did not encode or decode, or a response did not
    /// match its request.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A broker answered with a Kafka error code.
    #[error("{what}: {error}")]
    Broker { what: String, error: String },

    /// A command-line value clap could not check by itself.
    #[error("{0}")]
    Usage(String),

    /// Reading the records to produce, or writing what was consumed, failed.
    #[error("{what}: {source}")]
    Stdio {
        what: &'static str,
        source: std::io::Error,
    },

    /// Writing the machine-readable report to stdout failed.
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// What makes a profile invalid (see [`Error::InvalidProfile`]).
#[derive(Debug, thiserror::Error)]
pub enum ProfileFault {
    /// The TOML is malformed, or a field is unknown or of the wrong type.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),

    /// No checks, or more than the profile format allows.
    #[error("a profile holds 1 to {max} checks, this one {count}")]
    CheckCount { count: usize, max: usize },

    /// A `[[sysctl]]` key that is not a dotted sysctl name.
    #[error("`{key}` is not a sysctl key such as `vm.swappiness`")]
    SysctlKey { key: String },

    /// A `[[sysfs]]` path outside /sys and /proc, or not a clean one.
    #[error("`{path}` must be an absolute path under /sys or /proc without empty, `.` or `..` components")]
    SysfsPath { path: String },

    /// A check whose `reason` is empty or spans lines; `check` names it
    /// (`sysctl vm.swappiness`).
    #[error("{check}: `reason` must be one non-empty line")]
    Reason { check: String },

    /// A check whose `value`/`values` do not fit its comparison.
    #[error("{check}: {fault}")]
    Expectation {
        check: String,
        fault: ExpectationFault,
    },

    /// An `[[rlimit]]` compared other than at-least or at-most.
    #[error("{check}: a resource limit takes at-least or at-most")]
    RlimitComparison { check: String },
}

/// How a check's `compare`, `value` and `values` disagree.
#[derive(Debug, thiserror::Error)]
pub enum ExpectationFault {
    #[error("`values` of a one-of check must be non-empty strings")]
    EmptyOneOfValue,

    #[error("a one-of check takes `values = [...]` and no `value`")]
    OneOfTakesValues,

    #[error("an exact check needs a non-empty `value`")]
    EmptyExactValue,

    #[error("exact, at-least and at-most checks take one `value = \"...\"` and no `values`")]
    TakesOneValue,

    #[error("`{value}` is not a list of integers or `unlimited`")]
    NotNumbers { value: String },
}

/// `text` with every run of white space, line breaks included, as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
