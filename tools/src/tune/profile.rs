//! Tuning profiles: which settings a host should have and why.
//!
//! A profile is TOML with three kinds of checks, each carrying a one-line
//! `reason` that the check and the generated sysctl file repeat to the operator:
//!
//! ```toml
//! name = "nvme-default"
//! description = "..."
//!
//! [[sysctl]]
//! key = "vm.swappiness"
//! compare = "at-most"        # exact | at-least | at-most | one-of
//! value = "1"
//! reason = "..."
//!
//! [[sysfs]]                  # a path under /sys or /proc; `*` matches within one component
//! path = "/sys/kernel/mm/transparent_hugepage/enabled"
//! compare = "one-of"
//! values = ["madvise", "never"]
//! reason = "..."
//!
//! [[rlimit]]                 # soft limit of the checked process, from /proc/<pid>/limits
//! resource = "memlock"       # memlock | nofile
//! compare = "at-least"
//! value = "unlimited"
//! reason = "..."
//! ```
//!
//! Numeric comparisons accept several whitespace-separated fields (as in
//! `net.ipv4.tcp_rmem`) and compare them field by field; `unlimited` is larger
//! than every number. Profiles are validated when loaded, so a check never
//! meets an expectation it cannot evaluate.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ExpectationFault, ProfileFault};
use crate::Error;

/// Profiles compiled into the binary: (name, TOML text).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "nvme-default",
        include_str!("../../../tuning/profiles/nvme-default.toml"),
    ),
    (
        "latency",
        include_str!("../../../tuning/profiles/latency.toml"),
    ),
];

/// The profile `fjordctl tune` uses when none is named.
pub const DEFAULT_PROFILE: &str = "nvme-default";

/// Upper bound on checks in one profile, so a malformed or hostile file cannot
/// make a check run unbounded work.
pub const CHECKS_MAX: usize = 512;

/// A validated tuning profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub sysctls: Vec<SysctlCheck>,
    pub sysfs: Vec<SysfsCheck>,
    pub rlimits: Vec<RlimitCheck>,
}

/// A kernel parameter under `/proc/sys`, named the way sysctl(8) names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlCheck {
    pub key: String,
    pub expected: Expected,
    pub reason: String,
}

impl SysctlCheck {
    /// The file behind the key, as an absolute host path.
    #[must_use]
    pub fn proc_path(&self) -> String {
        format!("/proc/sys/{}", self.key.replace('.', "/"))
    }
}

/// A file under `/sys` (or `/proc`), possibly a pattern matching several files
/// (one per NVMe device or per CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsCheck {
    pub path: String,
    pub expected: Expected,
    pub reason: String,
}

/// A soft resource limit of the checked process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlimitCheck {
    pub resource: Resource,
    pub expected: Expected,
    pub reason: String,
}

/// The resource limits a profile may check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// `RLIMIT_MEMLOCK`: bytes of memory the process may pin (`io_uring` registered buffers).
    Memlock,
    /// `RLIMIT_NOFILE`: open file descriptors (segments, indexes, sockets).
    Nofile,
}

impl Resource {
    /// The row label of this resource in `/proc/<pid>/limits`.
    #[must_use]
    pub fn proc_limits_label(self) -> &'static str {
        match self {
            Resource::Memlock => "Max locked memory",
            Resource::Nofile => "Max open files",
        }
    }

    /// The name used in reports: the `setrlimit(2)` constant.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memlock => "RLIMIT_MEMLOCK",
            Resource::Nofile => "RLIMIT_NOFILE",
        }
    }

    /// The systemd unit directive that sets this limit for a service.
    #[must_use]
    pub fn systemd_directive(self) -> &'static str {
        match self {
            Resource::Memlock => "LimitMEMLOCK",
            Resource::Nofile => "LimitNOFILE",
        }
    }
}

/// A number in a setting; `unlimited` (or `infinity`) is larger than all others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number(i128);

impl Number {
    pub const UNLIMITED: Number = Number(i128::MAX);

    /// Parses a decimal integer, `unlimited` or `infinity`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Number> {
        match text {
            "unlimited" | "infinity" => Some(Number::UNLIMITED),
            _ => text.parse::<i128>().ok().map(Number),
        }
    }

    /// Parses whitespace-separated fields; `None` if any field is not a number.
    #[must_use]
    pub fn parse_fields(text: &str) -> Option<Vec<Number>> {
        let fields: Option<Vec<Number>> = text.split_whitespace().map(Number::parse).collect();
        fields.filter(|fields| !fields.is_empty())
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Number::UNLIMITED {
            f.write_str("unlimited")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// What a setting's value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Equal after collapsing runs of whitespace.
    Exact(String),
    /// Every field at least the expected field (same number of fields).
    AtLeast(Vec<Number>),
    /// Every field at most the expected field (same number of fields).
    AtMost(Vec<Number>),
    /// Any one of these values (a sysfs choice file matches on its selected `[value]`).
    OneOf(Vec<String>),
}

impl Expected {
    /// Whether `actual` (already normalized, see [`normalize`]) satisfies this expectation.
    #[must_use]
    pub fn is_met_by(&self, actual: &str) -> bool {
        match self {
            Expected::Exact(value) => normalize(actual) == *value,
            Expected::OneOf(values) => values.iter().any(|value| normalize(actual) == *value),
            Expected::AtLeast(bounds) => fields_compare(actual, bounds, |a, b| a >= b),
            Expected::AtMost(bounds) => fields_compare(actual, bounds, |a, b| a <= b),
        }
    }

    /// The value `--apply` writes to move `actual` into range while changing as
    /// little as possible: a numeric field already in range keeps its value.
    #[must_use]
    pub fn value_to_write(&self, actual: Option<&str>) -> String {
        let current = actual.and_then(Number::parse_fields);
        let clamp = |bounds: &[Number], pick: fn(Number, Number) -> Number| -> String {
            let fields: Vec<Number> = match current {
                Some(ref current) if current.len() == bounds.len() => current
                    .iter()
                    .zip(bounds)
                    .map(|(&a, &b)| pick(a, b))
                    .collect(),
                _ => bounds.to_vec(),
            };
            join_numbers(&fields)
        };
        match self {
            Expected::Exact(value) => value.clone(),
            Expected::OneOf(values) => values[0].clone(),
            Expected::AtLeast(bounds) => clamp(bounds, std::cmp::max),
            Expected::AtMost(bounds) => clamp(bounds, std::cmp::min),
        }
    }

    /// The value a sysctl.d file should set: the profile's own value.
    #[must_use]
    pub fn value_for_file(&self) -> String {
        self.value_to_write(None)
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Exact(value) => f.write_str(value),
            Expected::OneOf(values) => f.write_str(&values.join("|")),
            Expected::AtLeast(bounds) => write!(f, ">= {}", join_numbers(bounds)),
            Expected::AtMost(bounds) => write!(f, "<= {}", join_numbers(bounds)),
        }
    }
}

/// Collapses whitespace runs to one space and, for sysfs choice files such as
/// `[none] mq-deadline kyber` or `always [madvise] never`, keeps only the
/// selected (bracketed) choice.
#[must_use]
pub fn normalize(raw: &str) -> String {
    let selected = raw
        .split_whitespace()
        .find_map(|token| token.strip_prefix('[').and_then(|t| t.strip_suffix(']')));
    match selected {
        Some(choice) => choice.to_owned(),
        None => raw.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn fields_compare(actual: &str, bounds: &[Number], ok: fn(&Number, &Number) -> bool) -> bool {
    match Number::parse_fields(actual) {
        Some(fields) => {
            fields.len() == bounds.len() && fields.iter().zip(bounds).all(|(a, b)| ok(a, b))
        }
        None => false,
    }
}

fn join_numbers(numbers: &[Number]) -> String {
    numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    #[serde(default)]
    sysctl: Vec<RawSysctl>,
    #[serde(default)]
    sysfs: Vec<RawSysfs>,
    #[serde(default)]
    rlimit: Vec<RawRlimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSysctl {
    key: String,
    compare: Compare,
    value: Option<String>,
    values: Option<Vec<String>>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSysfs {
    path: String,
    compare: Compare,
    value: Option<String>,
    values: Option<Vec<String>>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRlimit {
    resource: Resource,
    compare: Compare,
    value: Option<String>,
    values: Option<Vec<String>>,
    reason: String,
}

struct RawExpectation {
    compare: Compare,
    value: Option<String>,
    values: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Compare {
    Exact,
    AtLeast,
    AtMost,
    OneOf,
}

impl RawExpectation {
    fn of(compare: Compare, value: Option<String>, values: Option<Vec<String>>) -> Self {
        RawExpectation {
            compare,
            value,
            values,
        }
    }

    fn validate(self) -> Result<Expected, ExpectationFault> {
        match (self.compare, self.value, self.values) {
            (Compare::OneOf, None, Some(values)) => {
                let values: Vec<String> = values.iter().map(|v| normalize(v)).collect();
                if values.is_empty() || values.iter().any(String::is_empty) {
                    return Err(ExpectationFault::EmptyOneOfValue);
                }
                Ok(Expected::OneOf(values))
            }
            (Compare::OneOf, _, _) => Err(ExpectationFault::OneOfTakesValues),
            (compare, Some(value), None) => {
                let numbers = || {
                    Number::parse_fields(&value).ok_or_else(|| ExpectationFault::NotNumbers {
                        value: value.clone(),
                    })
                };
                match compare {
                    Compare::Exact if normalize(&value).is_empty() => {
                        Err(ExpectationFault::EmptyExactValue)
                    }
                    Compare::Exact => Ok(Expected::Exact(normalize(&value))),
                    Compare::AtLeast => Ok(Expected::AtLeast(numbers()?)),
                    Compare::AtMost => Ok(Expected::AtMost(numbers()?)),
                    Compare::OneOf => unreachable!("one-of handled above"),
                }
            }
            _ => Err(ExpectationFault::TakesOneValue),
        }
    }

    /// [`RawExpectation::validate`] for the check named `check`.
    fn validate_for(self, check: &str) -> Result<Expected, ProfileFault> {
        self.validate().map_err(|fault| ProfileFault::Expectation {
            check: check.to_owned(),
            fault,
        })
    }
}

fn validate_reason(reason: &str, check: &str) -> Result<String, ProfileFault> {
    let reason = reason.trim();
    if reason.is_empty() || reason.contains('\n') {
        return Err(ProfileFault::Reason {
            check: check.to_owned(),
        });
    }
    Ok(reason.to_owned())
}

fn validate_sysctl_key(key: &str) -> Result<(), ProfileFault> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if key.is_empty() || !key.chars().all(valid_char) || key.split('.').any(str::is_empty) {
        return Err(ProfileFault::SysctlKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

fn validate_sysfs_path(path: &str) -> Result<(), ProfileFault> {
    let under_known_tree = path.starts_with("/sys/") || path.starts_with("/proc/");
    let clean = path
        .split('/')
        .skip(1)
        .all(|component| !component.is_empty() && component != "." && component != "..");
    if !under_known_tree || !clean {
        return Err(ProfileFault::SysfsPath {
            path: path.to_owned(),
        });
    }
    Ok(())
}

impl Profile {
    /// Parses and validates a profile. `origin` names it in error messages.
    ///
    /// # Errors
    /// [`Error::InvalidProfile`] when the TOML is malformed, a field is unknown,
    /// a value does not fit its comparison, or the profile has no checks or
    /// more than [`CHECKS_MAX`].
    pub fn parse(text: &str, origin: &str) -> Result<Profile, Error> {
        Self::parse_inner(text).map_err(|fault| Error::InvalidProfile {
            origin: origin.to_owned(),
            fault,
        })
    }

    fn parse_inner(text: &str) -> Result<Profile, ProfileFault> {
        let raw: RawProfile = toml::from_str(text)?;
        let count = raw.sysctl.len() + raw.sysfs.len() + raw.rlimit.len();
        if count == 0 || count > CHECKS_MAX {
            return Err(ProfileFault::CheckCount {
                count,
                max: CHECKS_MAX,
            });
        }
        let sysctls = raw
            .sysctl
            .into_iter()
            .map(|c| {
                validate_sysctl_key(&c.key)?;
                let what = format!("sysctl {}", c.key);
                Ok(SysctlCheck {
                    expected: RawExpectation::of(c.compare, c.value, c.values)
                        .validate_for(&what)?,
                    reason: validate_reason(&c.reason, &what)?,
                    key: c.key,
                })
            })
            .collect::<Result<Vec<_>, ProfileFault>>()?;
        let sysfs = raw
            .sysfs
            .into_iter()
            .map(|c| {
                validate_sysfs_path(&c.path)?;
                let what = format!("sysfs {}", c.path);
                Ok(SysfsCheck {
                    expected: RawExpectation::of(c.compare, c.value, c.values)
                        .validate_for(&what)?,
                    reason: validate_reason(&c.reason, &what)?,
                    path: c.path,
                })
            })
            .collect::<Result<Vec<_>, ProfileFault>>()?;
        let rlimits = raw
            .rlimit
            .into_iter()
            .map(|c| {
                let what = format!("rlimit {}", c.resource.name());
                let expected =
                    RawExpectation::of(c.compare, c.value, c.values).validate_for(&what)?;
                if matches!(expected, Expected::Exact(_) | Expected::OneOf(_)) {
                    return Err(ProfileFault::RlimitComparison { check: what });
                }
                Ok(RlimitCheck {
                    resource: c.resource,
                    expected,
                    reason: validate_reason(&c.reason, &what)?,
                })
            })
            .collect::<Result<Vec<_>, ProfileFault>>()?;
        Ok(Profile {
            name: raw.name,
            description: raw.description.trim().to_owned(),
            sysctls,
            sysfs,
            rlimits,
        })
    }

    /// Loads an embedded profile by name.
    ///
    /// # Errors
    /// [`Error::UnknownProfile`] for a name not in [`EMBEDDED`].
    pub fn embedded(name: &str) -> Result<Profile, Error> {
        let (_, text) = EMBEDDED
            .iter()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| Error::UnknownProfile {
                name: name.to_owned(),
                known: EMBEDDED
                    .iter()
                    .map(|(known, _)| *known)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Profile::parse(text, &format!("`{name}` (embedded)"))
    }

    /// Loads a profile from a TOML file.
    ///
    /// # Errors
    /// [`Error::ReadProfile`] when the file cannot be read, and the errors of [`Profile::parse`].
    pub fn from_file(path: &Path) -> Result<Profile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadProfile {
            path: path.to_owned(),
            source,
        })?;
        Profile::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_profile_parses_and_is_named_after_its_key() {
        for (name, _) in EMBEDDED {
            let profile = Profile::embedded(name).expect("embedded profile parses");
            assert_eq!(profile.name, *name);
            assert!(!profile.sysctls.is_empty());
        }
        assert!(EMBEDDED.iter().any(|(name, _)| *name == DEFAULT_PROFILE));
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let error = Profile::embedded("nope").unwrap_err().to_string();
        assert!(error.contains("nvme-default"), "{error}");
        assert!(error.contains("latency"), "{error}");
    }

    #[test]
    fn comparisons_parse_into_typed_expectations() {
        let profile = Profile::parse(
            r#"
            name = "t"
            description = "test"
            [[sysctl]]
            key = "net.ipv4.tcp_rmem"
            compare = "at-least"
            value = "4096 87380 16777216"
            reason = "r"
            [[sysctl]]
            key = "vm.swappiness"
            compare = "at-most"
            value = "1"
            reason = "r"
            [[sysfs]]
            path = "/sys/kernel/mm/transparent_hugepage/enabled"
            compare = "one-of"
            values = ["madvise", "never"]
            reason = "r"
            [[rlimit]]
            resource = "memlock"
            compare = "at-least"
            value = "unlimited"
            reason = "r"
            "#,
            "test",
        )
        .expect("valid profile");
        assert_eq!(
            profile.sysctls[0].expected,
            Expected::AtLeast(vec![Number(4096), Number(87380), Number(16_777_216)])
        );
        assert_eq!(
            profile.sysctls[0].proc_path(),
            "/proc/sys/net/ipv4/tcp_rmem"
        );
        assert_eq!(
            profile.sysctls[1].expected,
            Expected::AtMost(vec![Number(1)])
        );
        assert_eq!(
            profile.sysfs[0].expected,
            Expected::OneOf(vec!["madvise".into(), "never".into()])
        );
        assert_eq!(profile.rlimits[0].resource, Resource::Memlock);
        assert_eq!(
            profile.rlimits[0].expected,
            Expected::AtLeast(vec![Number::UNLIMITED])
        );
    }

    fn parse_error(check: &str) -> String {
        let text = format!("name = \"t\"\ndescription = \"d\"\n{check}");
        let error = Profile::parse(&text, "test").unwrap_err().to_string();
        assert!(!error.contains('\n'), "errors are one line: {error}");
        error
    }

    #[test]
    fn malformed_profiles_are_refused_with_the_reason() {
        assert!(parse_error("").contains("1 to 512 checks"));
        assert!(parse_error(
            "[[sysctl]]\nkey = \"vm.swappiness\"\ncompare = \"at-most\"\nvalue = \"low\"\nreason = \"r\""
        )
        .contains("not a list of integers"));
        assert!(parse_error(
            "[[sysctl]]\nkey = \"vm/../x\"\ncompare = \"exact\"\nvalue = \"1\"\nreason = \"r\""
        )
        .contains("not a sysctl key"));
        assert!(parse_error(
            "[[sysfs]]\npath = \"/etc/passwd\"\ncompare = \"exact\"\nvalue = \"1\"\nreason = \"r\""
        )
        .contains("under /sys or /proc"));
        assert!(parse_error(
            "[[sysfs]]\npath = \"/sys/x\"\ncompare = \"one-of\"\nvalue = \"1\"\nreason = \"r\""
        )
        .contains("one-of"));
        assert!(parse_error(
            "[[sysctl]]\nkey = \"vm.swappiness\"\ncompare = \"exact\"\nvalue = \"1\"\nreason = \"\""
        )
        .contains("one non-empty line"));
        assert!(parse_error(
            "[[rlimit]]\nresource = \"memlock\"\ncompare = \"exact\"\nvalue = \"1\"\nreason = \"r\""
        )
        .contains("at-least or at-most"));
        assert!(parse_error(
            "[[sysctl]]\nkey = \"vm.swappiness\"\ncompare = \"roughly\"\nvalue = \"1\"\nreason = \"r\""
        )
        .contains("roughly"));
    }

    #[test]
    fn numeric_comparisons_go_field_by_field_and_unlimited_is_largest() {
        let at_least = Expected::AtLeast(Number::parse_fields("4096 87380 16777216").unwrap());
        assert!(at_least.is_met_by("4096\t131072\t33554432"));
        assert!(!at_least.is_met_by("4096 16384 4194304"));
        assert!(!at_least.is_met_by("4096 87380"), "field count must match");
        assert!(!at_least.is_met_by("garbage"));

        let memlock = Expected::AtLeast(vec![Number::UNLIMITED]);
        assert!(memlock.is_met_by("unlimited"));
        assert!(!memlock.is_met_by("8388608"));

        let at_most = Expected::AtMost(vec![Number(1)]);
        assert!(at_most.is_met_by("0"));
        assert!(at_most.is_met_by("1"));
        assert!(!at_most.is_met_by("60"));
        assert!(Expected::AtLeast(vec![Number(-1)]).is_met_by("0"));
    }

    #[test]
    fn choice_files_compare_on_their_selected_value() {
        assert_eq!(normalize("[none] mq-deadline kyber bfq"), "none");
        assert_eq!(normalize("always [madvise] never"), "madvise");
        assert_eq!(normalize(" performance\n"), "performance");
        let thp = Expected::OneOf(vec!["madvise".into(), "never".into()]);
        assert!(thp.is_met_by("always [madvise] never"));
        assert!(!thp.is_met_by("[always] madvise never"));
        assert!(Expected::Exact("none".into()).is_met_by("[none] mq-deadline"));
    }

    #[test]
    fn apply_moves_only_the_fields_out_of_range() {
        let at_least = Expected::AtLeast(Number::parse_fields("4096 87380 16777216").unwrap());
        assert_eq!(
            at_least.value_to_write(Some("4096 131072 6291456")),
            "4096 131072 16777216"
        );
        assert_eq!(at_least.value_to_write(None), "4096 87380 16777216");
        let at_most = Expected::AtMost(vec![Number(5)]);
        assert_eq!(at_most.value_to_write(Some("10")), "5");
        let thp = Expected::OneOf(vec!["madvise".into(), "never".into()]);
        assert_eq!(
            thp.value_to_write(Some("[always] madvise never")),
            "madvise"
        );
        assert_eq!(
            Expected::AtLeast(vec![Number::UNLIMITED]).to_string(),
            ">= unlimited"
        );
    }
}
