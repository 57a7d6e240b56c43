//! `fjordctl tune` run as a user runs it: the built binary, on this machine
//! and on fake `/proc` + `/sys` trees.
//!
//! Guards against a check that crashes or silently drops rows on a host that
//! lacks some settings (a VM with no NVMe device and no cpufreq driver), a
//! sysctl file that `sysctl -p` could not read, and `--apply` touching a host
//! when it should refuse. No test here writes to the real `/proc` or `/sys`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use fjord_tools::tune::profile::{Profile, EMBEDDED};

fn fjordctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fjordctl"))
        .args(args)
        .output()
        .expect("fjordctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8 output")
}

#[test]
fn check_on_this_machine_reports_every_sysctl_and_does_not_crash() {
    for (name, _) in EMBEDDED {
        let profile = Profile::embedded(name).unwrap();
        let output = fjordctl(&["tune", "--check", "--profile", name]);
        let code = output.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "exit {code:?}, stderr: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        for sysctl in &profile.sysctls {
            let row = text
                .lines()
                .find(|line| line.split_whitespace().next() == Some(sysctl.key.as_str()));
            let row = row.unwrap_or_else(|| panic!("no row for {} in:\n{text}", sysctl.key));
            assert!(
                ["OK", "DIFF", "MISSING"]
                    .iter()
                    .any(|status| row.ends_with(status)),
                "{row}"
            );
        }
        let verdict = if code == Some(0) { "PASS" } else { "FAIL" };
        assert!(text.trim_end().ends_with(verdict), "{text}");
    }
}

#[test]
fn json_check_is_one_document_with_a_row_per_sysctl() {
    let output = fjordctl(&["tune", "--check", "--json", "--strict"]);
    assert!(matches!(output.status.code(), Some(0 | 1)));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let profile = Profile::embedded("nvme-default").unwrap();
    let rows = json["rows"].as_array().unwrap();
    for sysctl in &profile.sysctls {
        assert!(rows.iter().any(|row| row["setting"] == sysctl.key.as_str()));
    }
    assert_eq!(json["passed"], output.status.code() == Some(0));
}

#[test]
fn write_sysctl_file_writes_every_key_in_sysctl_syntax() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in EMBEDDED {
        let path = dir.path().join(format!("90-fjord-{name}.conf"));
        let output = fjordctl(&[
            "tune",
            "--write-sysctl-file",
            path.to_str().unwrap(),
            "--profile",
            name,
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let text = fs::read_to_string(&path).unwrap();
        // sysctl.d(5): comments start with # or ;, settings are `key = value`.
        let settings: Vec<(String, String)> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
            .map(|line| {
                let (key, value) = line.split_once('=').expect("key = value");
                (key.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let profile = Profile::embedded(name).unwrap();
        assert_eq!(settings.len(), profile.sysctls.len());
        for sysctl in &profile.sysctls {
            let (_, value) = settings
                .iter()
                .find(|(key, _)| *key == sysctl.key)
                .unwrap_or_else(|| panic!("{} missing from {}", sysctl.key, path.display()));
            assert!(sysctl.expected.is_met_by(value), "{} = {value}", sysctl.key);
        }
    }
}

#[test]
fn errors_are_one_line_on_stderr_with_a_nonzero_exit() {
    let output = fjordctl(&["tune", "--check", "--profile", "no-such-profile"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with("fjordctl: error: unknown profile `no-such-profile`"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "name = \"bad\"\n").unwrap();
    let output = fjordctl(&["tune", "--check", "--profile-file", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));

    let output = fjordctl(&["tune", "--check", "--write-sysctl-file", "x"]);
    assert_eq!(output.status.code(), Some(2), "modes are exclusive");
    assert_eq!(
        fjordctl(&["tune"]).status.code(),
        Some(2),
        "a mode is required"
    );
}

#[test]
fn help_is_available_for_every_command() {
    for args in [&["--help"][..], &["tune", "--help"], &["help", "tune"]] {
        let output = fjordctl(args);
        assert_eq!(output.status.code(), Some(0));
        assert!(stdout(&output).contains("Usage: fjordctl"));
    }
    assert!(stdout(&fjordctl(&["tune", "--help"])).contains("--write-sysctl-file"));
}

fn put(root: &Path, host_path: &str, contents: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// A host with every sysctl of the default profile at an out-of-range value
/// and one NVMe device using mq-deadline.
fn untuned_fake_host(root: &Path, uid: u32) {
    for sysctl in &Profile::embedded("nvme-default").unwrap().sysctls {
        let fields = sysctl.expected.value_for_file().split_whitespace().count();
        let value = if sysctl.expected.to_string().starts_with("<=") {
            "99"
        } else {
            "0"
        };
        put(root, &sysctl.proc_path(), &vec![value; fields].join("\t"));
    }
    put(
        root,
        "/sys/block/nvme0n1/queue/scheduler",
        "none [mq-deadline] kyber\n",
    );
    put(
        root,
        "/proc/self/status",
        &format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    );
}

#[test]
fn apply_refuses_without_root_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    untuned_fake_host(dir.path(), 1000);
    let root = dir.path().to_str().unwrap();
    let output = fjordctl(&["tune", "--apply", "--root", root]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("must run as root"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("proc/sys/vm/swappiness")).unwrap(),
        "99"
    );
}

#[test]
fn apply_as_root_writes_every_differing_sysctl_and_device_setting() {
    let dir = tempfile::tempdir().unwrap();
    untuned_fake_host(dir.path(), 0);
    let root = dir.path().to_str().unwrap();
    let output = fjordctl(&["tune", "--apply", "--json", "--root", root]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let applied = json["applied"].as_array().unwrap();
    let profile = Profile::embedded("nvme-default").unwrap();
    for sysctl in &profile.sysctls {
        let written =
            fs::read_to_string(dir.path().join(sysctl.proc_path().trim_start_matches('/')))
                .unwrap();
        assert!(
            sysctl.expected.is_met_by(&written),
            "{} = {written}",
            sysctl.key
        );
        let row = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["setting"] == sysctl.key.as_str())
            .unwrap();
        assert_eq!(row["status"], "OK", "{row}");
    }
    assert!(applied
        .iter()
        .any(|a| a["setting"] == "/sys/block/nvme0n1/queue/scheduler"
            && a["outcome"]["result"] == "applied"));
    // No limits file in the fake tree: limits are missing, not differing.
    assert_eq!(output.status.code(), Some(0), "{json:#}");
}
