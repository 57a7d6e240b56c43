//! Process limits the engine depends on, raised where the process may:
//! `RLIMIT_NOFILE` (each open partition holds its active segment's file
//! descriptor: a broker of 10,000 partitions needs more than the 1,024 soft
//! limit many distributions start services with, up to a hard limit that is
//! often far higher; the JVM raises its soft limit to the hard one at start
//! for the same reason) and `RLIMIT_MEMLOCK` (glommio registers each
//! shard's `io_memory` with `io_uring`).

use std::io;

/// Raises `RLIMIT_MEMLOCK` to unlimited (glommio registers each shard's
/// `io_memory` with `io_uring`, which counts against it; the default here is
/// often 8 MiB for the whole process). Running as root, or with
/// `CAP_IPC_LOCK`, makes this succeed; otherwise the old limit stays and is
/// returned as an error for the caller to report.
///
/// # Errors
/// The `setrlimit` error.
pub fn raise_memlock_limit() -> io::Result<()> {
    set_limit(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY)
}

/// Raises `RLIMIT_NOFILE` to at least `wanted` (each open partition holds
/// its active segment's file descriptor). Tries the soft and hard limit
/// together (needs `CAP_SYS_RESOURCE`), then the soft limit up to the hard
/// one. Returns the soft limit in force afterwards.
///
/// # Errors
/// The `getrlimit` error.
pub fn raise_open_files_limit(wanted: u64) -> io::Result<u64> {
    let current = get_limit(libc::RLIMIT_NOFILE)?;
    if current.rlim_cur >= wanted {
        return Ok(current.rlim_cur);
    }
    if set_limit(libc::RLIMIT_NOFILE, wanted).is_ok() {
        return Ok(wanted);
    }
    let soft = wanted.min(current.rlim_max);
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: current.rlim_max,
    };
    // SAFETY: `limit` is a valid, initialised rlimit for the call's duration.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } == 0 {
        Ok(soft)
    } else {
        Ok(current.rlim_cur)
    }
}

fn get_limit(resource: libc::__rlimit_resource_t) -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(resource, &raw mut limit) } == 0 {
        Ok(limit)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid, initialised rlimit for the call's duration.
    if unsafe { libc::setrlimit(resource, &raw const limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
