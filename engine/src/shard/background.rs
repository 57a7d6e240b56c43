//! Each shard's background work: retention, scheduled flushes
//! (`flush.ms`), recovery-point checkpoints and the log cleaner, in a task
//! queue with a tenth of the foreground's shares, so it yields to appends
//! and reads. Shutdown waits for a running operation to finish its step:
//! glommio's blocking thread panics if its executor is gone.

use std::rc::Rc;

use glommio::{executor, Latency, Shares};

use super::Shard;
use crate::error::Error;
use crate::storage::Storage;

/// One background operation in flight; see [`Shard::background_operation`].
struct BackgroundOperation<'a, S: Storage>(&'a Shard<S>);

impl<S: Storage> Drop for BackgroundOperation<'_, S> {
    fn drop(&mut self) {
        let shard = self.0;
        shard.background_busy.set(shard.background_busy.get() - 1);
        shard.background_done.notify(usize::MAX);
    }
}

impl<S: Storage> Shard<S> {
    pub(super) async fn enforce_retention(&self) -> usize {
        let logs: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let now = self.clock.now();
        let mut deleted = 0;
        for log in logs {
            match log.enforce_retention(now).await {
                Ok(count) => deleted += count,
                Err(error) => {
                    tracing::warn!(partition = %log.partition(), %error, "retention failed");
                }
            }
        }
        deleted
    }

    /// Cleans the shard's log that most needs it: the highest dirty ratio
    /// among those due (`min.cleanable.dirty.ratio` reached, or forced by
    /// `max.compaction.lag.ms` or a tombstone's delete horizon). Returns
    /// whether a log was cleaned.
    async fn clean_one(&self) -> bool {
        let logs: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let now = self.clock.now();
        let mut candidates = Vec::new();
        for log in logs {
            if let Some(candidate) = log.cleaning_candidate(now).await {
                candidates.push((candidate, log));
            }
        }
        let chosen = candidates.into_iter().max_by(|(a, _), (b, _)| {
            (a.forced, a.dirty_ratio)
                .partial_cmp(&(b.forced, b.dirty_ratio))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let Some((_, log)) = chosen else {
            return false;
        };
        let result = log
            .clean(now, self.config.cleaner.dedupe_buffer_bytes_per_shard)
            .await;
        match result {
            Ok(stats) => stats.segments_written > 0,
            Err(Error::ShuttingDown) => false,
            Err(error) => {
                tracing::warn!(partition = %log.partition(), %error, "cleaning failed");
                false
            }
        }
    }

    pub(super) fn start_background_work(self: Rc<Self>) {
        let queue = executor().create_task_queue(
            Shares::Static(100),
            Latency::NotImportant,
            "fjord-background",
        );
        let retention = {
            let shard = self.clone();
            async move {
                loop {
                    shard
                        .background_sleep(shard.config.retention_check_interval)
                        .await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    shard.enforce_retention().await;
                }
            }
        };
        let flusher = {
            let shard = self.clone();
            async move {
                loop {
                    shard
                        .background_sleep(shard.config.flush_check_interval)
                        .await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    let logs: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                    for log in logs {
                        if let Err(error) = log.flush_if_due().await {
                            tracing::warn!(partition = %log.partition(), %error, "scheduled flush failed");
                        }
                    }
                }
            }
        };
        let checkpointer = {
            let shard = self.clone();
            async move {
                loop {
                    shard
                        .background_sleep(shard.config.recovery_checkpoint_interval)
                        .await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    let logs: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                    for log in logs {
                        if let Err(error) = log.checkpoint_recovery_point().await {
                            tracing::warn!(partition = %log.partition(), %error, "recovery checkpoint failed");
                        }
                    }
                }
            }
        };
        let cleaner = {
            let shard = self.clone();
            async move {
                loop {
                    // Back off only when nothing was due: a busy shard
                    // cleans its logs one after the other.
                    let cleaned = {
                        let Some(_operation) = shard.background_operation() else {
                            return;
                        };
                        shard.config.cleaner.enabled && shard.clean_one().await
                    };
                    if !cleaned {
                        shard.background_sleep(shard.config.cleaner.backoff).await;
                    }
                }
            }
        };
        for task in [
            glommio::spawn_local_into(cleaner, queue),
            glommio::spawn_local_into(retention, queue),
            glommio::spawn_local_into(flusher, queue),
            glommio::spawn_local_into(checkpointer, queue),
        ] {
            match task {
                Ok(task) => {
                    // Awake until its first sleep.
                    self.background_awake.set(self.background_awake.get() + 1);
                    task.detach();
                }
                Err(error) => tracing::error!(%error, "cannot start background work"),
            }
        }
    }

    /// Sleeps on the shard's clock, not counted as awake meanwhile.
    async fn background_sleep(&self, duration: std::time::Duration) {
        self.background_awake.set(self.background_awake.get() - 1);
        self.clock.sleep(duration).await;
        self.background_awake.set(self.background_awake.get() + 1);
    }

    /// Whether every background loop is asleep on the clock: how a
    /// simulation knows the work its clock woke has run (together with no
    /// sleeper past its deadline still waiting to be polled).
    #[cfg(any(test, feature = "testkit"))]
    #[must_use]
    pub fn background_idle(&self) -> bool {
        self.background_awake.get() == 0
    }

    /// Marks a background operation in flight until the returned guard
    /// drops; `None` once shutdown has begun, when none may start.
    fn background_operation(&self) -> Option<BackgroundOperation<'_, S>> {
        if self.background_stopping.get() {
            return None;
        }
        self.background_busy.set(self.background_busy.get() + 1);
        Some(BackgroundOperation(self))
    }
}
