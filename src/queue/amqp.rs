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
//! - `<queue>.dlq`: messages that cannot be run (malformed, unknown
//!   exporter), as they arrived.
//!
//! Messages are persistent and every publish waits for the broker's
//! confirm. A delivery is acknowledged only after its outcome was recorded,
//! so a crash means redelivery, never loss. The message ID (a UUID, set by
//! this service when it publishes, or by the first delivery of a message
//! published without one) links a message to its local record: a
//! redelivered message whose record has ended (completed, canceled) is
//! acknowledged without running again.
//!
//! A lost connection is made again on next use: a worker whose consumer
//! failed gets an error, waits a second and asks again, which reconnects.
//! Deliveries unacknowledged at that moment come again (see above).
//!
//! Limits of this first step: a task record lives in the store of the
//! process that created it (the publisher or the first consumer), so with
//! several service instances the REST trigger's record on one instance
//! stays SCHEDULED when another instance runs the task (which records it in
//! its own store); a message published without a message ID and delivered
//! twice (crash) gets a second record; the prefetch is the queue's
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

use super::embedded::RecordInit;
use super::{
    BatchSummary, CancelResult, EmbeddedQueue, Hold, InstanceResult, NewTask, Outcome, QueueError,
    Reschedule, TaskFilter, TaskQueue,
};
use crate::config::{SharedSnapshot, current};
use crate::task::{ExportTask, Status, TaskRequest};

/// How long a message of an exporter outside its window waits before it is
/// looked at again.
const HOLD_DELAY: Duration = Duration::from_secs(60);
/// How often a closed queue is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `amqp://user:****@host/vhost`: the URL with its password masked, for
/// logs; any character in the password, see [`crate::redact::mask_url`].
pub fn mask_url(uri: &str) -> String {
    crate::redact::mask_url(uri)
}

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

/// A delivery taken by `next` and not yet acknowledged.
struct Pending {
    acker: Acker,
    body: Vec<u8>,
    queue: String,
    message_id: String,
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
        tracing::info!(broker = %mask_url(uri), "connected to the message broker");
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
            tracing::warn!(broker = %mask_url(&self.uri), "connection to the message broker lost; reconnecting");
        }
        *link = None;
        let conn = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .map_err(|e| broker(format!("{}: {e}", mask_url(&self.uri))))?;
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

    /// Dead-letters a message that cannot run: records it FAILED with
    /// `reason`, copies it to `<queue>.dlq`, acknowledges it.
    async fn reject(
        &self,
        queue: &str,
        delivery: &lapin::message::Delivery,
        existing: Option<ExportTask>,
        reason: String,
    ) -> Result<(), QueueError> {
        tracing::warn!(queue, reason = %reason, "message dead-lettered");
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(new_message_id);
        match existing {
            Some(t) => self.records.fail_record(&t.task_id, reason.clone()).await?,
            None => {
                // What can be read of it, for the record.
                let v: serde_json::Value =
                    serde_json::from_slice(&delivery.data).unwrap_or_default();
                let field = |n: &str| v.get(n).and_then(|x| x.as_str()).map(str::to_string);
                let request = TaskRequest {
                    exporter_id: field("ExporterID").unwrap_or_default(),
                    study_iuid: field("StudyInstanceUID").unwrap_or_default(),
                    series_iuid: field("SeriesInstanceUID"),
                    sop_iuid: field("SOPInstanceUID"),
                    batch_id: field("batchID"),
                    scheduled_time: None,
                };
                let local_aet = current(&self.snapshot)
                    .exporter(&request.exporter_id)
                    .and_then(|e| e.ae_title.clone());
                self.records
                    .insert_record(RecordInit {
                        task: NewTask {
                            request,
                            device_name: current(&self.snapshot).device_name.clone(),
                            queue: queue.to_string(),
                            local_aet,
                        },
                        status: Status::Failed,
                        message_id: message_id.clone(),
                        failure: Some((
                            format!("Message rejected and moved to {queue}.dlq: {reason}"),
                            reason,
                        )),
                    })
                    .await?;
            }
        }
        let mut p = delivery.properties.clone();
        if p.message_id().is_none() {
            p = p.with_message_id(message_id.as_str().into());
        }
        self.publish_raw(queue, &format!("{queue}.dlq"), &delivery.data, p)
            .await?;
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(broker)?;
        Ok(())
    }

    /// Looks at one delivery: returns the task to run, or `None` when the
    /// message was dealt with here.
    async fn take(
        &self,
        queue: &str,
        d: lapin::message::Delivery,
        hold: &(dyn Fn() -> Hold + Send + Sync),
    ) -> Result<Option<ExportTask>, QueueError> {
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string());
        // A message of a task deleted or rescheduled since (a rescheduled
        // task travels in a new message).
        if let Some(m) = &message_id
            && self.records.is_retired(m).await?
        {
            tracing::info!(message = %m, "message of a deleted or rescheduled task acknowledged without running");
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker)?;
            return Ok(None);
        }
        let existing = match &message_id {
            Some(m) => self.records.by_message_id(m).await?,
            None => None,
        };
        if let Some(t) = &existing
            && t.status.is_done()
        {
            tracing::info!(task = %t.task_id, status = %t.status, "message of an ended task acknowledged without running");
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker)?;
            return Ok(None);
        }
        let snap = current(&self.snapshot);
        let parsed = serde_json::from_slice::<TaskRequest>(&d.data)
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
            });
        let request = match parsed {
            Ok(r) => r,
            Err(reason) => {
                self.reject(queue, &d, existing, reason).await?;
                return Ok(None);
            }
        };
        let message_id = message_id.unwrap_or_else(new_message_id);
        let record = match existing {
            Some(t) => t,
            None => {
                let local_aet = snap
                    .exporter(&request.exporter_id)
                    .and_then(|e| e.ae_title.clone());
                self.records
                    .insert_record(RecordInit {
                        task: NewTask {
                            request: request.clone(),
                            device_name: snap.device_name.clone(),
                            queue: queue.to_string(),
                            local_aet,
                        },
                        status: Status::Scheduled,
                        message_id: message_id.clone(),
                        failure: None,
                    })
                    .await?
            }
        };
        // Held by the exporter's window, or not yet due: back in a minute
        // (or when due, if sooner).
        let wait = if hold().exporters.contains(&request.exporter_id) {
            Some(HOLD_DELAY)
        } else {
            request
                .scheduled_time
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .filter(|d| !d.is_zero())
                .map(|d| d.min(HOLD_DELAY))
        };
        if let Some(wait) = wait {
            self.publish_raw(
                queue,
                &format!("{queue}.hold"),
                &d.data,
                props(&message_id, Some(wait)),
            )
            .await?;
            self.records.unstart_record(&record.task_id).await?;
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker)?;
            return Ok(None);
        }
        let t = self.records.start_record(&record.task_id).await?;
        if t.status.is_done() {
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker)?;
            return Ok(None);
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                t.task_id.clone(),
                Pending {
                    acker: d.acker,
                    body: d.data,
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
                    let _ = p
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                    return Ok(t);
                }
            }
            if let Err(e) = p.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(task = %task_id, error = %e, "cannot acknowledge the message; it will be delivered again");
            }
            Ok(t)
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
            mask_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:****@127.0.0.1:5672/%2f"
        );
        assert_eq!(mask_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert!(!mask_url("amqps://u:p@ss@h/v").contains("p@ss"));
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
