//! The two scheduling changes carried in `vendor/glommio` (its
//! FJORD-PATCHES.md) that keep an append's tasks from waiting behind a busy
//! consumer read on the same shard:
//! - a task queue woken by I/O or a timer runs before the busy queue's next
//!   turn (glommio 0.9.0 queued it behind that turn);
//! - a file write is submitted when it is issued and its completion ends
//!   the running task queue's turn (0.9.0 submitted it, and noticed it done,
//!   only once the preempt timer ended the turn).

use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;

use glommio::io::OpenOptions;
use glommio::{executor, Latency, LocalExecutorBuilder, Shares};

/// One test at a time: each keeps a CPU busy with its spinning queue, and
/// on a two-core machine two spinners (plus whatever else runs) can starve
/// the kernel's completion of the other test's write, which is not what
/// these tests measure.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `test` on a fresh executor with `preempt_timer`, on its own thread.
fn on_executor(preempt_timer: Duration, test: impl AsyncFnOnce() + Send + 'static) {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    LocalExecutorBuilder::default()
        .preempt_timer(preempt_timer)
        .spawn(move || async move { test().await })
        .expect("an executor")
        .join()
        .expect("the executor thread");
}

/// Spins until the executor wants the current task queue to give up the
/// CPU, then yields; counts its turns and records when each one began.
async fn spin_in_turns(stop: Rc<Cell<bool>>, turn_starts: Rc<RefCell<Vec<Instant>>>) {
    while !stop.get() {
        turn_starts.borrow_mut().push(Instant::now());
        while !executor().need_preempt() {
            std::hint::spin_loop();
        }
        glommio::yield_if_needed().await;
    }
}

/// Timer wakes of the test with the busy queue.
const WAKES: usize = 20;

#[test]
fn a_woken_queue_runs_before_the_next_turn_of_a_busy_one() {
    on_executor(Duration::from_millis(1), async || {
        let busy_queue =
            executor().create_task_queue(Shares::Static(100), Latency::NotImportant, "busy");
        let stop = Rc::new(Cell::new(false));
        let turn_starts = Rc::new(RefCell::new(Vec::new()));
        let busy =
            glommio::spawn_local_into(spin_in_turns(stop.clone(), turn_starts.clone()), busy_queue)
                .expect("the queue exists");
        let mut turns_before_wake = 0;
        for _ in 0..WAKES {
            let wait = Duration::from_millis(3);
            let due = Instant::now() + wait;
            glommio::timer::sleep(wait).await;
            turns_before_wake += turn_starts
                .borrow()
                .iter()
                .filter(|start| **start > due)
                .count();
        }
        stop.set(true);
        busy.await;
        assert!(turn_starts.borrow().len() > WAKES, "the busy queue ran");
        // As released, every wake cost one whole turn of the busy queue
        // (about WAKES here); a turn can start between the timer's expiry
        // and the poll that sees it, rarely.
        assert!(
            turns_before_wake <= 3,
            "{turns_before_wake} busy turns began after a timer expired and before its task ran"
        );
    });
}

#[test]
fn a_file_write_completes_without_waiting_for_the_preempt_timer() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("write");
    // A whole block in the file: glommio's probe of whether the device
    // takes polled I/O reads the first block of the first file opened, and
    // answers wrongly on an empty one (see `settle_poll_ring_probe`).
    std::fs::write(&path, [0u8; 4096]).expect("the file is written");
    // A turn lasts this long unless something preempts it.
    let preempt_timer = Duration::from_secs(2);
    on_executor(preempt_timer, async move || {
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .dma_open(&path)
            .await
            .expect("the file opens");
        let busy_queue =
            executor().create_task_queue(Shares::Static(100), Latency::NotImportant, "busy");
        // The busy task issues the write itself and then spins: only the
        // write's completion can end its turn early. (Issued from another
        // task, the write could complete before the busy queue's first
        // turn, and that turn would then rightly run to its end.)
        let turn_lasted = glommio::spawn_local_into(
            async move {
                let mut buffer = file.alloc_dma_buffer(4096);
                buffer.as_bytes_mut().fill(7);
                let turn_lasted = {
                    let issued = Instant::now();
                    let mut write = pin!(file.write_at(buffer, 0));
                    if let Some(written) = poll_once(&mut write).await {
                        panic!("a direct write is not done when issued: {written:?}");
                    }
                    while !executor().need_preempt() {
                        std::hint::spin_loop();
                    }
                    let turn_lasted = issued.elapsed();
                    write.await.expect("the write");
                    turn_lasted
                };
                file.close().await.expect("the file closes");
                turn_lasted
            },
            busy_queue,
        )
        .expect("the queue exists")
        .await;
        assert!(
            turn_lasted < preempt_timer / 2,
            "the busy turn that issued a write lasted {turn_lasted:?}: its completion did not end it"
        );
    });
}
