//! `kind = "kafka"`: each event one record of a topic, its value the event in the sink's
//! `format` (native JSON, OCSF, ECS, CEF), its key the event's id or its source's name.
//!
//! The client is librdkafka (through `rdkafka`, built from source and linked statically with
//! its own OpenSSL, zlib and zstd), as an idempotent producer with `acks = all`: a record is
//! written once per partition even when librdkafka resends it, and counts as delivered only
//! once every in-sync replica has it. `deliver` hands librdkafka the whole batch, then awaits
//! every record's delivery report; a batch leaves the sink's queue only once the broker
//! acknowledged all of it. Any failed record fails the delivery (after every other record of
//! the batch has its report, so nothing of it is still in flight) and the whole batch is
//! produced again with the agent's backoff (unlimited in the daemon, `retry_max_attempts` in
//! `--once`): records of the batch that had landed are then on the topic twice, each with its
//! stable `id`. A broker down for a while is retried inside librdkafka for up to
//! `message_timeout` (librdkafka's `message.timeout.ms`), then by the agent's backoff.
//!
//! A fatal producer error (the idempotent producer's sequence broken beyond repair) drops the
//! producer; the next attempt makes a new one.
//!
//! A record larger than `message_max_bytes` (librdkafka's `message.max.bytes`, counted as
//! librdkafka counts it: key, value and [`RECORD_OVERHEAD`]) is refused before anything of its
//! batch is produced: a content refusal ([`SinkError::Rejected`], 413) naming its source and
//! event id, so the drain holds its page and the others go on. A record the brokers refuse as
//! too large (`MESSAGE_TOO_LARGE`: their `max.message.bytes` is below the sink's) is refused
//! the same way, once the batch's other records have their reports (those that landed are on
//! the topic, and are there again if the held page is sent after a restart).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;
use tokio_util::sync::CancellationToken;

pub mod config;

pub use config::{KafkaKind, KafkaSinkConfig, KeyBy, Sasl, SASL_MECHANISMS};

use super::{Probe, Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::BoxFuture;

/// librdkafka's most overhead of one record on the wire (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`),
/// which its size check adds to the key and value before comparing with `message.max.bytes`.
const RECORD_OVERHEAD: usize = 36;

/// How long `check --connect` waits for the brokers' metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka sink: the producer (made on first delivery, and again after a fatal error).
pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    writer: Writer,
    producer: Option<FutureProducer<Context>>,
    /// The agent's backoff: unlimited attempts in the daemon, `retry_max_attempts` in `--once`.
    retry: RetryConfig,
    /// Told of each failed attempt, so a delivery retried for long shows in `/readyz`.
    health: SinkHealth,
}

/// librdkafka's callbacks: its log lines go to `tracing`; its last client-wide error is kept
/// (for `check --connect`, which has no record to be told of it), but for "all brokers down"
/// after a more telling one.
#[derive(Clone, Default)]
pub struct Context {
    sink: Arc<str>,
    last_error: Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical => {
                tracing::error!(sink = %self.sink, facility = fac, "librdkafka: {msg}")
            }
            // Its errors are mostly a broker gone for a while, which delivery retries.
            L::Error | L::Warning => {
                tracing::warn!(sink = %self.sink, facility = fac, "librdkafka: {msg}")
            }
            L::Notice | L::Info => {
                tracing::info!(sink = %self.sink, facility = fac, "librdkafka: {msg}")
            }
            L::Debug => tracing::debug!(sink = %self.sink, facility = fac, "librdkafka: {msg}"),
        }
    }

    /// Most errors are logged by librdkafka too (`log`): said here only when debugging.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(sink = %self.sink, error = %error, "kafka client error: {reason}");
        if let Some(code) = error.rdkafka_error_code() {
            let mut last = self.last_error.lock().expect("not poisoned");
            // "All brokers down" follows the reason why: the reason is kept.
            if code != RDKafkaErrorCode::AllBrokersDown || last.is_none() {
                *last = Some((code, reason.to_string()));
            }
        }
    }
}

/// `check --connect`'s client is a producer that produces nothing: no delivery to be told of.
impl rdkafka::producer::ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Worth another attempt (a broker down, a timeout, a leader moving).
    #[error("{0}")]
    Transient(String),
    /// The same batch cannot succeed (a record larger than the broker takes, a topic we may not
    /// write to): retried all the same in the daemon by the sink's task, but said plainly.
    #[error("{0}")]
    Refused(String),
    /// The record at this index of the batch is larger than the producer or the brokers take.
    #[error("{msg}")]
    TooLarge { index: usize, msg: String },
}

impl Retryable for Failure {
    fn verdict(&self) -> Verdict {
        match self {
            Failure::Transient(_) => Verdict::Retry { after: None },
            Failure::Refused(_) | Failure::TooLarge { .. } => Verdict::Stop,
        }
    }
}

/// Whether a delivery error says the record is too large.
fn too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
    )
}

/// Whether a delivery error is one that retrying the same records cannot cure.
fn refused(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTopic
    )
}

/// The librdkafka configuration of a producer (or of `check --connect`'s client).
fn client_config(cfg: &KafkaSinkConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "auditship")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", cfg.compression)
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("message.max.bytes", cfg.message_max_bytes.to_string())
        .set("security.protocol", cfg.security_protocol());
    if let Some(tls) = &cfg.tls {
        // librdkafka's OpenSSL is built into the binary: its own default paths point at the
        // build directory, so the system's roots are found by probing the usual places.
        match &tls.ca_file {
            Some(p) => c.set("ssl.ca.location", p.to_string_lossy()),
            None => c.set("ssl.ca.location", "probe"),
        };
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            c.set("ssl.certificate.location", cert.to_string_lossy())
                .set("ssl.key.location", key.to_string_lossy());
        }
        if tls.insecure_skip_verify {
            c.set("enable.ssl.certificate.verification", "false")
                .set("ssl.endpoint.identification.algorithm", "none");
        }
    }
    if let Some(s) = &cfg.sasl {
        c.set("sasl.mechanism", s.mechanism)
            .set("sasl.username", &s.username)
            .set("sasl.password", s.password.expose());
    }
    c
}

/// A producer of `cfg`, its callbacks reporting as sink `name`.
fn producer(name: &str, cfg: &KafkaSinkConfig) -> Result<FutureProducer<Context>, String> {
    let cx = Context {
        sink: name.into(),
        ..Context::default()
    };
    client_config(cfg)
        .create_with_context(cx)
        .map_err(|e| format!("creating the Kafka producer: {e}"))
}

impl KafkaSink {
    /// Checks the producer can be made (its TLS files read); connects on first delivery.
    pub fn new(
        name: &str,
        cfg: &KafkaSinkConfig,
        writer: Writer,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<KafkaSink, SinkError> {
        if cfg.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(sink = %name,
                "insecure_skip_verify = true: the brokers' TLS certificates are NOT verified; anyone on \
                 the network path can impersonate them and read the events. Use ca_file instead");
        }
        let p = producer(name, cfg).map_err(|msg| SinkError::Io {
            sink: name.to_string(),
            msg,
        })?;
        tracing::info!(sink = %name, brokers = %cfg.brokers, topic = %cfg.topic,
            security_protocol = cfg.security_protocol(), compression = cfg.compression,
            format = writer.format.name(), "kafka sink ready");
        Ok(KafkaSink {
            name: name.to_string(),
            cfg: cfg.clone(),
            writer,
            producer: Some(p),
            retry: RetryConfig {
                max_attempts: if once { retry.max_attempts } else { None },
                ..retry.clone()
            },
            health: SinkHealth::default(),
        })
    }

    /// The refusal of a record too large: a content refusal (413) naming its source and event,
    /// so that the drain holds its page and delivers the others.
    fn too_large(&self, e: &Event, why: &str) -> SinkError {
        let detail = format!(
            "event {} of source {} is too large a record for topic {}: {why}; it is held in the \
             queue (not sent, not dropped): raise message_max_bytes (and the brokers' and topic's \
             max.message.bytes), or use a smaller format or include_raw = false",
            e.id(),
            e.source,
            self.cfg.topic
        );
        tracing::error!(sink = %self.name, source = %e.source, id = %e.id(), error = %detail,
            "a record is larger than the brokers take");
        SinkError::Rejected {
            sink: self.name.clone(),
            status: 413,
            detail,
        }
    }

    /// Each event's key and value.
    fn encode(&self, events: &[Event]) -> Vec<(Vec<u8>, Vec<u8>)> {
        events
            .iter()
            .map(|e| {
                let key = match self.cfg.key {
                    KeyBy::Id => e.id().as_bytes().to_vec(),
                    KeyBy::Source => e.source.as_bytes().to_vec(),
                };
                let mut value = Vec::new();
                self.writer.record(e, &mut value);
                (key, value)
            })
            .collect()
    }

    /// One attempt: every record handed to librdkafka, then every delivery report awaited.
    async fn attempt(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Failure> {
        if self.producer.is_none() {
            self.producer = Some(producer(&self.name, &self.cfg).map_err(Failure::Refused)?);
        }
        let p = self.producer.as_ref().expect("made above");
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(records.len());
        let mut failure = None;
        for (index, (key, value)) in records.iter().enumerate() {
            let mut record = FutureRecord::to(&self.cfg.topic)
                .key(key.as_slice())
                .payload(value.as_slice());
            loop {
                match p.send_result(record) {
                    Ok(f) => {
                        pending.push((index, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: let it send, then hand it the record again.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((KafkaError::MessageProduction(code), _)) if too_large(code) => {
                        failure = Some(Failure::TooLarge {
                            index,
                            msg: format!("librdkafka refused to produce it: {code}"),
                        });
                        break;
                    }
                    Err((e, _)) => {
                        failure = Some(Failure::Transient(format!("producing a record: {e}")));
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        // Every report is awaited, failed or not: nothing of this attempt stays in flight
        // when the next one produces the batch again.
        for (index, f) in pending {
            let err = match f.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            };
            // A record too large is said before any other failure: retrying cannot cure it.
            if failure.is_none() || err.rdkafka_error_code().is_some_and(too_large) {
                let msg = format!("a record was not acknowledged: {err}");
                failure = Some(match err.rdkafka_error_code() {
                    Some(code) if too_large(code) => Failure::TooLarge { index, msg },
                    Some(code) if refused(code) => Failure::Refused(msg),
                    _ => Failure::Transient(msg),
                });
            }
        }
        if let Some((code, reason)) = p.client().fatal_error() {
            tracing::error!(sink = %self.name, code = ?code, "the Kafka producer failed for good ({reason}); making a new one");
            self.producer = None;
            failure.get_or_insert(Failure::Transient(format!(
                "fatal producer error: {reason}"
            )));
        }
        match failure {
            None => Ok(()),
            Some(f) => Err(f),
        }
    }
}

impl Sink for KafkaSink {
    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let records = self.encode(events);
            // librdkafka's own size check, made before anything of the batch is produced.
            let max = self.cfg.message_max_bytes;
            if let Some(i) = records
                .iter()
                .position(|(k, v)| RECORD_OVERHEAD + k.len() + v.len() > max)
            {
                let (k, v) = &records[i];
                return Err(self.too_large(
                    &events[i],
                    &format!(
                        "{} bytes with its key and librdkafka's overhead, over message_max_bytes = {max}",
                        RECORD_OVERHEAD + k.len() + v.len()
                    ),
                ));
            }
            let name = self.name.clone();
            let health = self.health.clone();
            let retry_cfg = self.retry.clone();
            let this = tokio::sync::Mutex::new(&mut *self);
            let records = &records;
            let result = retry::retry(
                &retry_cfg,
                cancel,
                |e: &Failure, delay| {
                    metrics::retry("sink", &name);
                    health.failed(e);
                    tracing::warn!(sink = %name, error = %e, delay_ms = delay.as_millis() as u64,
                        "retrying delivery");
                },
                || async { this.lock().await.attempt(records).await },
            )
            .await;
            match result {
                Ok(()) => Ok(()),
                Err(Gave::Cancelled) => Err(SinkError::Cancelled { sink: name }),
                Err(Gave::Up(Failure::TooLarge { index, msg })) => {
                    Err(self.too_large(&events[index], &msg))
                }
                Err(Gave::Up(e)) => {
                    let msg = match e.verdict() {
                        Verdict::Retry { .. } => format!(
                            "gave up after {} attempts: {e}",
                            retry_cfg.max_attempts.unwrap_or(0)
                        ),
                        Verdict::Stop => e.to_string(),
                    };
                    tracing::error!(sink = %name, error = %msg,
                        "the Kafka brokers did not acknowledge the batch; nothing was committed: it is sent again");
                    Err(SinkError::Io { sink: name, msg })
                }
            }
        })
    }
}

/// `check --connect`: the brokers' metadata of the topic fetched (reachable), SASL refused
/// (auth refused), or neither (unreachable, with librdkafka's last error).
pub async fn probe(name: &str, cfg: &KafkaSinkConfig) -> Probe {
    let cx = Context {
        sink: name.into(),
        ..Context::default()
    };
    let errors = cx.last_error.clone();
    let client: Result<rdkafka::producer::BaseProducer<Context>, _> =
        client_config(cfg).create_with_context(cx);
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            return Probe {
                ok: false,
                said: format!("cannot make a Kafka client: {e}"),
            }
        }
    };
    let topic = cfg.topic.clone();
    // The brokers, and what they say of the topic (an error code, or its partitions).
    let fetched = tokio::task::spawn_blocking(move || {
        let fetched = client.client().fetch_metadata(Some(&topic), PROBE_TIMEOUT);
        // Serves the client's queued error events: a SASL refusal is told only there.
        client.poll(Duration::from_millis(100));
        fetched.map(|m| {
            let t = m.topics().first();
            let said = match t.and_then(|t| t.error()) {
                Some(e) => Err(RDKafkaErrorCode::from(e)),
                None => Ok(t.map_or(0, |t| t.partitions().len())),
            };
            (m.brokers().len(), said)
        })
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled));
    let last = errors.lock().expect("not poisoned").clone();
    match (fetched, last) {
        (Ok((n, Ok(partitions))), _) => Probe {
            ok: true,
            said: format!(
                "ok (metadata of {n} brokers fetched; topic {} has {partitions} partitions)",
                cfg.topic
            ),
        },
        (Ok((_, Err(e))), _) => Probe {
            ok: false,
            said: format!(
                "{} (brokers reachable; topic {}: {e})",
                if matches!(e, RDKafkaErrorCode::TopicAuthorizationFailed) {
                    "auth refused"
                } else {
                    "unusable topic"
                },
                cfg.topic
            ),
        },
        (Err(_), Some((RDKafkaErrorCode::Authentication, reason))) => Probe {
            ok: false,
            said: format!("auth refused by {}: {reason}", cfg.brokers),
        },
        (Err(e), last) => Probe {
            ok: false,
            said: format!(
                "unreachable: {}: {}",
                cfg.brokers,
                last.map_or_else(|| e.to_string(), |(_, reason)| reason)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_retrying_cannot_cure_is_refused() {
        assert!(refused(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(refused(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!refused(RDKafkaErrorCode::MessageTimedOut));
        assert!(!refused(RDKafkaErrorCode::NotLeaderForPartition));
        assert!(!refused(RDKafkaErrorCode::AllBrokersDown));
    }
}
