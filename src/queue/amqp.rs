//! The RabbitMQ queue: task delivery through an AMQP 0-9-1 broker, task
//! records and per-instance results in the local SQLite store.
//!
//! Per `dcmQueueName` (e.g. `Export1`) the service declares four durable
//! queues on the default exchange:
//!
//! - `<queue>`: the tasks, as JSON with dcm4chee's names (see
//!   [`TaskRequest`]); other systems may publish plain JSON there.
//! - `<queue>.retry`: tasks waiting for a retry; each message expires after
//!   its delay and is dead-lettered back into `<queue>`.
//! - `<queue>.hold`: the same for tasks held by an exporter's `dcmSchedule`
//!   window or not yet due (`scheduledTime`), checked again every minute. A
//!   queue of its own, since RabbitMQ expires messages only at the head of a
//!   queue and a long hold must not delay a short retry.
//! - `<queue>.dlq`: messages that cannot be run (over [`MAX_MESSAGE_BYTES`],
//!   malformed, a field over its limit, unknown exporter, delivered
//!   `max-deliveries` times without an outcome), as they arrived, with the
//!   reason in the header [`REASON_HEADER`].
//!
//! Messages are persistent and every publish waits for the broker's
//! confirm. A delivery is acknowledged only after its outcome was recorded
//! (and, with the default `--sqlite-synchronous full`, is on disk), so a
//! crash means redelivery, never loss. Every delivery ends in an ack, or a
//! nack with requeue: it is held by a guard ([`Unsettled`]) that requeues
//! it when dropped unsettled (an error, a panic, a cancelled worker), so
//! the consumer's prefetch window never fills with deliveries nobody
//! settles. The message ID (a UUID, set by this service when it publishes;
//! a message published without one is published again with one and the
//! original acknowledged) links a message to its local record: a
//! redelivered message whose record has ended (completed, canceled) is
//! acknowledged without running again. Deliveries of each message are
//! counted in the record store, committed before the task runs and cleared
//! when a delivery is settled with a decision: a message delivered
//! `max-deliveries` times without an outcome (each run ended with the
//! process) is dead-lettered at its next delivery and its record FAILED.
//!
//! A lost connection is made again on next use: a worker whose consumer
//! failed gets an error, waits a second and asks again, which reconnects.
//! Deliveries unacknowledged at that moment come again (see above).
//!
//! Limits of this first step: a task record lives in the store of the
//! process that created it (the publisher or the first consumer), so with
//! several service instances the REST trigger's record on one instance
//! stays SCHEDULED when another instance runs the task (which records it in
//! its own store), and each instance counts deliveries in its own store;
//! the prefetch is the queue's
//! `dcmMaxTasksParallel` when its consumer started, a reload changes it only
//! after a reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex as AsyncMutex;

use super::embedded::{Count, RecordInit};
use super::{
    BatchSummary, CancelResult, EmbeddedQueue, Hold, NewTask, QueueError, Release, Reschedule,
    TaskFilter, TaskQueue,
};
use crate::config::{SharedSnapshot, Snapshot, current};
use crate::outcome::{InstanceResult, Outcome};
use crate::task::{ExportTask, MAX_BATCH_ID_CHARS, MAX_EXPORTER_ID_CHARS, Status, TaskRequest};
use crate::text::clip;

/// How long a message of an exporter outside its window waits before it is
/// looked at again.
const HOLD_DELAY: Duration = Duration::from_secs(60);
/// How often a closed queue is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The largest task message that is read: a bigger one is dead-lettered
/// without being parsed (a task request is a few hundred bytes; lapin
/// already holds the body, nothing more is built from it).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Header of a dead-lettered message: why it was dead-lettered.
pub const REASON_HEADER: &str = "x-stow-exporter-reason";
/// Reasons (in [`REASON_HEADER`] and the task record) are cut to this
/// many characters: a serde error may quote an unknown field name.
const MAX_REASON_CHARS: usize = 1024;
/// A message field quoted into the record of a dead-lettered message is
/// cut to this many characters (UIDs are at most 64).
const MAX_UID_CHARS: usize = 64;

/// A random (version 4) UUID, as a message ID.
fn new_message_id() -> String {
    let r = rand::random::<u128>() & !(0xf000 << 64) & !(0xc << 60) | (0x4000 << 64) | (0x8 << 60);
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn broker(e: impl std::fmt::Display) -> QueueError {
    QueueError::Broker(e.to_string())
}

/// Properties of a message this service publishes.
fn props(message_id: &str, expiration: Option<Duration>) -> BasicProperties {
    let p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into());
    match expiration {
        Some(d) => p.with_expiration(d.as_millis().max(1).to_string().as_str().into()),
        None => p,
    }
}

/// A delivery not settled yet: "a guard, not a promise". Dropped unsettled
/// (an error on any path, a panic, a cancelled future) it is nacked with
/// requeue, so the broker hands the message out again and the consumer's
/// prefetch window never fills with deliveries nobody settles.
struct Unsettled {
    acker: Option<Acker>,
}

impl Unsettled {
    fn new(acker: Acker) -> Unsettled {
        Unsettled { acker: Some(acker) }
    }

    /// Acknowledges the delivery: the broker forgets the message.
    async fn ack(mut self) -> Result<(), QueueError> {
        match self.acker.take() {
            // `false` means the channel already closed: the broker
            // requeued the message itself.
            Some(a) => a
                .ack(BasicAckOptions::default())
                .await
                .map(|_| ())
                .map_err(broker),
            None => Ok(()),
        }
    }

    /// Hands the message back to the broker now.
    async fn requeue(mut self) {
        if let Some(a) = self.acker.take()
            && let Err(e) = a.nack(requeue()).await
        {
            // The channel is gone: the broker requeues it by itself.
            tracing::warn!(error = %e, "cannot requeue the message; the broker does when the channel closes");
        }
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(a) = self.acker.take() else {
            return;
        };
        // A destructor cannot await: the nack is sent by a task of its own.
        // Without a runtime (the process is ending) the connection closes
        // and the broker requeues the message anyway.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = a.nack(requeue()).await {
                        tracing::warn!(error = %e, "cannot requeue an unsettled message; the broker does when the channel closes");
                    }
                });
            }
            Err(_) => tracing::warn!("message left unsettled at exit; the broker requeues it"),
        }
    }
}

/// A delivery taken by `next` whose task runs.
struct Pending {
    delivery: Unsettled,
    body: Vec<u8>,
    queue: String,
    message_id: String,
}

/// The task request in a message body, checked against the configuration;
/// `Err` is the reason to dead-letter it.
pub(crate) fn parse_request(
    body: &[u8],
    snap: &Snapshot,
    queue: &str,
) -> Result<TaskRequest, String> {
    serde_json::from_slice::<TaskRequest>(body)
        .map_err(|e| format!("malformed message: {e}"))
        .and_then(|r| {
            r.validate()
                .map_err(|e| format!("invalid message: {e}"))
                .map(|_| r.normalized())
        })
        .and_then(|r| match snap.exporter(&r.exporter_id) {
            None => Err(format!(
                "unknown exporter: no exporter {} in the configuration",
                r.exporter_id
            )),
            Some(e) if e.queue != queue => Err(format!(
                "exporter {} uses queue {}, not {queue}",
                r.exporter_id, e.queue
            )),
            Some(_) => Ok(r),
        })
}

/// What can be read of a message that cannot run, for its FAILED record:
/// the fields as text, each cut to its limit.
pub(crate) fn readable_fields(body: &[u8]) -> TaskRequest {
    let v: serde_json::Value = if body.len() <= MAX_MESSAGE_BYTES {
        serde_json::from_slice(body).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let field = |n: &str, max: usize| v.get(n).and_then(|x| x.as_str()).map(|s| clip(s, max));
    TaskRequest {
        exporter_id: field("ExporterID", MAX_EXPORTER_ID_CHARS).unwrap_or_default(),
        study_iuid: field("StudyInstanceUID", MAX_UID_CHARS).unwrap_or_default(),
        series_iuid: field("SeriesInstanceUID", MAX_UID_CHARS),
        sop_iuid: field("SOPInstanceUID", MAX_UID_CHARS),
        batch_id: field("batchID", MAX_BATCH_ID_CHARS),
        scheduled_time: None,
    }
}

struct Link {
    conn: Connection,
    /// In confirm mode; shared by every publish.
    publisher: Channel,
    declared: HashSet<String>,
}

/// The broker-backed [`TaskQueue`].
pub struct AmqpQueue {
    records: EmbeddedQueue,
    uri: String,
    snapshot: SharedSnapshot,
    link: AsyncMutex<Option<Link>>,
    consumers: Mutex<HashMap<String, Arc<AsyncMutex<Option<Consumer>>>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl AmqpQueue {
    /// Connects to the broker at `uri` (fails at once when it cannot) and
    /// keeps task records in `records`. The snapshot gives the exporters
    /// (a message naming an unknown one is dead-lettered) and each queue's
    /// `dcmMaxTasksParallel`, the consumer's prefetch.
    pub async fn connect(
        uri: &str,
        records: EmbeddedQueue,
        snapshot: SharedSnapshot,
    ) -> Result<AmqpQueue, QueueError> {
        let q = AmqpQueue {
            records,
            uri: uri.to_string(),
            snapshot,
            link: AsyncMutex::new(None),
            consumers: Mutex::default(),
            pending: Mutex::default(),
        };
        q.publisher().await?;
        tracing::info!(broker = %crate::redact::mask_url(uri), "connected to the message broker");
        Ok(q)
    }

    /// The connection's publisher channel, reconnecting when the
    /// connection was lost.
    async fn publisher(&self) -> Result<Channel, QueueError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.conn.status().connected()
            && l.publisher.status().connected()
        {
            return Ok(l.publisher.clone());
        }
        if link.is_some() {
            tracing::warn!(broker = %crate::redact::mask_url(&self.uri), "connection to the message broker lost; reconnecting");
        }
        *link = None;
        let conn = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .map_err(|e| broker(format!("{}: {e}", crate::redact::mask_url(&self.uri))))?;
        let publisher = conn.create_channel().await.map_err(broker)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker)?;
        *link = Some(Link {
            conn,
            publisher: publisher.clone(),
            declared: HashSet::new(),
        });
        Ok(publisher)
    }

    /// Declares `queue` and its `.retry`, `.hold` and `.dlq` queues (once
    /// per connection).
    async fn declare(&self, queue: &str) -> Result<Channel, QueueError> {
        let ch = self.publisher().await?;
        let mut link = self.link.lock().await;
        let Some(l) = link.as_mut() else {
            return Err(QueueError::Broker("connection lost".into()));
        };
        if l.declared.contains(queue) {
            return Ok(ch);
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut back = FieldTable::default();
        back.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        back.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.into()),
        );
        for (name, args) in [
            (queue.to_string(), FieldTable::default()),
            (format!("{queue}.retry"), back.clone()),
            (format!("{queue}.hold"), back),
            (format!("{queue}.dlq"), FieldTable::default()),
        ] {
            ch.queue_declare(name.as_str().into(), durable, args)
                .await
                .map_err(|e| broker(format!("declare queue {name}: {e}")))?;
        }
        l.declared.insert(queue.to_string());
        Ok(ch)
    }

    /// Publishes to the default exchange and waits for the broker's confirm.
    async fn publish_raw(
        &self,
        queue: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let ch = self.declare(queue).await?;
        let confirm = ch
            .basic_publish(
                "".into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(broker)?
            .await
            .map_err(broker)?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(QueueError::Broker(format!(
                "the broker did not confirm the message to {routing_key}"
            )))
        }
    }

    /// The consumer slot of `queue`.
    fn slot(&self, queue: &str) -> Arc<AsyncMutex<Option<Consumer>>> {
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    async fn consume(&self, queue: &str) -> Result<Consumer, QueueError> {
        self.declare(queue).await?;
        let prefetch = current(&self.snapshot)
            .queues
            .get(queue)
            .map(|q| q.max_tasks_parallel.clamp(1, u32::from(u16::MAX)) as u16)
            .unwrap_or(1);
        let conn_ch = {
            let link = self.link.lock().await;
            let Some(l) = link.as_ref() else {
                return Err(QueueError::Broker("connection lost".into()));
            };
            l.conn.create_channel().await.map_err(broker)?
        };
        conn_ch
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(broker)?;
        let c = conn_ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        tracing::info!(queue, prefetch, "consuming from the message broker");
        Ok(c)
    }

    /// Dead-letters a message that cannot run: copies it to `<queue>.dlq`
    /// with `reason` in [`REASON_HEADER`], records it FAILED with the
    /// reason, acknowledges it. The copy comes first: once it is confirmed
    /// nothing is lost, so a record that cannot be written (the fault that
    /// led here, maybe) is logged and does not keep the message in the queue.
    async fn dead_letter(
        &self,
        queue: &str,
        delivery: Unsettled,
        body: &[u8],
        properties: &BasicProperties,
        existing: Option<ExportTask>,
        reason: String,
    ) -> Result<(), QueueError> {
        let reason = clip(&reason, MAX_REASON_CHARS);
        tracing::warn!(queue, reason = %reason, "message dead-lettered");
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(new_message_id);
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
        let p = properties
            .clone()
            .with_message_id(message_id.as_str().into())
            .with_headers(headers);
        self.publish_raw(queue, &format!("{queue}.dlq"), body, p)
            .await?;
        let recorded = match existing {
            Some(t) => self.records.fail_record(&t.task_id, reason.clone()).await,
            None => {
                let request = readable_fields(body);
                let snap = current(&self.snapshot);
                let local_aet = snap
                    .exporter(&request.exporter_id)
                    .and_then(|e| e.ae_title.clone());
                self.records
                    .insert_record(RecordInit {
                        task: NewTask {
                            request,
                            device_name: snap.device_name.clone(),
                            queue: queue.to_string(),
                            local_aet,
                        },
                        status: Status::Failed,
                        message_id,
                        failure: Some((
                            format!("Message rejected and moved to {queue}.dlq: {reason}"),
                            reason,
                        )),
                    })
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = recorded {
            tracing::error!(queue, error = %e, "dead-lettered message not recorded; it is in {queue}.dlq");
        }
        delivery.ack().await
    }

    /// Gives a message published without a message ID one: publishes it
    /// again with an ID (confirmed), then acknowledges the original. Its
    /// deliveries can then be counted, and a redelivery finds its record.
    async fn adopt(
        &self,
        queue: &str,
        delivery: Unsettled,
        body: &[u8],
        properties: &BasicProperties,
    ) -> Result<(), QueueError> {
        let p = properties
            .clone()
            .with_delivery_mode(2)
            .with_message_id(new_message_id().as_str().into());
        self.publish_raw(queue, queue, body, p).await?;
        delivery.ack().await
    }

    /// Looks at one delivery: returns the task to run, or `None` when the
    /// message was dealt with here. On every path the delivery is settled:
    /// acknowledged, dead-lettered, kept in [`Pending`] for the outcome,
    /// or (any error) requeued when its guard drops.
    async fn take(
        &self,
        queue: &str,
        d: lapin::message::Delivery,
        hold: &(dyn Fn() -> Hold + Send + Sync),
    ) -> Result<Option<ExportTask>, QueueError> {
        let lapin::message::Delivery {
            acker,
            data,
            properties,
            ..
        } = d;
        let delivery = Unsettled::new(acker);
        if data.len() > MAX_MESSAGE_BYTES {
            let reason = format!(
                "message of {} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes; not read",
                data.len()
            );
            self.dead_letter(queue, delivery, &data, &properties, None, reason)
                .await?;
            return Ok(None);
        }
        let snap = current(&self.snapshot);
        let parsed = parse_request(&data, &snap, queue);
        let Some(message_id) = properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
        else {
            match parsed {
                Err(reason) => {
                    self.dead_letter(queue, delivery, &data, &properties, None, reason)
                        .await?
                }
                Ok(_) => self.adopt(queue, delivery, &data, &properties).await?,
            }
            return Ok(None);
        };
        // Held by the exporter's window, or not yet due: back in a minute
        // (or when due, if sooner).
        let wait = parsed.as_ref().ok().and_then(|request| {
            if hold().exporters.contains(&request.exporter_id) {
                Some(HOLD_DELAY)
            } else {
                request
                    .scheduled_time
                    .and_then(|at| (at - Utc::now()).to_std().ok())
                    .filter(|d| !d.is_zero())
                    .map(|d| d.min(HOLD_DELAY))
            }
        });
        // Counted (and, when it can run, started) before anything else is
        // written, so that an error or a crash further on still counts.
        let begun = self
            .records
            .begin_delivery(&message_id, parsed.is_ok() && wait.is_none())
            .await?;
        // A message of a task deleted or rescheduled since (a rescheduled
        // task travels in a new message).
        if begun.retired {
            tracing::info!(message = %message_id, "message of a deleted or rescheduled task acknowledged without running");
            delivery.ack().await?;
            return Ok(None);
        }
        if let Some(t) = &begun.record
            && t.status.is_done()
        {
            tracing::info!(task = %t.task_id, status = %t.status, "message of an ended task acknowledged without running");
            delivery.ack().await?;
            return Ok(None);
        }
        let max = self.records.max_deliveries();
        if begun.deliveries > max {
            let reason = super::gave_up(max, "delivered");
            self.dead_letter(queue, delivery, &data, &properties, begun.record, reason)
                .await?;
            return Ok(None);
        }
        let request = match parsed {
            Ok(r) => r,
            Err(reason) => {
                self.dead_letter(queue, delivery, &data, &properties, begun.record, reason)
                    .await?;
                return Ok(None);
            }
        };
        let new_record = |status| RecordInit {
            task: NewTask {
                local_aet: snap
                    .exporter(&request.exporter_id)
                    .and_then(|e| e.ae_title.clone()),
                request: request.clone(),
                device_name: snap.device_name.clone(),
                queue: queue.to_string(),
            },
            status,
            message_id: message_id.clone(),
            failure: None,
        };
        if let Some(wait) = wait {
            let record = match begun.record {
                Some(t) => t,
                None => {
                    self.records
                        .insert_record(new_record(Status::Scheduled))
                        .await?
                }
            };
            self.publish_raw(
                queue,
                &format!("{queue}.hold"),
                &data,
                props(&message_id, Some(wait)),
            )
            .await?;
            // Settled with a decision: its count starts anew.
            self.records
                .unstart_record(&record.task_id, Count::Reset)
                .await?;
            delivery.ack().await?;
            return Ok(None);
        }
        let t = match begun.record {
            // Runnable, not ended and under the cap: `begin_delivery`
            // marked it IN PROCESS.
            Some(t) => t,
            None => {
                self.records
                    .insert_record(new_record(Status::InProcess))
                    .await?
            }
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                t.task_id.clone(),
                Pending {
                    delivery,
                    body: data,
                    queue: queue.to_string(),
                    message_id,
                },
            );
        Ok(Some(t))
    }
}

impl TaskQueue for AmqpQueue {
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        async move {
            let message_id = new_message_id();
            let queue = task.queue.clone();
            let body = serde_json::to_vec(&task.request).map_err(broker)?;
            let record = self
                .records
                .insert_record(RecordInit {
                    task,
                    status: Status::Scheduled,
                    message_id: message_id.clone(),
                    failure: None,
                })
                .await?;
            if let Err(e) = self
                .publish_raw(&queue, &queue, &body, props(&message_id, None))
                .await
            {
                let _ = self
                    .records
                    .fail_record(&record.task_id, format!("not accepted by the broker: {e}"))
                    .await;
                return Err(e);
            }
            Ok(record)
        }
        .boxed()
    }

    fn next<'a>(
        &'a self,
        queue: &'a str,
        hold: &'a (dyn Fn() -> Hold + Send + Sync),
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            let slot = self.slot(queue);
            let mut consumer = slot.lock().await;
            loop {
                // A closed queue takes no deliveries (those already
                // prefetched wait, unacknowledged).
                if hold().queue_closed {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    continue;
                }
                if consumer.is_none() {
                    *consumer = Some(self.consume(queue).await?);
                }
                let Some(c) = consumer.as_mut() else {
                    continue;
                };
                let d = match tokio::time::timeout(POLL_INTERVAL, c.next()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(d))) => d,
                    Ok(Some(Err(e))) => {
                        *consumer = None;
                        return Err(broker(e));
                    }
                    Ok(None) => {
                        *consumer = None;
                        return Err(QueueError::Broker(format!("consumer of {queue} ended")));
                    }
                };
                if let Some(t) = self.take(queue, d, hold).await? {
                    return Ok(t);
                }
            }
        }
        .boxed()
    }

    fn record_instances<'a>(
        &'a self,
        task_id: &'a str,
        results: Vec<InstanceResult>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.records.record_instances(task_id, results)
    }

    fn instance_results<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, InstanceResult>, QueueError>> {
        self.records.instance_results(task_id)
    }

    fn instance_result_count<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<u64, QueueError>> {
        self.records.instance_result_count(task_id)
    }

    fn finish<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            // Recorded first: a crash before the ack means redelivery.
            let t = self.records.finish(task_id, outcome, retry_at).await?;
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(task_id);
            let Some(p) = pending else {
                return Ok(t);
            };
            if let Some(at) = retry_at {
                let delay = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                if let Err(e) = self
                    .publish_raw(
                        &p.queue,
                        &format!("{}.retry", p.queue),
                        &p.body,
                        props(&p.message_id, Some(delay)),
                    )
                    .await
                {
                    // Back into the queue at once rather than lost.
                    tracing::error!(task = %task_id, error = %e, "cannot schedule the retry; the message goes back to the queue");
                    p.delivery.requeue().await;
                    return Ok(t);
                }
            }
            if let Err(e) = p.delivery.ack().await {
                tracing::warn!(task = %task_id, error = %e, "cannot acknowledge the message; it will be delivered again");
            }
            Ok(t)
        }
        .boxed()
    }

    fn release<'a>(&'a self, task_id: &'a str, why: Release) -> BoxFuture<'a, ()> {
        async move {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(task_id);
            let count = match why {
                Release::Shutdown => Count::Uncount,
                Release::Fault => Count::Keep,
            };
            if let Err(e) = self.records.unstart_record(task_id, count).await {
                tracing::error!(task = %task_id, error = %e, "cannot put the task record back to SCHEDULED");
            }
            if let Some(p) = pending {
                p.delivery.requeue().await;
            }
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelResult, QueueError>> {
        // The record says CANCELED; its message, when it comes, is
        // acknowledged without running.
        self.records.cancel(task_id)
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<ExportTask>, QueueError>> {
        self.records.list(filter)
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        self.records.get(task_id)
    }

    fn count(&self, filter: TaskFilter) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.records.count(filter)
    }

    fn status_counts<'a>(
        &'a self,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Vec<crate::queue::StatusCount>, QueueError>> {
        self.records.status_counts(device)
    }

    fn reschedule<'a>(
        &'a self,
        task_id: &'a str,
        r: Reschedule,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            // The record is reset and its old messages retired, then the
            // task travels again in a new message linked to the record.
            let t = self.records.reschedule_record(task_id, r).await?;
            let request = TaskRequest {
                exporter_id: t.exporter_id.clone(),
                study_iuid: t.study_iuid.clone(),
                series_iuid: t.series().map(str::to_string),
                sop_iuid: t.instance().map(str::to_string),
                batch_id: t.batch_id.clone(),
                scheduled_time: (t.scheduled_time > Utc::now()).then_some(t.scheduled_time),
            };
            let body = serde_json::to_vec(&request).map_err(broker)?;
            let message_id = new_message_id();
            self.records.link_message(task_id, &message_id).await?;
            if let Err(e) = self
                .publish_raw(&t.queue, &t.queue, &body, props(&message_id, None))
                .await
            {
                let _ = self
                    .records
                    .fail_record(task_id, format!("not accepted by the broker: {e}"))
                    .await;
                return Err(e);
            }
            Ok(t)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        // Its messages are retired: acknowledged without running when they come.
        self.records.delete(task_id)
    }

    fn delete_matching(&self, filter: TaskFilter) -> BoxFuture<'_, Result<(u64, u64), QueueError>> {
        self.records.delete_matching(filter)
    }

    fn batches(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<BatchSummary>, QueueError>> {
        self.records.batches(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            crate::redact::mask_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:****@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            crate::redact::mask_url("amqp://127.0.0.1:5672"),
            "amqp://127.0.0.1:5672"
        );
        assert!(!crate::redact::mask_url("amqps://u:p@ss@h/v").contains("p@ss"));
    }

    #[test]
    fn message_ids_are_uuids_v4() {
        let a = new_message_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, new_message_id());
    }
}
