//! Helpers of the RabbitMQ tests: a queue and exporter per test, a plain
//! AMQP client as another system would use.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::AET;

pub const DEVICE: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// The broker the tests use: 127.0.0.1:5672 unless STOW_TEST_AMQP_URL says otherwise.
pub fn amqp_url() -> String {
    std::env::var("STOW_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A queue (and an exporter `<queue>X` on it, to the stowrsd web app) of
/// this test alone.
pub struct TestQueue {
    pub name: String,
    pub exporter: String,
}

impl TestQueue {
    pub fn new() -> TestQueue {
        let name = format!("T{:016x}", rand::random::<u64>());
        TestQueue {
            exporter: format!("{name}X"),
            name,
        }
    }

    /// The LDIF adding the queue and the exporter; `queue_attrs` are more
    /// attribute lines of the queue (`dcmMaxTasksParallel` defaults to 1).
    pub fn ldif(&self, queue_attrs: &str) -> String {
        self.ldif_with(queue_attrs, "")
    }

    /// The same, with more attribute lines of the exporter. The shipped
    /// queues `Export` and `Export1` are paused (`dicomInstalled: FALSE`),
    /// so that a test neither declares nor consumes them on a shared broker.
    pub fn ldif_with(&self, queue_attrs: &str, exporter_attrs: &str) -> String {
        let mut paused = String::new();
        for shipped in ["Export", "Export1"] {
            paused.push_str(&format!(
                "dn: dcmQueueName={shipped},{DEVICE}\nchangetype: modify\n\
                 add: dicomInstalled\ndicomInstalled: FALSE\n-\n\n"
            ));
        }
        paused
            + &format!(
                "dn: dcmQueueName={q},{DEVICE}\nobjectClass: dcmQueue\ndcmQueueName: {q}\n\
             {queue_attrs}\n\
             dn: dcmExporterID={e},{DEVICE}\nobjectClass: dcmExporter\ndcmExporterID: {e}\n\
             dcmURI: stow:stowrsd\ndicomAETitle: {AET}\ndcmQueueName: {q}\n{exporter_attrs}\n",
                q = self.name,
                e = self.exporter
            )
    }

    /// Deletes the queue and the ones the service declared next to it.
    pub async fn delete(&self, ch: &Channel) {
        for suffix in ["", ".retry", ".hold", ".dlq"] {
            let _ = ch
                .queue_delete(
                    format!("{}{suffix}", self.name).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}

/// A plain AMQP client, as another system would use: confirm mode on.
pub async fn client(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ answers at {url} (scripts/rabbitmq.sh starts one): {e}")
        });
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// Declares the durable queue (as the service does) and publishes `body`
/// persistently, with a message ID when given, waiting for the confirm.
pub async fn publish(ch: &Channel, queue: &str, body: &[u8], message_id: Option<&str>) {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    let c = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_ack());
}
