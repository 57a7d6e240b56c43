//! The order a partition's appends are admitted in.
//!
//! Kafka appends a connection's requests for a partition in the order they
//! arrive, and clients build on it: a producer with several requests in
//! flight and no idempotence relies on it for ordering, and so does every
//! consumer downstream. An append can wait before it is admitted (for room
//! in the write queue), and many tasks append to one log, so the order of
//! admission cannot be left to which waiting task the executor wakes
//! first: a smaller append arriving later would find room before a larger
//! one that arrived first.
//!
//! Instead every append takes an [`AdmissionTicket`] synchronously, at the
//! moment its caller decides its place (the broker does so for a
//! connection's requests one after the other, before it reads the next),
//! and appends are admitted strictly in ticket order. A ticket dropped
//! before its turn (a refused batch, a cancelled task) leaves the line and
//! holds up no one.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use event_listener::Event;

/// Tickets waiting to be admitted, in the order they were taken.
#[derive(Default)]
pub(crate) struct AdmissionLine {
    next_number: Cell<u64>,
    waiting: RefCell<VecDeque<u64>>,
    /// Notified whenever a ticket leaves the line.
    turn_passed: Event,
}

impl AdmissionLine {
    /// A ticket at the back of the line.
    pub(crate) fn take_ticket(self: &Rc<Self>) -> AdmissionTicket {
        let number = self.next_number.get();
        self.next_number.set(number + 1);
        self.waiting.borrow_mut().push_back(number);
        AdmissionTicket {
            line: Rc::clone(self),
            number,
        }
    }

    /// Tickets in the line.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.borrow().len()
    }
}

/// A place in a partition's admission line, taken by
/// [`PartitionLog::admission_ticket`](super::PartitionLog::admission_ticket).
/// Leaves the line when dropped.
#[must_use = "an append is admitted in the order its ticket was taken"]
pub struct AdmissionTicket {
    line: Rc<AdmissionLine>,
    number: u64,
}

impl AdmissionTicket {
    /// Whether every ticket taken before this one has left the line.
    pub(crate) fn is_first(&self) -> bool {
        self.line.waiting.borrow().front() == Some(&self.number)
    }

    /// Waits until every ticket taken before this one has left the line.
    pub(crate) async fn wait_for_turn(&self) {
        loop {
            let listener = self.line.turn_passed.listen();
            if self.is_first() {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        let mut waiting = self.line.waiting.borrow_mut();
        if waiting.front() == Some(&self.number) {
            waiting.pop_front();
        } else if let Some(position) = waiting.iter().position(|&number| number == self.number) {
            waiting.remove(position);
        }
        drop(waiting);
        self.line.turn_passed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::AdmissionLine;

    #[test]
    fn tickets_are_first_in_the_order_they_were_taken() {
        let line = Rc::new(AdmissionLine::default());
        let first = line.take_ticket();
        let second = line.take_ticket();
        let third = line.take_ticket();
        assert!(first.is_first() && !second.is_first() && !third.is_first());
        drop(first);
        assert!(second.is_first() && !third.is_first());
        drop(second);
        assert!(third.is_first());
        drop(third);
        assert_eq!(line.len(), 0);
    }

    #[test]
    fn a_ticket_dropped_before_its_turn_holds_up_no_one() {
        let line = Rc::new(AdmissionLine::default());
        let first = line.take_ticket();
        let abandoned = line.take_ticket();
        let third = line.take_ticket();
        drop(abandoned);
        assert!(!third.is_first());
        drop(first);
        assert!(third.is_first());
    }

    #[test]
    fn a_waiting_ticket_wakes_when_those_before_it_leave() {
        let line = Rc::new(AdmissionLine::default());
        let first = line.take_ticket();
        let second = line.take_ticket();
        let waiting = std::pin::pin!(second.wait_for_turn());
        let mut waiting = waiting;
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(waiting.as_mut()))
                .is_none()
        );
        drop(first);
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(waiting.as_mut()))
                .is_some()
        );
    }
}
