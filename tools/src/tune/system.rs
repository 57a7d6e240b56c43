//! Access to the kernel's `/proc` and `/sys` through a root directory.
//!
//! [`SystemRoot::host`] reads the real files; [`SystemRoot::at`] reads a tree
//! laid out the same way under another directory, which is how tests build a
//! fake host (and how an operator can check a host filesystem mounted in a
//! container). Paths in profiles are absolute host paths (`/sys/...`) and are
//! resolved under the root here and nowhere else.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::tune::profile::Resource;
use crate::Error;

/// Upper bound on files one pattern may match (one per CPU or per NVMe
/// namespace), so a pattern like `/sys/*/*/*` cannot walk the whole tree.
pub const PATTERN_MATCHES_MAX: usize = 4096;

/// Upper bound on bytes read from one setting file; kernel setting files are
/// a line or two.
pub const SETTING_BYTES_MAX: u64 = 64 * 1024;

/// The directory under which `/proc` and `/sys` are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRoot {
    root: PathBuf,
}

impl SystemRoot {
    /// The running host: paths are used as they are.
    #[must_use]
    pub fn host() -> SystemRoot {
        SystemRoot {
            root: PathBuf::from("/"),
        }
    }

    /// A tree rooted at `root`, so `/proc/sys/vm/swappiness` is read from
    /// `<root>/proc/sys/vm/swappiness`.
    #[must_use]
    pub fn at(root: impl Into<PathBuf>) -> SystemRoot {
        SystemRoot { root: root.into() }
    }

    /// Where an absolute host path lives under this root.
    #[must_use]
    pub fn resolve(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// Reads a setting file, trimmed of surrounding whitespace.
    ///
    /// # Errors
    /// The I/O error of opening or reading; `InvalidData` when the file is not
    /// UTF-8 or exceeds [`SETTING_BYTES_MAX`].
    pub fn read_setting(&self, host_path: &str) -> io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        let file = fs::File::open(self.resolve(host_path))?;
        let read = file.take(SETTING_BYTES_MAX + 1).read_to_string(&mut text)?;
        if read as u64 > SETTING_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than {SETTING_BYTES_MAX} bytes"),
            ));
        }
        Ok(text.trim().to_owned())
    }

    /// Writes a setting file the way `echo value > file` does. The file must
    /// exist: kernel settings are never created.
    ///
    /// # Errors
    /// The I/O error of opening or writing (the kernel reports a rejected
    /// value as a write error, e.g. `EINVAL`).
    pub fn write_setting(&self, host_path: &str, value: &str) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.resolve(host_path))?;
        file.write_all(format!("{value}\n").as_bytes())
    }

    /// The existing files matching `pattern`, an absolute host path in which
    /// `*` matches any run of characters within one component, sorted in
    /// natural order (`cpu2` before `cpu10`). A directory that does not exist
    /// matches nothing.
    ///
    /// # Errors
    /// An I/O error other than not-found while listing a directory, or
    /// `InvalidData` when more than [`PATTERN_MATCHES_MAX`] paths match.
    pub fn expand(&self, pattern: &str) -> io::Result<Vec<String>> {
        let mut prefixes = vec![String::new()];
        for component in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            for prefix in &prefixes {
                if component.contains('*') {
                    let entries = match fs::read_dir(self.resolve(prefix)) {
                        Ok(entries) => entries,
                        Err(e) if is_absent(&e) => continue,
                        Err(e) => return Err(e),
                    };
                    for entry in entries {
                        let name = entry?.file_name();
                        let Some(name) = name.to_str() else { continue };
                        if wildcard_match(component, name) {
                            next.push(format!("{prefix}/{name}"));
                        }
                    }
                } else {
                    next.push(format!("{prefix}/{component}"));
                }
                if next.len() > PATTERN_MATCHES_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("`{pattern}` matches more than {PATTERN_MATCHES_MAX} paths"),
                    ));
                }
            }
            prefixes = next;
        }
        let mut found: Vec<String> = prefixes
            .into_iter()
            .filter(|path| self.resolve(path).is_file())
            .collect();
        found.sort_by_key(|path| natural_key(path));
        Ok(found)
    }

    /// The effective uid of this process, from `/proc/self/status`.
    ///
    /// # Errors
    /// [`Error::Uid`] when the file cannot be read or has no well-formed `Uid:` line.
    pub fn effective_uid(&self) -> Result<u32, Error> {
        let path = self.resolve("/proc/self/status");
        let uid_error = |message: String| Error::Uid {
            path: path.clone(),
            message,
        };
        let status = fs::read_to_string(&path).map_err(|e| uid_error(e.to_string()))?;
        // "Uid:\treal\teffective\tsaved\tfilesystem"
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|effective| effective.parse().ok())
            .ok_or_else(|| uid_error("no `Uid:` line with an effective uid".to_owned()))
    }

    /// The soft limit of `resource` for process `pid` (this process when
    /// `None`), as `/proc/<pid>/limits` spells it: a number or `unlimited`.
    ///
    /// # Errors
    /// The I/O error of reading the limits file, or `InvalidData` when it has
    /// no row for the resource.
    pub fn soft_limit(&self, pid: Option<u32>, resource: Resource) -> io::Result<String> {
        let process = pid.map_or_else(|| "self".to_owned(), |pid| pid.to_string());
        let limits = self.read_setting(&format!("/proc/{process}/limits"))?;
        limits
            .lines()
            .find_map(|line| line.strip_prefix(resource.proc_limits_label()))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no `{}` row", resource.proc_limits_label()),
                )
            })
    }

    /// The root directory, for messages.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Whether an I/O error means "this setting does not exist on this host"
/// rather than "it exists but could not be read".
#[must_use]
pub fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Matches `name` against `pattern`, where `*` stands for any run of characters.
#[must_use]
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let middle_and_last: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Splits a path into text and number runs so `cpu10` sorts after `cpu2`.
fn natural_key(path: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut digits = String::from(c);
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            key.push((
                std::mem::take(&mut text),
                digits.parse().unwrap_or(u64::MAX),
            ));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard_match("nvme*", "nvme0n1"));
        assert!(wildcard_match("cpu*", "cpu12"));
        assert!(!wildcard_match("nvme*", "vda"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(
            !wildcard_match("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn patterns_expand_to_existing_files_in_natural_order() {
        let dir = tempfile::tempdir().unwrap();
        let system = SystemRoot::at(dir.path());
        for cpu in ["cpu0", "cpu2", "cpu10"] {
            let path = dir
                .path()
                .join(format!("sys/devices/system/cpu/{cpu}/cpufreq"));
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join("scaling_governor"), "powersave\n").unwrap();
        }
        // Directories matching `cpu*` without the file are not matches.
        fs::create_dir_all(dir.path().join("sys/devices/system/cpu/cpuidle")).unwrap();
        let found = system
            .expand("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
            .unwrap();
        assert_eq!(
            found,
            [
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
                "/sys/devices/system/cpu/cpu10/cpufreq/scaling_governor",
            ]
        );
        assert!(system
            .expand("/sys/block/nvme*/queue/scheduler")
            .unwrap()
            .is_empty());
        assert_eq!(
            system
                .read_setting("/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor")
                .unwrap(),
            "powersave"
        );
    }

    #[test]
    fn uid_and_limits_come_from_proc_self() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        fs::write(
            dir.path().join("proc/self/status"),
            "Name:\tfjordctl\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("proc/self/limits"),
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max open files            1024                 524288               files     \n\
             Max locked memory         8388608              unlimited            bytes     \n",
        )
        .unwrap();
        let system = SystemRoot::at(dir.path());
        assert_eq!(system.effective_uid().unwrap(), 0);
        assert_eq!(
            system.soft_limit(None, Resource::Memlock).unwrap(),
            "8388608"
        );
        assert_eq!(system.soft_limit(None, Resource::Nofile).unwrap(), "1024");
        assert!(is_absent(
            &system.soft_limit(Some(42), Resource::Memlock).unwrap_err()
        ));
    }
}
