//! `--apply`: write the profile's values into `/proc/sys` and `/sys`.
//!
//! Only rows that differ are touched, and a numeric field already in range
//! keeps its value (see [`Expected::value_to_write`]). Changes last until the
//! next reboot; `--write-sysctl-file` and the guides in `tuning/` make them
//! permanent.

use serde::Serialize;

use crate::tune::check::{Row, Status, Target};
use crate::tune::profile::Expected;
use crate::tune::system::SystemRoot;
use crate::Error;

/// What `--apply` did to one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// The sysctl key or file written, or the limit that was not.
    pub setting: String,
    /// The value written or that would have been written.
    pub value: String,
    pub outcome: Outcome,
}

/// How writing one setting went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum Outcome {
    Applied,
    Failed(String),
    /// Not something fjordctl can change; the detail says what to do instead.
    Skipped(String),
}

/// Refuses unless the effective uid is 0: writes to `/proc/sys` and `/sys`
/// need root, and failing half-way through would leave a half-tuned host.
///
/// # Errors
/// [`Error::NotRoot`], or [`Error::Uid`] when the uid cannot be read.
pub fn require_root(system: &SystemRoot) -> Result<(), Error> {
    match system.effective_uid()? {
        0 => Ok(()),
        uid => Err(Error::NotRoot { uid }),
    }
}

/// Writes the expected value of every [`Status::Diff`] row. Never stops at a
/// failed write: each row reports its own outcome, and the caller re-checks
/// to show the resulting state.
#[must_use]
pub fn apply(rows: &[Row], system: &SystemRoot) -> Vec<Action> {
    let mut actions = Vec::new();
    for row in rows.iter().filter(|row| row.status == Status::Diff) {
        let value = row.expected.value_to_write(row.actual.as_deref());
        match &row.target {
            Target::Sysctl { key, path } => {
                actions.push(write(system, key, path, value));
            }
            Target::Files { paths } => {
                for path in paths {
                    actions.push(write(system, path, path, value.clone()));
                }
            }
            Target::Rlimit { resource } => actions.push(Action {
                setting: row.setting.clone(),
                value: Expected::value_for_file(&row.expected),
                outcome: Outcome::Skipped(format!(
                    "a process's limits are set where it is started: {}= in the broker's systemd unit (see tuning/systemd/fjord.service)",
                    resource.systemd_directive()
                )),
            }),
        }
    }
    actions
}

fn write(system: &SystemRoot, setting: &str, path: &str, value: String) -> Action {
    let outcome = match system.write_setting(path, &value) {
        Ok(()) => Outcome::Applied,
        Err(error) => Outcome::Failed(error.to_string()),
    };
    Action {
        setting: setting.to_owned(),
        value,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::check::tests::{fake_host, put, test_profile};
    use crate::tune::check::{check, LimitsOf, Summary};

    #[test]
    fn apply_fixes_every_writable_difference_and_explains_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        let system = SystemRoot::at(dir.path());
        let profile = test_profile();
        require_root(&system).expect("the fake host runs as root");

        let actions = apply(&check(&profile, &system, LimitsOf::ThisProcess), &system);
        let outcome = |setting: &str| {
            actions
                .iter()
                .find(|a| a.setting == setting)
                .unwrap_or_else(|| panic!("no action {setting} in {actions:#?}"))
        };
        assert_eq!(outcome("vm.swappiness").value, "1");
        assert_eq!(outcome("vm.swappiness").outcome, Outcome::Applied);
        assert_eq!(
            outcome("/sys/block/nvme1n1/queue/scheduler").outcome,
            Outcome::Applied
        );
        assert!(matches!(
            outcome("RLIMIT_MEMLOCK (soft, this process)").outcome,
            Outcome::Skipped(ref why) if why.contains("LimitMEMLOCK=")
        ));
        assert_eq!(
            actions.len(),
            3,
            "rows that are OK or missing are left alone"
        );
        assert_eq!(system.read_setting("/proc/sys/vm/swappiness").unwrap(), "1");

        // The fake scheduler file does not select like the kernel's, so make
        // it look the way the kernel would after the write.
        put(
            dir.path(),
            "/sys/block/nvme1n1/queue/scheduler",
            "[none] mq-deadline\n",
        );
        let after = Summary::of(&check(&profile, &system, LimitsOf::ThisProcess));
        assert_eq!(after.diff, 1, "only the memlock limit is left");
    }

    #[test]
    fn apply_is_refused_to_a_non_root_user() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        put(
            dir.path(),
            "/proc/self/status",
            "Uid:\t1000\t1000\t1000\t1000\n",
        );
        let error = require_root(&SystemRoot::at(dir.path())).unwrap_err();
        assert!(matches!(error, Error::NotRoot { uid: 1000 }));
        assert!(error.to_string().contains("must run as root"));
    }

    #[test]
    fn a_write_the_kernel_refuses_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        let system = SystemRoot::at(dir.path());
        let mut rows = check(&test_profile(), &system, LimitsOf::ThisProcess);
        // A sysctl file that vanished between check and apply.
        std::fs::remove_file(dir.path().join("proc/sys/vm/swappiness")).unwrap();
        rows.retain(|row| row.setting == "vm.swappiness");
        let actions = apply(&rows, &system);
        assert!(matches!(actions[0].outcome, Outcome::Failed(_)));
    }
}
