//! The RabbitMQ queue: a [`TaskDelivery`] through an AMQP 0-9-1 broker;
//! task records, per-instance results and the bookkeeping of messages
//! (links to records, delivery counts, retired messages) stay in a store
//! that implements [`DeliveryLedger`] (today the SQLite store), so the
//! broker code does not depend on which database that is.
//!
//! Owns the broker link (connection, publisher channel, consumers) and its
//! typed errors ([`BrokerError`]), and answers the readiness probe and the
//! queue depths from that link. Must not write records but through the
//! ledger.
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
//! nack with requeue: it is held by a guard (`Unsettled`) that requeues
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

use std::collections::{BTreeMap, HashMap, HashSet};
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

use super::ledger::{Count, DeliveryLedger};
use super::{
    Backend, HealthError, Hold, NewTask, QueueError, RecordFailure, RecordInit, Release,
    TaskDelivery,
};
use crate::config::{LiveConfig, Snapshot};
use crate::outcome::Outcome;
use crate::task::{
    ExportTask, MAX_BATCH_ID_CHARS, MAX_EXPORTER_ID_CHARS, RequestError, Status, TaskRequest,
};
use crate::text::clip;

/// How long a message of an exporter outside its window waits before it is
/// looked at again.
const HOLD_DELAY: Duration = Duration::from_secs(60);
/// How often a closed queue is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long the health probe waits for the broker.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
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

/// A broker operation that failed, naming the broker.
#[derive(Debug, thiserror::Error)]
#[error("{broker}: {fault}")]
pub struct BrokerError {
    /// The broker's URL, password masked.
    pub broker: String,
    /// Boxed: lapin's errors are large, and every queue result carries one.
    #[source]
    pub fault: Box<BrokerFault>,
}

/// What failed at the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerFault {
    #[error("cannot connect: {0}")]
    Connect(#[source] lapin::Error),
    /// A step on an open connection (`step` names it: "open a channel",
    /// "publish", "acknowledge", ...).
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("declare queue {queue}: {source}")]
    Declare {
        queue: String,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker did not confirm the message to {routing_key}")]
    NotConfirmed { routing_key: String },
    #[error("consumer of {queue} ended")]
    ConsumerEnded { queue: String },
    #[error("connection lost")]
    ConnectionLost,
    #[error("cannot encode the task message: {0}")]
    Encode(#[source] serde_json::Error),
}

/// `fault` at `broker` (masked URL), as a queue error.
fn broker_error(broker: &str, fault: BrokerFault) -> QueueError {
    QueueError::Broker(BrokerError {
        broker: broker.to_string(),
        fault: Box::new(fault),
    })
}

/// A failed `step` at `broker`, as a queue error.
fn step<'a>(broker: &'a str, step: &'static str) -> impl FnOnce(lapin::Error) -> QueueError + 'a {
    move |source| broker_error(broker, BrokerFault::Step { step, source })
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
    /// The broker's masked URL, for an error.
    broker: Arc<str>,
}

impl Unsettled {
    fn new(acker: Acker, broker: Arc<str>) -> Unsettled {
        Unsettled {
            acker: Some(acker),
            broker,
        }
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
                .map_err(step(&self.broker, "acknowledge")),
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

/// Why a message cannot run: the reason it is dead-lettered with.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("invalid message: {0}")]
    Invalid(#[source] RequestError),
    #[error("unknown exporter: no exporter {0} in the configuration")]
    UnknownExporter(String),
    #[error("exporter {exporter} uses queue {uses}, not {queue}")]
    OtherQueue {
        exporter: String,
        uses: String,
        queue: String,
    },
}

/// The task request in a message body, checked against the configuration;
/// `Err` is the reason to dead-letter it.
pub(crate) fn parse_request(
    body: &[u8],
    snap: &Snapshot,
    queue: &str,
) -> Result<TaskRequest, Rejected> {
    let r = serde_json::from_slice::<TaskRequest>(body).map_err(Rejected::Malformed)?;
    r.validate().map_err(Rejected::Invalid)?;
    let r = r.normalized();
    match snap.exporter(&r.exporter_id) {
        None => Err(Rejected::UnknownExporter(r.exporter_id)),
        Some(e) if e.queue != queue => Err(Rejected::OtherQueue {
            exporter: r.exporter_id,
            uses: e.queue.clone(),
            queue: queue.to_string(),
        }),
        Some(_) => Ok(r),
    }
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

/// The broker-backed [`TaskDelivery`].
pub struct AmqpQueue {
    records: Arc<dyn DeliveryLedger>,
    uri: String,
    /// `uri` with its password masked, for messages.
    masked: Arc<str>,
    config: LiveConfig,
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
        records: Arc<dyn DeliveryLedger>,
        config: LiveConfig,
    ) -> Result<AmqpQueue, QueueError> {
        let q = AmqpQueue {
            records,
            uri: uri.to_string(),
            masked: crate::redact::mask_url(uri).into(),
            config,
            link: AsyncMutex::new(None),
            consumers: Mutex::default(),
            pending: Mutex::default(),
        };
        q.publisher().await?;
        tracing::info!(broker = %crate::redact::mask_url(uri), "connected to the message broker");
        Ok(q)
    }

    /// The store the records are kept in.
    pub fn store(&self) -> &dyn DeliveryLedger {
        self.records.as_ref()
    }

    fn error(&self, fault: BrokerFault) -> QueueError {
        broker_error(&self.masked, fault)
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
            .map_err(|e| self.error(BrokerFault::Connect(e)))?;
        let publisher = conn
            .create_channel()
            .await
            .map_err(step(&self.masked, "open the publisher channel"))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(step(&self.masked, "select confirm mode"))?;
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
            return Err(self.error(BrokerFault::ConnectionLost));
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
                .map_err(|source| {
                    self.error(BrokerFault::Declare {
                        queue: name.clone(),
                        source,
                    })
                })?;
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
            .map_err(step(&self.masked, "publish"))?
            .await
            .map_err(step(&self.masked, "wait for the publisher confirm"))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(self.error(BrokerFault::NotConfirmed {
                routing_key: routing_key.to_string(),
            }))
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
        let prefetch = self
            .config
            .current()
            .queues
            .get(queue)
            .map(|q| q.max_tasks_parallel.clamp(1, u32::from(u16::MAX)) as u16)
            .unwrap_or(1);
        let conn_ch = {
            let link = self.link.lock().await;
            let Some(l) = link.as_ref() else {
                return Err(self.error(BrokerFault::ConnectionLost));
            };
            l.conn
                .create_channel()
                .await
                .map_err(step(&self.masked, "open a consumer channel"))?
        };
        conn_ch
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(step(&self.masked, "set the prefetch"))?;
        let c = conn_ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(step(&self.masked, "start consuming"))?;
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
                let snap = self.config.current();
                let local_aet = snap
                    .exporter(&request.exporter_id)
                    .and_then(|e| e.ae_title.clone());
                self.records
                    .insert(RecordInit {
                        task: NewTask {
                            request,
                            device_name: snap.device_name.clone(),
                            queue: queue.to_string(),
                            local_aet,
                        },
                        status: Status::Failed,
                        message_id: Some(message_id),
                        failure: Some(RecordFailure {
                            outcome: format!("Message rejected and moved to {queue}.dlq: {reason}"),
                            error: reason,
                        }),
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
        let delivery = Unsettled::new(acker, self.masked.clone());
        if data.len() > MAX_MESSAGE_BYTES {
            let reason = format!(
                "message of {} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes; not read",
                data.len()
            );
            self.dead_letter(queue, delivery, &data, &properties, None, reason)
                .await?;
            return Ok(None);
        }
        let snap = self.config.current();
        let parsed = parse_request(&data, &snap, queue);
        let Some(message_id) = properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
        else {
            match parsed {
                Err(reason) => {
                    self.dead_letter(
                        queue,
                        delivery,
                        &data,
                        &properties,
                        None,
                        reason.to_string(),
                    )
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
                self.dead_letter(
                    queue,
                    delivery,
                    &data,
                    &properties,
                    begun.record,
                    reason.to_string(),
                )
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
            message_id: Some(message_id.clone()),
            failure: None,
        };
        if let Some(wait) = wait {
            let record = match begun.record {
                Some(t) => t,
                None => self.records.insert(new_record(Status::Scheduled)).await?,
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
            None => self.records.insert(new_record(Status::InProcess)).await?,
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

impl TaskDelivery for AmqpQueue {
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        async move {
            let message_id = new_message_id();
            let queue = task.queue.clone();
            let body = serde_json::to_vec(&task.request)
                .map_err(|e| self.error(BrokerFault::Encode(e)))?;
            let record = self
                .records
                .insert(RecordInit {
                    message_id: Some(message_id.clone()),
                    ..RecordInit::scheduled(task)
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
                        return Err(step(&self.masked, "receive a delivery")(e));
                    }
                    Ok(None) => {
                        *consumer = None;
                        return Err(self.error(BrokerFault::ConsumerEnded {
                            queue: queue.to_string(),
                        }));
                    }
                };
                if let Some(t) = self.take(queue, d, hold).await? {
                    return Ok(t);
                }
            }
        }
        .boxed()
    }

    fn finish<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            // Recorded first: a crash before the ack means redelivery.
            let t = self
                .records
                .record_outcome(task_id, outcome, retry_at)
                .await?;
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
                Release::Shutdown | Release::Outage => Count::Uncount,
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

    fn redeliver<'a>(&'a self, t: &'a ExportTask) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            // The store reset the record and retired its old messages; the
            // task travels again in a new message linked to the record.
            let request = TaskRequest {
                exporter_id: t.exporter_id.clone(),
                study_iuid: t.study_iuid.clone(),
                series_iuid: t.series().map(str::to_string),
                sop_iuid: t.instance().map(str::to_string),
                batch_id: t.batch_id.clone(),
                scheduled_time: (t.scheduled_time > Utc::now()).then_some(t.scheduled_time),
            };
            let body =
                serde_json::to_vec(&request).map_err(|e| self.error(BrokerFault::Encode(e)))?;
            let message_id = new_message_id();
            self.records.link_message(&t.task_id, &message_id).await?;
            if let Err(e) = self
                .publish_raw(&t.queue, &t.queue, &body, props(&message_id, None))
                .await
            {
                let _ = self
                    .records
                    .fail_record(&t.task_id, format!("not accepted by the broker: {e}"))
                    .await;
                return Err(e);
            }
            Ok(())
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        async move {
            // The link the tasks travel on (made again when it was lost),
            // asked for a channel: a round trip to the broker.
            let probe = async {
                self.publisher().await?;
                let ch = {
                    let link = self.link.lock().await;
                    let Some(l) = link.as_ref() else {
                        return Err(self.error(BrokerFault::ConnectionLost));
                    };
                    l.conn
                        .create_channel()
                        .await
                        .map_err(step(&self.masked, "open a channel"))?
                };
                let _ = ch.close(200, "".into()).await;
                Ok(())
            };
            match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(QueueError::Broker(e))) => Err(HealthError::Broker(e)),
                Ok(Err(e)) => Err(HealthError::Store(e)),
                Err(_) => Err(HealthError::Timeout {
                    broker: self.masked.to_string(),
                    after: HEALTH_TIMEOUT,
                }),
            }
        }
        .boxed()
    }

    fn broker_depths<'a>(
        &'a self,
        queues: &'a [String],
    ) -> BoxFuture<'a, Option<BTreeMap<String, u64>>> {
        async move {
            let mut out = BTreeMap::new();
            if self.publisher().await.is_err() {
                return Some(out);
            }
            for q in queues {
                // A passive declare of a missing queue closes its channel:
                // one channel per queue, never the publisher's.
                let ch = {
                    let link = self.link.lock().await;
                    match link.as_ref() {
                        Some(l) => l.conn.create_channel().await.ok(),
                        None => None,
                    }
                };
                let Some(ch) = ch else {
                    return Some(out);
                };
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                if let Ok(info) = ch
                    .queue_declare(q.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    out.insert(q.clone(), u64::from(info.message_count()));
                    let _ = ch.close(200, "".into()).await;
                }
            }
            Some(out)
        }
        .boxed()
    }

    fn backend(&self) -> Backend {
        Backend::Amqp
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
