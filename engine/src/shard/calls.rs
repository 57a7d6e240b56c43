//! Running an operation on the shard that owns its partition.
//!
//! An operation is a closure with a typed output: the caller hands it to
//! the owning shard, the owner begins it (the closure's synchronous part
//! runs at once, taking an append's admission ticket, for one) and runs
//! the future it returns in the queue it names, and the typed output comes
//! back. Work for this shard runs in place; work for another travels over
//! glommio's channel mesh, first in first out per pair of shards, and the
//! owner begins operations in the order it takes them off the channel; the
//! answer comes back over the mesh too, so every wakeup stays on its own
//! executor. No lock is shared between cores beyond the one-value cell an
//! answer travels in.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use event_listener::Event;
use glommio::channels::channel_mesh::Receivers;

use super::Shard;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// A future that runs on one shard.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The answer to an operation handed to its shard; see [`Shard::submit`].
pub type PendingAnswer<T> = LocalFuture<Result<T>>;

/// The task queue an operation runs in on its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Glommio's default queue: appends and everything else.
    Default,
    /// The consumer-read queue ([`Shard::spawn_consumer_read`]).
    ConsumerRead,
}

/// An operation as it travels to its shard: begun there with the shard's
/// handle, it returns the work left to run.
type Operation<S> = Box<dyn FnOnce(&Rc<Shard<S>>) -> LocalFuture<()> + Send>;

/// What shards send each other.
pub(super) enum Envelope<S: Storage> {
    /// Begin this operation, in this queue.
    Operation {
        operation: Operation<S>,
        queue: Queue,
    },
    /// The operation with this id has put its answer in its cell.
    Answered { id: u64 },
    /// The sender's main future ended: it sends no more operations.
    Finished,
}

/// Where an answer from another shard lands.
type AnswerCell<T> = Arc<Mutex<Option<Result<T>>>>;

/// The local side of an operation sent to another shard.
#[derive(Default)]
pub(super) struct Waiting {
    answered: RefCell<bool>,
    ready: Event,
}

impl<S: Storage> Shard<S> {
    /// Runs `begin` on shard `target` and returns its output: in place on
    /// this shard, otherwise on the owner, in the default queue.
    ///
    /// # Errors
    /// The operation's own error; [`Error::ShuttingDown`] once `target`
    /// has stopped.
    pub(crate) async fn run_on<T, F>(
        self: &Rc<Self>,
        target: usize,
        queue: Queue,
        begin: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard<S>>) -> LocalFuture<Result<T>> + Send + 'static,
    {
        if target == self.id {
            // Awaited at once: no task of its own needed.
            return self.begin_here(begin).await;
        }
        self.submit(target, queue, begin).await.await
    }

    /// Hands `begin` to shard `target` and returns, once it has begun
    /// there, the future of its output. Operations one task submits one
    /// after the other begin on their shard in that order (the channel
    /// between two shards is first in, first out, and the owner begins each
    /// operation as it takes it off); an append takes its admission ticket
    /// as it begins, so appends submitted one after the other are admitted
    /// in that order, however their tasks are scheduled afterwards. The
    /// operation runs as a task of its own, on this shard as on another,
    /// so the returned futures may be awaited in any order: one submitted
    /// later never waits on the caller polling an earlier one. Dropping the
    /// future of a local operation before it completes cancels it.
    pub(crate) async fn submit<T, F>(
        self: &Rc<Self>,
        target: usize,
        queue: Queue,
        begin: F,
    ) -> PendingAnswer<T>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard<S>>) -> LocalFuture<Result<T>> + Send + 'static,
    {
        if target == self.id {
            let work = self.begin_here(begin);
            return Box::pin(match queue {
                Queue::Default => glommio::spawn_local(work),
                Queue::ConsumerRead => self.spawn_consumer_read(work),
            });
        }
        let cell: AnswerCell<T> = Arc::default();
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let waiting = Rc::new(Waiting::default());
        self.waiting.borrow_mut().insert(id, Rc::clone(&waiting));
        let from = self.id;
        let answer_cell = Arc::clone(&cell);
        let operation: Operation<S> = Box::new(move |owner: &Rc<Shard<S>>| {
            let work = owner.begin_here(begin);
            let owner = Rc::clone(owner);
            Box::pin(async move {
                let answer = work.await;
                *answer_cell
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(answer);
                // The caller may have stopped; nothing waits then.
                let _ = owner.senders.send_to(from, Envelope::Answered { id }).await;
            })
        });
        let envelope = Envelope::Operation { operation, queue };
        if self.senders.send_to(target, envelope).await.is_err() {
            self.waiting.borrow_mut().remove(&id);
            return Box::pin(async { Err(Error::ShuttingDown) });
        }
        Box::pin(async move {
            loop {
                let listener = waiting.ready.listen();
                if *waiting.answered.borrow() {
                    break;
                }
                listener.await;
            }
            cell.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or(Err(Error::ShuttingDown))
        })
    }

    /// Begins an operation on this shard: its synchronous part runs now.
    /// A stopped shard answers [`Error::ShuttingDown`] without running it.
    fn begin_here<T: 'static>(
        self: &Rc<Self>,
        begin: impl FnOnce(&Rc<Shard<S>>) -> LocalFuture<Result<T>>,
    ) -> PendingAnswer<T> {
        if self.stopping.get() {
            return Box::pin(async { Err(Error::ShuttingDown) });
        }
        begin(self)
    }

    /// Serves what the other shards send this one until they have all
    /// stopped: begins their operations in the order each sends them and
    /// wakes the tasks waiting for answers.
    pub(super) fn serve_peers(
        self: Rc<Self>,
        mut receivers: Receivers<Envelope<S>>,
    ) -> impl Future<Output = ()> {
        let streams = receivers.streams();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(peer, stream)| {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    while let Some(envelope) = stream.recv().await {
                        match envelope {
                            Envelope::Operation { operation, queue } => {
                                // Begun in the order the peer sent them.
                                let work = operation(&shard);
                                match queue {
                                    Queue::ConsumerRead => shard.spawn_consumer_read(work).detach(),
                                    Queue::Default => glommio::spawn_local(work).detach(),
                                };
                            }
                            Envelope::Answered { id } => {
                                if let Some(waiting) = shard.waiting.borrow_mut().remove(&id) {
                                    *waiting.answered.borrow_mut() = true;
                                    waiting.ready.notify(usize::MAX);
                                }
                            }
                            Envelope::Finished => {
                                shard.finished_peers.set(shard.finished_peers.get() + 1);
                                shard.peer_finished.notify(usize::MAX);
                            }
                        }
                    }
                    tracing::debug!(shard = shard.id, peer, "peer stopped");
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await;
            }
        }
    }
}
