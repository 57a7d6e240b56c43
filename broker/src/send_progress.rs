//! Whether a client is taking what its connection sends.
//!
//! Kafka closes a connection without network activity for
//! `connections.max.idle.ms`; a client that stops reading a response is
//! such a connection, and the response's memory must not be held for it.
//! Whether a send call succeeds is no measure of that: a socket whose
//! client reads nothing still takes a few bytes now and then (the kernel
//! compacts its queued buffers while it probes the closed window, and a
//! send needs only a little room, where a writability wakeup needs a third
//! of the buffer), so a response timed per send went on at a trickle for
//! as long as the client stayed silent, and in full once it read again.
//!
//! What counts here is what the client acknowledged: everything sent minus
//! what the socket still holds unacknowledged (`SIOCOUTQ`). A response
//! stalls when data is outstanding and that count has not grown for the
//! stall timeout.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How often a blocked send looks at what the client acknowledged.
const STALL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// One connection's sends and what its client has acknowledged of them.
pub(crate) struct SendProgress {
    socket: RawFd,
    stall_timeout: Duration,
    /// Bytes handed to the socket since the connection opened.
    sent: Cell<u64>,
    /// Bytes the client had acknowledged at the last look.
    acknowledged: Cell<u64>,
    /// When the client last acknowledged anything, or had nothing
    /// outstanding.
    last_progress: Cell<Instant>,
}

impl SendProgress {
    /// The progress of sends on `socket`, stalled once its client takes
    /// nothing for `stall_timeout`.
    pub(crate) fn new(socket: RawFd, stall_timeout: Duration) -> Self {
        Self {
            socket,
            stall_timeout,
            sent: Cell::new(0),
            acknowledged: Cell::new(0),
            last_progress: Cell::new(Instant::now()),
        }
    }

    /// The connection's socket.
    pub(crate) fn socket(&self) -> RawFd {
        self.socket
    }

    /// Counts `bytes` more handed to the socket.
    pub(crate) fn sent(&self, bytes: u64) {
        self.sent.set(self.sent.get() + bytes);
    }

    /// Whether the client has taken nothing of what is outstanding for the
    /// stall timeout. A socket whose queue cannot be read counts as
    /// progressing: the send itself reports a broken connection.
    pub(crate) fn is_stalled(&self) -> bool {
        let now = Instant::now();
        let Some(unacknowledged) = unacknowledged_bytes(self.socket) else {
            self.last_progress.set(now);
            return false;
        };
        let acknowledged = self.sent.get().saturating_sub(unacknowledged);
        if unacknowledged == 0 || acknowledged > self.acknowledged.get() {
            self.acknowledged.set(acknowledged);
            self.last_progress.set(now);
            return false;
        }
        now.duration_since(self.last_progress.get()) >= self.stall_timeout
    }

    /// Resolves with [`std::io::ErrorKind::TimedOut`] once the client
    /// stalls; race a send against it.
    pub(crate) async fn stalled(&self) -> std::io::Error {
        while !self.is_stalled() {
            glommio::timer::sleep(STALL_CHECK_INTERVAL.min(self.stall_timeout)).await;
        }
        std::io::ErrorKind::TimedOut.into()
    }
}

/// Bytes the socket holds that its peer has not acknowledged (sent or
/// not), or `None` if the kernel will not say.
fn unacknowledged_bytes(socket: RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `socket` is open for as long as its connection's writer runs,
    // and SIOCOUTQ writes one int.
    let result = unsafe { libc::ioctl(socket, libc::TIOCOUTQ, &raw mut queued) };
    (result == 0).then(|| u64::try_from(queued).unwrap_or(0))
}
