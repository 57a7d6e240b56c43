//! The `fjordctl tune` command line and what each mode does.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{ArgGroup, Args};

use crate::tune::check::{check, LimitsOf, Summary};
use crate::tune::profile::{Profile, DEFAULT_PROFILE, EMBEDDED};
use crate::tune::report::{self, JsonReport};
use crate::tune::system::SystemRoot;
use crate::tune::{apply, sysctl_file};
use crate::Error;

/// Check, apply or export the kernel, disk, CPU and limit settings of a tuning
/// profile for fjord on NVMe hosts (see tuning/README.md for the reasons).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("mode")
        .required(true)
        .args(["check", "apply", "write_sysctl_file", "list_profiles"]),
))]
#[allow(clippy::struct_excessive_bools)] // independent command-line flags, as clap sees them
pub struct TuneArgs {
    /// Compare this host with the profile and print a table. Exits 0 when
    /// every applicable setting matches, 1 when one differs.
    #[arg(long)]
    pub check: bool,

    /// As root, write the differing sysctls (/proc/sys) and sysfs settings,
    /// then check again. Changes last until reboot; resource limits are only
    /// reported (set them in the systemd unit).
    #[arg(long)]
    pub apply: bool,

    /// Write the profile's sysctls, with their reasons as comments, to PATH
    /// as a sysctl.d file (e.g. /etc/sysctl.d/90-fjord.conf). Applies nothing.
    #[arg(long, value_name = "PATH")]
    pub write_sysctl_file: Option<PathBuf>,

    /// List the profiles embedded in this binary.
    #[arg(long)]
    pub list_profiles: bool,

    /// Embedded profile to use.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROFILE)]
    pub profile: String,

    /// Use the profile in this TOML file instead of an embedded one.
    #[arg(long, value_name = "PATH", conflicts_with = "profile")]
    pub profile_file: Option<PathBuf>,

    /// Count settings that are missing on this host (no NVMe device, no
    /// cpufreq driver, unknown sysctl) as differing.
    #[arg(long, conflicts_with_all = ["write_sysctl_file", "list_profiles"])]
    pub strict: bool,

    /// Print the result as one JSON document instead of a table.
    #[arg(long, conflicts_with_all = ["write_sysctl_file", "list_profiles"])]
    pub json: bool,

    /// Check the resource limits of this running process (the broker)
    /// instead of fjordctl's own.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Find /proc and /sys under DIR instead of / (a host filesystem mounted
    /// in a container, or a test tree).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Runs `fjordctl tune`. Returns whether the host passed (always true for the
/// modes that check nothing).
///
/// # Errors
/// An unknown or invalid profile, `--apply` without root, an unwritable
/// `--write-sysctl-file` path.
pub fn run(args: &TuneArgs) -> Result<bool, Error> {
    let mut stdout = std::io::stdout().lock();
    if args.list_profiles {
        for (name, _) in EMBEDDED {
            let profile = Profile::embedded(name)?;
            let _ = writeln!(stdout, "{name:<14}  {}", profile.description);
        }
        return Ok(true);
    }
    let profile = match &args.profile_file {
        Some(path) => Profile::from_file(path)?,
        None => Profile::embedded(&args.profile)?,
    };
    if let Some(path) = &args.write_sysctl_file {
        sysctl_file::write(&profile, path)?;
        let _ = writeln!(
            stdout,
            "wrote {} sysctls of profile `{}` to {}",
            profile.sysctls.len(),
            profile.name,
            path.display()
        );
        return Ok(true);
    }
    let system = SystemRoot::at(&args.root);
    let limits_of = args.pid.map_or(LimitsOf::ThisProcess, LimitsOf::Process);
    let mut actions = None;
    if args.apply {
        apply::require_root(&system)?;
        let before = check(&profile, &system, limits_of);
        actions = Some(apply::apply(&before, &system));
    }
    let rows = check(&profile, &system, limits_of);
    let passed = Summary::of(&rows).passed(args.strict);
    if args.json {
        let document = JsonReport::new(&profile, &rows, args.strict, actions.as_deref());
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&document)?);
    } else {
        if let Some(actions) = &actions {
            let _ = writeln!(stdout, "{}", report::actions(actions));
        }
        let _ = write!(stdout, "{}", report::table(&profile, &rows, args.strict));
    }
    Ok(passed)
}
