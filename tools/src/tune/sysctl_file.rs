//! `--write-sysctl-file`: a sysctl.d(5) file holding a profile's sysctls.

use std::fmt::Write as _;
use std::path::Path;

use crate::tune::profile::Profile;
use crate::Error;

/// Renders the profile's sysctls as a sysctl.d file: each `key = value` line
/// preceded by a comment with the comparison and the reason. The value is the
/// profile's own (the minimum for at-least, the maximum for at-most).
#[must_use]
pub fn render(profile: &Profile) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# fjord tuning profile `{}`", profile.name);
    for line in profile.description.lines() {
        let _ = writeln!(text, "# {}", line.trim());
    }
    let _ = writeln!(
        text,
        "# Written by `fjordctl tune --write-sysctl-file`; load with `sysctl --system`\n\
         # (or `sysctl -p FILE`), check with `fjordctl tune --check --profile {}`.",
        profile.name
    );
    for sysctl in &profile.sysctls {
        let _ = writeln!(text);
        let _ = writeln!(text, "# {}", sysctl.reason);
        let _ = writeln!(text, "# profile expects: {}", sysctl.expected);
        let _ = writeln!(
            text,
            "{} = {}",
            sysctl.key,
            sysctl.expected.value_for_file()
        );
    }
    text
}

/// Writes [`render`]'s text to `path`, replacing an existing file. Nothing is
/// applied to the running kernel.
///
/// # Errors
/// [`Error::WriteFile`] when the file cannot be written.
pub fn write(profile: &Profile, path: &Path) -> Result<(), Error> {
    std::fs::write(path, render(profile)).map_err(|source| Error::WriteFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::check::tests::test_profile;

    #[test]
    fn every_sysctl_appears_once_after_its_reason() {
        let profile = test_profile();
        let text = render(&profile);
        let settings: Vec<(&str, &str)> = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split_once(" = ").expect("key = value"))
            .collect();
        let keys: Vec<&str> = settings.iter().map(|(key, _)| *key).collect();
        let expected: Vec<&str> = profile.sysctls.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, expected);
        assert!(settings.contains(&("net.ipv4.tcp_rmem", "4096 87380 16777216")));
        assert!(text.contains("# keep memory in RAM\n# profile expects: <= 1\nvm.swappiness = 1\n"));
    }

    #[test]
    fn an_unwritable_path_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir/99-fjord.conf");
        let error = write(&test_profile(), &path).unwrap_err().to_string();
        assert!(error.starts_with("cannot write "), "{error}");
        assert!(!error.contains('\n'));
    }
}
