//! Where the shards meet once each has opened its partitions, so that the
//! engine runs whole or not at all.
//!
//! A shard that cannot start (a partition that does not open) must not
//! leave the others serving an engine with some partitions unanswered,
//! nor waiting forever for it. Every shard arrives at the gate with
//! whether it started; the gate opens when all have arrived and tells each
//! whether all of them started. Shards that did not all start skip their
//! main, finish and shut down together, and [`super::run`] returns the
//! failed shard's error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::Event;

/// Shared by every shard thread of one [`super::run`].
#[derive(Debug)]
pub(super) struct StartGate {
    /// Shards that have not arrived yet.
    waiting: AtomicUsize,
    /// Whether any shard arrived without having started.
    failed: AtomicBool,
    /// Notified when the last shard arrives.
    all_arrived: Event,
}

impl StartGate {
    /// A gate for `shards` shards.
    pub(super) fn new(shards: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(shards),
            failed: AtomicBool::new(false),
            all_arrived: Event::new(),
        }
    }

    /// Records whether the calling shard `started`, waits for every other
    /// shard to arrive, and returns whether they all started.
    ///
    /// # Panics
    /// If more shards arrive than the gate was made for.
    pub(super) async fn arrive(&self, started: bool) -> bool {
        if !started {
            self.failed.store(true, Ordering::Release);
        }
        let before = self.waiting.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "more shards arrived than started");
        if before == 1 {
            self.all_arrived.notify(usize::MAX);
        }
        loop {
            let listener = self.all_arrived.listen();
            if self.waiting.load(Ordering::Acquire) == 0 {
                break;
            }
            listener.await;
        }
        !self.failed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_lite::future::block_on;

    use super::StartGate;

    #[test]
    fn the_gate_opens_when_all_arrive_and_says_whether_all_started() {
        for failing in [None, Some(0), Some(2)] {
            let gate = Arc::new(StartGate::new(3));
            let threads: Vec<_> = (0..3)
                .map(|shard| {
                    let gate = gate.clone();
                    std::thread::spawn(move || block_on(gate.arrive(failing != Some(shard))))
                })
                .collect();
            for thread in threads {
                let all_started = thread.join().expect("no panic");
                assert_eq!(all_started, failing.is_none(), "failing shard {failing:?}");
            }
        }
    }
}
