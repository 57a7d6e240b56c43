//! The `fjord-heartbeat` thread: every `broker.heartbeat.interval.ms` this
//! broker tells the quorum leader it is alive ([`Controller::heartbeat`]),
//! and, while this node leads, fences the brokers whose sessions expired
//! ([`Controller::expire_sessions`]) and, every
//! `leader.imbalance.check.interval.seconds`, gives leaderships back to
//! preferred replicas ([`Controller::rebalance_leaders`]). It runs on a
//! thread of its own, not a
//! data shard: a heartbeat forwarded to the leader waits for a commit, and
//! a busy shard must not make its broker look dead.
//!
//! The thread holds the controller weakly and stops once the controller is
//! dropped (its stop channel disconnects).

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Controller;

/// Starts the thread for `controller`, which keeps the returned sender:
/// dropping it stops the thread within one interval.
///
/// # Errors
/// The OS refused the thread.
pub(super) fn start(controller: &Arc<Controller>, interval: Duration) -> std::io::Result<()> {
    let (stop, stopped) = mpsc::sync_channel::<()>(1);
    let weak: Weak<Controller> = Arc::downgrade(controller);
    let rebalance_interval = controller.auto_leader_rebalance.check_interval;
    let mut next_rebalance = Instant::now() + rebalance_interval;
    std::thread::Builder::new()
        .name("fjord-heartbeat".to_owned())
        .spawn(move || loop {
            match stopped.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let Some(controller) = weak.upgrade() else {
                return;
            };
            if let Err(error) = controller.heartbeat() {
                tracing::warn!(error = %error.message, "broker heartbeat failed");
            }
            if let Err(error) = controller.expire_sessions() {
                tracing::warn!(error = %error.message, "cannot fence expired brokers");
            }
            if Instant::now() >= next_rebalance {
                next_rebalance = Instant::now() + rebalance_interval;
                if let Err(error) = controller.rebalance_leaders() {
                    tracing::warn!(error = %error.message, "cannot rebalance leaderships");
                }
            }
        })?;
    keep_stop(controller, stop);
    Ok(())
}

fn keep_stop(controller: &Controller, stop: SyncSender<()>) {
    *controller
        .heartbeat_stop
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop);
}
