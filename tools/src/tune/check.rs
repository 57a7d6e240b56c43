//! Comparing a host with a profile: one [`Row`] per setting.

use std::io;

use serde::Serialize;

use crate::tune::profile::{normalize, Expected, Profile, Resource};
use crate::tune::system::{is_absent, SystemRoot};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The value satisfies the profile.
    Ok,
    /// The value exists and does not satisfy the profile.
    Diff,
    /// The setting does not apply here (no NVMe device, no cpufreq driver, a
    /// sysctl this kernel lacks) or could not be read.
    Missing,
}

impl Status {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Diff => "DIFF",
            Status::Missing => "MISSING",
        }
    }
}

/// What a row is about, and so how `--apply` would change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A sysctl, written through its file under `/proc/sys`.
    Sysctl { key: String, path: String },
    /// One or more sysfs files sharing the same current value.
    Files { paths: Vec<String> },
    /// A resource limit of the checked process; not something a running
    /// process can change for another.
    Rlimit { resource: Resource },
}

/// One line of the check report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The sysctl key, the file (or pattern with a count), or the limit name.
    pub setting: String,
    pub expected: Expected,
    /// The normalized current value; for a missing setting, why it is missing
    /// when that is more than "absent".
    pub actual: Option<String>,
    pub status: Status,
    pub reason: String,
    pub target: Target,
}

/// Counts of rows by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub diff: usize,
    pub missing: usize,
}

impl Summary {
    #[must_use]
    pub fn of(rows: &[Row]) -> Summary {
        let mut summary = Summary::default();
        for row in rows {
            match row.status {
                Status::Ok => summary.ok += 1,
                Status::Diff => summary.diff += 1,
                Status::Missing => summary.missing += 1,
            }
        }
        summary
    }

    /// Whether the host passes: nothing differs, and under `strict` nothing is
    /// missing either.
    #[must_use]
    pub fn passed(self, strict: bool) -> bool {
        self.diff == 0 && (!strict || self.missing == 0)
    }
}

/// Which process's resource limits to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsOf {
    /// `fjordctl` itself: meaningful when run under the same limits as the broker.
    ThisProcess,
    /// A running broker, by pid.
    Process(u32),
}

/// Reads every setting the profile names and compares it.
///
/// Rows come in profile order: sysctls, then sysfs files, then limits. A sysfs
/// pattern matching several files gives one row when they all agree, or one
/// row per file when they do not, so a 128-core host is one governor row. This
/// never fails: an unreadable setting becomes a [`Status::Missing`] row that
/// says why.
#[must_use]
pub fn check(profile: &Profile, system: &SystemRoot, limits_of: LimitsOf) -> Vec<Row> {
    let mut rows = Vec::new();
    for sysctl in &profile.sysctls {
        let path = sysctl.proc_path();
        let read = system.read_setting(&path);
        rows.push(row(
            sysctl.key.clone(),
            &sysctl.expected,
            read,
            &sysctl.reason,
            Target::Sysctl {
                key: sysctl.key.clone(),
                path,
            },
        ));
    }
    for file in &profile.sysfs {
        let paths = match system.expand(&file.path) {
            Ok(paths) => paths,
            Err(error) => {
                rows.push(row(
                    file.path.clone(),
                    &file.expected,
                    Err(error),
                    &file.reason,
                    Target::Files { paths: Vec::new() },
                ));
                continue;
            }
        };
        if paths.is_empty() {
            let absent = io::Error::new(io::ErrorKind::NotFound, "no such file");
            rows.push(row(
                file.path.clone(),
                &file.expected,
                Err(absent),
                &file.reason,
                Target::Files { paths },
            ));
            continue;
        }
        let mut values: Vec<io::Result<String>> = paths
            .iter()
            .map(|path| system.read_setting(path).map(|raw| normalize(&raw)))
            .collect();
        let all_agree = values.windows(2).all(|pair| same_read(&pair[0], &pair[1]));
        if all_agree && paths.len() > 1 {
            let setting = format!("{} ({} files)", file.path, paths.len());
            let read = values.swap_remove(0);
            rows.push(row(
                setting,
                &file.expected,
                read,
                &file.reason,
                Target::Files { paths },
            ));
        } else {
            for (path, read) in paths.into_iter().zip(values) {
                rows.push(row(
                    path.clone(),
                    &file.expected,
                    read,
                    &file.reason,
                    Target::Files { paths: vec![path] },
                ));
            }
        }
    }
    for limit in &profile.rlimits {
        let pid = match limits_of {
            LimitsOf::ThisProcess => None,
            LimitsOf::Process(pid) => Some(pid),
        };
        let setting = match pid {
            None => format!("{} (soft, this process)", limit.resource.name()),
            Some(pid) => format!("{} (soft, pid {pid})", limit.resource.name()),
        };
        rows.push(row(
            setting,
            &limit.expected,
            system.soft_limit(pid, limit.resource),
            &limit.reason,
            Target::Rlimit {
                resource: limit.resource,
            },
        ));
    }
    rows
}

/// Whether two reads of files matched by one pattern give one row: the same
/// value, or the same failure.
fn same_read(first: &io::Result<String>, second: &io::Result<String>) -> bool {
    match (first, second) {
        (Ok(first), Ok(second)) => first == second,
        (Err(first), Err(second)) => {
            first.kind() == second.kind() && first.to_string() == second.to_string()
        }
        _ => false,
    }
}

fn row(
    setting: String,
    expected: &Expected,
    read: io::Result<String>,
    reason: &str,
    target: Target,
) -> Row {
    let (actual, status) = match read {
        Ok(raw) => {
            let status = if expected.is_met_by(&raw) {
                Status::Ok
            } else {
                Status::Diff
            };
            (Some(normalize(&raw)), status)
        }
        Err(error) if is_absent(&error) => (None, Status::Missing),
        Err(error) => (Some(format!("unreadable: {error}")), Status::Missing),
    };
    Row {
        setting,
        expected: expected.clone(),
        actual,
        status,
        reason: reason.to_owned(),
        target,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    /// A profile touching every kind of check, for tests over a fake tree.
    pub(crate) const TEST_PROFILE: &str = r#"
        name = "test"
        description = "every kind of check"

        [[sysctl]]
        key = "vm.swappiness"
        compare = "at-most"
        value = "1"
        reason = "keep memory in RAM"

        [[sysctl]]
        key = "net.ipv4.tcp_rmem"
        compare = "at-least"
        value = "4096 87380 16777216"
        reason = "room for bandwidth-delay product"

        [[sysctl]]
        key = "net.core.somaxconn"
        compare = "at-least"
        value = "4096"
        reason = "accept backlog"

        [[sysctl]]
        key = "fs.not_in_this_kernel"
        compare = "exact"
        value = "1"
        reason = "absent on purpose"

        [[sysfs]]
        path = "/sys/block/nvme*/queue/scheduler"
        compare = "exact"
        value = "none"
        reason = "NVMe does its own queueing"

        [[sysfs]]
        path = "/sys/kernel/mm/transparent_hugepage/enabled"
        compare = "one-of"
        values = ["madvise", "never"]
        reason = "no khugepaged stalls"

        [[sysfs]]
        path = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
        compare = "exact"
        value = "performance"
        reason = "no frequency ramp-up"

        [[rlimit]]
        resource = "memlock"
        compare = "at-least"
        value = "unlimited"
        reason = "io_uring registered buffers"
    "#;

    pub(crate) fn put(root: &Path, host_path: &str, contents: &str) {
        let path = root.join(host_path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// A host with two NVMe devices (one misconfigured), THP on madvise, no
    /// cpufreq, swappiness 60, and an 8 MiB memlock limit.
    pub(crate) fn fake_host(root: &Path) {
        put(root, "/proc/sys/vm/swappiness", "60\n");
        put(
            root,
            "/proc/sys/net/ipv4/tcp_rmem",
            "4096\t131072\t33554432\n",
        );
        put(root, "/proc/sys/net/core/somaxconn", "4096\n");
        put(
            root,
            "/sys/block/nvme0n1/queue/scheduler",
            "[none] mq-deadline kyber bfq\n",
        );
        put(
            root,
            "/sys/block/nvme1n1/queue/scheduler",
            "none [mq-deadline] kyber bfq\n",
        );
        put(
            root,
            "/sys/block/vda/queue/scheduler",
            "none [mq-deadline] kyber bfq\n",
        );
        put(
            root,
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        fs::create_dir_all(root.join("sys/devices/system/cpu/cpu0")).unwrap();
        put(
            root,
            "/proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max locked memory         8388608              8388608              bytes     \n",
        );
        put(
            root,
            "/proc/self/status",
            "Name:\tfjordctl\nUid:\t0\t0\t0\t0\n",
        );
    }

    pub(crate) fn test_profile() -> Profile {
        Profile::parse(TEST_PROFILE, "test").unwrap()
    }

    fn find<'a>(rows: &'a [Row], setting: &str) -> &'a Row {
        rows.iter()
            .find(|row| row.setting == setting)
            .unwrap_or_else(|| panic!("no row {setting} in {rows:#?}"))
    }

    #[test]
    fn a_fake_host_is_reported_setting_by_setting() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        let rows = check(
            &test_profile(),
            &SystemRoot::at(dir.path()),
            LimitsOf::ThisProcess,
        );

        let swappiness = find(&rows, "vm.swappiness");
        assert_eq!(
            (swappiness.status, swappiness.actual.as_deref()),
            (Status::Diff, Some("60"))
        );
        let rmem = find(&rows, "net.ipv4.tcp_rmem");
        assert_eq!(rmem.status, Status::Ok);
        assert_eq!(rmem.actual.as_deref(), Some("4096 131072 33554432"));
        assert_eq!(find(&rows, "net.core.somaxconn").status, Status::Ok);
        let absent = find(&rows, "fs.not_in_this_kernel");
        assert_eq!(
            (absent.status, absent.actual.as_deref()),
            (Status::Missing, None)
        );

        // The two NVMe devices disagree, so each gets its own row; vda is not checked.
        let good = find(&rows, "/sys/block/nvme0n1/queue/scheduler");
        assert_eq!(
            (good.status, good.actual.as_deref()),
            (Status::Ok, Some("none"))
        );
        let bad = find(&rows, "/sys/block/nvme1n1/queue/scheduler");
        assert_eq!(
            (bad.status, bad.actual.as_deref()),
            (Status::Diff, Some("mq-deadline"))
        );
        assert!(!rows.iter().any(|row| row.setting.contains("vda")));

        assert_eq!(
            find(&rows, "/sys/kernel/mm/transparent_hugepage/enabled").status,
            Status::Ok
        );
        let governor = find(
            &rows,
            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
        );
        assert_eq!(
            governor.status,
            Status::Missing,
            "no cpufreq driver is not a difference"
        );
        let memlock = find(&rows, "RLIMIT_MEMLOCK (soft, this process)");
        assert_eq!(
            (memlock.status, memlock.actual.as_deref()),
            (Status::Diff, Some("8388608"))
        );

        let summary = Summary::of(&rows);
        assert_eq!(
            summary,
            Summary {
                ok: 4,
                diff: 3,
                missing: 2
            }
        );
        assert!(!summary.passed(false));
    }

    #[test]
    fn agreeing_files_collapse_into_one_row_and_missing_counts_only_when_strict() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_host(root);
        put(root, "/proc/sys/vm/swappiness", "1\n");
        put(
            root,
            "/sys/block/nvme1n1/queue/scheduler",
            "[none] mq-deadline\n",
        );
        put(
            root,
            "/proc/self/limits",
            "Max locked memory unlimited unlimited bytes\n",
        );
        let rows = check(
            &test_profile(),
            &SystemRoot::at(root),
            LimitsOf::ThisProcess,
        );
        let scheduler = find(&rows, "/sys/block/nvme*/queue/scheduler (2 files)");
        assert_eq!(scheduler.status, Status::Ok);
        assert_eq!(
            scheduler.target,
            Target::Files {
                paths: vec![
                    "/sys/block/nvme0n1/queue/scheduler".into(),
                    "/sys/block/nvme1n1/queue/scheduler".into()
                ]
            }
        );
        let summary = Summary::of(&rows);
        assert_eq!(summary.diff, 0);
        assert!(summary.passed(false));
        assert!(!summary.passed(true), "two settings are missing");
    }

    #[test]
    fn limits_of_another_process_are_read_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        put(
            dir.path(),
            "/proc/4242/limits",
            "Max locked memory unlimited unlimited bytes\n",
        );
        let rows = check(
            &test_profile(),
            &SystemRoot::at(dir.path()),
            LimitsOf::Process(4242),
        );
        let memlock = find(&rows, "RLIMIT_MEMLOCK (soft, pid 4242)");
        assert_eq!(memlock.status, Status::Ok);
        let rows = check(
            &test_profile(),
            &SystemRoot::at(dir.path()),
            LimitsOf::Process(7),
        );
        assert_eq!(
            find(&rows, "RLIMIT_MEMLOCK (soft, pid 7)").status,
            Status::Missing
        );
    }
}
