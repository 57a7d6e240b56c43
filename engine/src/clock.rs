//! Time as the engine sees it.
//!
//! Every reading of the time below the broker's edge goes through a
//! [`Clock`]: record timestamps (`LogAppendTime`, the timestamp bounds),
//! `segment.ms` rolls, `flush.ms`, retention, the cleaner's horizons, the
//! background loops' intervals and a fetch's wait. In production that is
//! [`SystemClock`]; in tests a [`SimulatedClock`] only moves when the test
//! moves it, so a whole shard runs the same way from the same seed, and a
//! test can jump a week ahead to make retention run without waiting.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::types::TimestampMs;

/// A sleep on a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()>>>;

/// A source of wall-clock time and of timers, for one shard.
pub trait Clock {
    /// The wall clock now, in milliseconds since the Unix epoch.
    fn now(&self) -> TimestampMs;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The machine's wall clock and glommio's timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> TimestampMs {
        TimestampMs::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(async move {
            glommio::timer::sleep(duration).await;
        })
    }
}

/// A clock that moves only when told to ([`SimulatedClock::advance`]).
/// Sleepers wake in deadline order, those with equal deadlines in the order
/// they went to sleep. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct SimulatedClock {
    inner: Rc<RefCell<SimulatedTime>>,
}

#[derive(Debug)]
struct SimulatedTime {
    now_ms: i64,
    /// Sleepers by (deadline, arrival); the waker of their last poll.
    sleepers: BTreeMap<(i64, u64), Option<Waker>>,
    next_arrival: u64,
}

impl SimulatedClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: TimestampMs) -> Self {
        Self {
            inner: Rc::new(RefCell::new(SimulatedTime {
                now_ms: start.0,
                sleepers: BTreeMap::new(),
                next_arrival: 0,
            })),
        }
    }

    /// Moves the time forward by `duration` and wakes every sleeper whose
    /// deadline has come.
    pub fn advance(&self, duration: Duration) {
        let wakers: Vec<Waker> = {
            let mut time = self.inner.borrow_mut();
            time.now_ms = time.now_ms.saturating_add(whole_millis(duration));
            let now = time.now_ms;
            time.sleepers
                .range_mut(..=(now, u64::MAX))
                .filter_map(|(_, waker)| waker.take())
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The earliest deadline of a sleeper, if any sleeps.
    #[must_use]
    pub fn next_deadline(&self) -> Option<TimestampMs> {
        let time = self.inner.borrow();
        time.sleepers
            .keys()
            .next()
            .map(|&(deadline, _)| TimestampMs(deadline))
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> TimestampMs {
        TimestampMs(self.inner.borrow().now_ms)
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let key = {
            let mut time = self.inner.borrow_mut();
            let deadline = time.now_ms.saturating_add(whole_millis(duration));
            let arrival = time.next_arrival;
            time.next_arrival += 1;
            time.sleepers.insert((deadline, arrival), None);
            (deadline, arrival)
        };
        Box::pin(SimulatedSleep {
            clock: self.inner.clone(),
            key,
        })
    }
}

/// Milliseconds in `duration`, rounded up: a sleep never ends early.
fn whole_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

struct SimulatedSleep {
    clock: Rc<RefCell<SimulatedTime>>,
    key: (i64, u64),
}

impl Future for SimulatedSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let mut time = self.clock.borrow_mut();
        if time.now_ms >= self.key.0 {
            time.sleepers.remove(&self.key);
            return Poll::Ready(());
        }
        time.sleepers
            .insert(self.key, Some(context.waker().clone()));
        Poll::Pending
    }
}

impl Drop for SimulatedSleep {
    fn drop(&mut self) {
        self.clock.borrow_mut().sleepers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn a_simulated_sleep_ends_only_when_the_clock_reaches_its_deadline() {
        let clock = SimulatedClock::new(TimestampMs(1_000));
        let mut sleep = clock.sleep(Duration::from_micros(1_500));
        assert_eq!(clock.next_deadline(), Some(TimestampMs(1_002)));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_some());
        assert_eq!(clock.now(), TimestampMs(1_002));
        assert_eq!(clock.next_deadline(), None);
    }

    #[test]
    fn a_dropped_sleep_leaves_no_deadline_behind() {
        let clock = SimulatedClock::new(TimestampMs(0));
        drop(clock.sleep(Duration::from_secs(5)));
        assert_eq!(clock.next_deadline(), None);
    }
}
