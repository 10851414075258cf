//! stow-exporter: sends DICOM objects from an archive to remote DICOMweb
//! servers over STOW-RS, configured the way dcm4chee-arc is.
//!
//! # Layout
//!
//! Data flows one way, each module knowing only the ones below it:
//!
//! ```text
//! config (LDIF/LDAP entries -> immutable Snapshot)
//!    |
//! queue (durable export tasks)  ->  export (executor: one task at a time)
//!                                        |            |
//!                                   archive       stow (STOW-RS client)
//!                               (stored objects)       |
//!                                                 remote server / stowrsd
//! ```
//!
//! - [`config`]: LDIF parsing, the raw entry model shared with the LDAP
//!   loader, validation into a [`config::Snapshot`], and the one owner of
//!   the running snapshot, its reload and `--watch`: [`config::LiveConfig`].
//! - [`archive`]: the storage directory and its index; `import`. The
//!   index is behind [`archive::ArchiveIndex`] (`archive/index.rs`: the
//!   seam and its contract; paths kept relative to the storage
//!   directory): the embedded [`archive::SqliteIndex`]
//!   (`archive/sqlite.rs`), or with `--database` the shared
//!   [`archive::PgIndex`] (`archive/postgres.rs`); export, the QIDO-style
//!   trigger and the CLI use [`archive::Archive`] only.
//! - [`task`]: the export task record with dcm4chee's JSON field names.
//! - [`outcome`]: the result vocabulary of an export (per-instance
//!   results, the typed kind of each failure, retry advice, a task's
//!   outcome), below `stow`, `export`, `queue` and `metrics`.
//! - [`queue`]: durable tasks in two parts: [`queue::TaskStore`]
//!   (`queue/store.rs`: the records and per-instance results, the seam a
//!   PostgreSQL store implements) and [`queue::TaskDelivery`] (moving
//!   tasks to the workers: embedded or RabbitMQ), both built by
//!   [`queue::open`]; `queue/ledger.rs` the bookkeeping a broker-backed
//!   delivery keeps in the store ([`queue::DeliveryLedger`]);
//!   `queue/embedded.rs` holds the SQLite store and the embedded delivery,
//!   `queue/postgres.rs` the PostgreSQL store ([`queue::PgStore`], one
//!   database several processes share), `queue/pg_delivery.rs` the
//!   delivery over it ([`queue::PgQueue`]: row-locked takes, so several
//!   `serve` processes of one device share its tasks, woken by
//!   `LISTEN`/`NOTIFY`, with heartbeats and the takeover of a silent
//!   instance's tasks; `serve --database` without `--queue`),
//!   `queue/amqp.rs` the broker-backed delivery. Both stores version
//!   their schema and refuse a newer one.
//! - [`stow`]: the STOW-RS client: multipart framing, requests, responses.
//! - [`export`]: runs one task: match instances, send, compute the outcome;
//!   the queue's retry policy.
//! - [`schedule`]: `dcmSchedule` windows (dcm4chee's grammar).
//! - [`conditions`]: dcm4chee's match conditions of export rules
//!   (`Keyword=regex`, tags, negation, sequence paths, value positions,
//!   the sending and receiving parties), below `config`.
//! - [`stowrsd`]: the built-in STOW-RS receiver.
//! - [`api`]: the control REST API with dcm4chee's paths. It sees the
//!   live configuration, the task records ([`queue::TaskStore`]), a
//!   [`queue::Submit`] handle (publish, reschedule), the archive's read
//!   side and a [`cancel::CancelHandle`], never the worker loops or the
//!   task delivery; readiness asks the backend's own health probe.
//! - [`http_server`]: the accept loop both listeners share: header and idle
//!   timeouts, a connection limit, graceful shutdown.
//! - [`app`]: wires it all together for `serve`.
//! - [`redact`]: masking credentials in URLs for messages.
//! - [`text`]: cutting outside text to a bound before it goes into a
//!   message.
//! - [`shortage`]: recognising a shortage of descriptors or memory in an
//!   error (retryable, never a final FAILED).
//! - `fuzzing`: entry points of the fuzz targets (`fuzz/`,
//!   `tests/fuzz_targets.rs`), one per parser of untrusted input.
//! - [`transfer_syntax`]: transfer syntax UIDs and dcm4che's keywords,
//!   below `config` and `transcode`.
//! - [`token`]: bearer tokens: reading them (file or environment) for
//!   the control API, the `tasks` client and the receiver, the
//!   constant-time check and the middleware that requires one.
//! - [`metrics`]: the metrics of one application on one prometheus-client
//!   `Registry`, passed explicitly; the page's JSON summary.
//! - [`db`]: the SQLite connection, kept off the async runtime (the
//!   PostgreSQL store's connections are async already: its own pool).
//! - [`synth`]: synthetic DICOM objects for tests and benchmarks.
//! - [`transcode`]: transfer syntax choice and decompression.
//! - [`cancel`]: the [`cancel::CancelHandle`] that stops running exports
//!   by task ID, below `export` and `api`.
//! - [`cluster`]: signals between the instances sharing a PostgreSQL
//!   database (cancel a task running elsewhere, reload everywhere), over
//!   LISTEN/NOTIFY; above `cancel` and `config`, below `api` and `app`.
//! - [`cli`]: the binary's commands, one function each, and their
//!   arguments; `main.rs` only parses, sets up logging and the runtime,
//!   and calls [`cli::run`].

pub mod api;
pub mod app;
pub mod archive;
pub mod cancel;
pub mod cli;
pub mod cluster;
pub mod conditions;
pub mod config;
pub mod db;
pub mod export;
#[doc(hidden)]
pub mod forward;
pub mod fuzzing;
pub mod http_server;
pub mod metrics;
pub mod outcome;
pub mod queue;
pub mod redact;
pub mod schedule;
pub mod scp;
pub mod shortage;
pub mod stow;
pub mod stowrsd;
pub mod synth;
pub mod task;
pub mod text;
pub mod token;
pub mod transcode;
pub mod transfer_syntax;
