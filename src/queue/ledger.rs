//! The bookkeeping a broker-backed delivery keeps beside the task records:
//! which broker messages belong to which record, how often each was
//! delivered without an outcome (so a task that kills the process every
//! time ends instead of looping), which messages are retired (their task
//! was deleted or rescheduled), and the record changes a delivery makes
//! (start, hand back, fail). A store that a broker delivery can run on
//! implements [`DeliveryLedger`] beside [`TaskStore`]; each step must be
//! one transaction with the record it changes, and safe when several
//! processes share the store (a redelivered message is taken over by
//! whichever instance gets it, never run as a second record).
//!
//! Owns: those operations and their types. Must not touch: the broker
//! itself (the AMQP delivery does) or the records' other fields.

use futures_util::future::BoxFuture;

use super::{QueueError, TaskStore};
use crate::task::ExportTask;

/// What happens to a task's hand-out count when it goes back to SCHEDULED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Settled with a decision (held by a window): counting starts anew.
    Reset,
    /// This run was not the task's fault (shutdown): it does not count.
    Uncount,
    /// This run counts.
    Keep,
}

/// What [`DeliveryLedger::begin_delivery`] found and did.
pub struct Begun {
    /// Deliveries of the message without a settled decision, this one
    /// included (0 for a retired message or an ended record: not counted).
    pub deliveries: u32,
    /// The message belongs to a deleted or rescheduled task.
    pub retired: bool,
    /// The record linked to the message, as it is now.
    pub record: Option<ExportTask>,
    /// The record was marked IN PROCESS.
    pub started: bool,
}

/// The bookkeeping of a broker-backed delivery; see the module's text.
pub trait DeliveryLedger: TaskStore {
    /// How many deliveries without an outcome a message gets before its
    /// task is given up (`serve --max-deliveries`).
    fn max_deliveries(&self) -> u32;

    /// Counts a delivery of broker message `message_id` and looks at its
    /// record, in one transaction committed before the task runs (so that
    /// a run that ends with the process still counts). With `start`, a
    /// record that has not ended is marked IN PROCESS unless the message
    /// is over [`DeliveryLedger::max_deliveries`]. A retired message or an
    /// ended record is not counted (it is acknowledged without running).
    fn begin_delivery<'a>(
        &'a self,
        message_id: &'a str,
        start: bool,
    ) -> BoxFuture<'a, Result<Begun, QueueError>>;

    /// Puts a record IN PROCESS back to SCHEDULED (held by a window, not
    /// yet due, or handed back by a worker), changing its counts as
    /// `count` says, in one transaction.
    fn unstart_record<'a>(
        &'a self,
        task_id: &'a str,
        count: Count,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Marks a record FAILED with a reason (a message that could not be
    /// delivered).
    fn fail_record<'a>(
        &'a self,
        task_id: &'a str,
        error: String,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Links another broker message ID to a record (a rescheduled task
    /// travels in a new message).
    fn link_message<'a>(
        &'a self,
        task_id: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
}
