// fjord: the two sides of the barrier between an executor going to sleep and
// the threads that wake it (vendor/glommio/FJORD-PATCHES.md).
//
// Upstream (imported from membarrier-rs) made the sleeping side's barrier a
// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` system call, which sends an
// inter-processor interrupt to every CPU running a thread of the process, on
// every sleep, so that the waking side needed only a compiler fence (and
// upstream never called even that). A busy broker sleeps thousands of times a
// second per shard; on a virtual machine every one of those interrupts is a
// VM exit on each other CPU. Both sides now issue a sequentially consistent
// fence instead: the sleeper between announcing its sleep and looking at its
// queues once more, the waker between queueing its message and reading
// whether the sleeper must be woken. By the fence rules of the C++/Rust
// memory model, at least one of them then sees the other's write: either the
// sleeper finds the message, or the waker sees it must write the eventfd.

use core::sync::atomic;

/// The waking side's fence: after publishing a message or waker, before
/// reading whether its receiver is going to sleep.
#[inline]
pub(crate) fn light() {
    atomic::fence(atomic::Ordering::SeqCst);
}

/// The sleeping side's fence: after announcing it will sleep, before looking
/// at its remote queues one last time.
#[inline]
pub(crate) fn heavy() {
    atomic::fence(atomic::Ordering::SeqCst);
}
