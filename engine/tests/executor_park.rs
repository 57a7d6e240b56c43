//! The executor never parks while it has runnable tasks (the fix carried in
//! `vendor/glommio`, see its FJORD-PATCHES.md): with a preempt timer that
//! has always expired, every pass is preempted before its first task, and
//! glommio 0.9.0 as released then parked for good.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[test]
fn runnable_tasks_survive_a_preemption_before_they_run() {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let executor = glommio::LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_nanos(1))
            .make()
            .expect("an executor");
        for run in 0..1_000 {
            assert_eq!(executor.run(async move { run }), run);
        }
        done.send(()).expect("the test waits");
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the executor stopped running tasks it had");
    worker.join().expect("the worker thread");
}
