//! Cross-thread wake-ups of sleeping executors, the protocol fjord's
//! vendored glommio changed (its FJORD-PATCHES.md): an executor about to
//! sleep and a thread waking it each issue a fence, where 0.9.0 made the
//! sleeper interrupt every CPU with `membarrier(2)`. A lost wake-up leaves
//! the executor asleep with a message waiting, so these tests bounce many
//! messages between threads that sleep between them, and fail if the
//! bouncing stalls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use event_listener::{Event, Listener};
use glommio::channels::shared_channel;
use glommio::LocalExecutorBuilder;

/// Round trips per test: each one puts a receiver to sleep at least once.
const ROUND_TRIPS: u64 = 20_000;

/// Far beyond what the round trips take (well under a second here), so
/// only a stall fails the test.
const STALL: Duration = Duration::from_secs(60);

#[test]
fn messages_between_executors_always_wake_the_sleeping_one() {
    let (to_echo, echo_inbox) = shared_channel::new_bounded::<u64>(1);
    let (to_pinger, pinger_inbox) = shared_channel::new_bounded::<u64>(1);
    let (finished, done) = mpsc::channel();
    let echo = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let inbox = echo_inbox.connect().await;
            let reply = to_pinger.connect().await;
            while let Some(message) = inbox.recv().await {
                reply.send(message).await.expect("the pinger listens");
            }
        })
        .expect("the echo executor");
    let pinger = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let outbox = to_echo.connect().await;
            let inbox = pinger_inbox.connect().await;
            for message in 0..ROUND_TRIPS {
                outbox.send(message).await.expect("the echo listens");
                assert_eq!(inbox.recv().await, Some(message));
            }
            finished.send(()).expect("the test waits");
        })
        .expect("the pinger executor");
    done.recv_timeout(STALL)
        .expect("the round trips stalled: an executor slept through a message");
    pinger.join().expect("the pinger thread");
    echo.join().expect("the echo thread");
}

#[test]
fn wakers_woken_from_another_thread_always_wake_the_sleeping_executor() {
    let rung = Arc::new((Event::new(), AtomicU64::new(0)));
    let answered = Arc::new((Event::new(), AtomicU64::new(0)));
    let (finished, done) = mpsc::channel();
    let executor = {
        let (rung, answered) = (rung.clone(), answered.clone());
        LocalExecutorBuilder::default()
            .spawn(move || async move {
                for ring in 1..=ROUND_TRIPS {
                    let (bell, count) = &*rung;
                    while count.load(Ordering::Acquire) < ring {
                        let listener = bell.listen();
                        if count.load(Ordering::Acquire) < ring {
                            listener.await;
                        }
                    }
                    answered.1.store(ring, Ordering::Release);
                    answered.0.notify(1);
                }
                finished.send(()).expect("the test waits");
            })
            .expect("the executor")
    };
    let ringer = thread::spawn(move || {
        for ring in 1..=ROUND_TRIPS {
            rung.1.store(ring, Ordering::Release);
            rung.0.notify(1);
            let (reply, count) = &*answered;
            while count.load(Ordering::Acquire) < ring {
                let listener = reply.listen();
                if count.load(Ordering::Acquire) < ring {
                    listener.wait();
                }
            }
        }
    });
    done.recv_timeout(STALL)
        .expect("the round trips stalled: the executor slept through a wake-up");
    ringer.join().expect("the ringing thread");
    executor.join().expect("the executor thread");
}
