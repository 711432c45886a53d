//! `kind = "s3"`: an archive in S3-compatible object storage (AWS S3, Wasabi, MinIO, …).
//!
//! A delivery is one batch of the sink's queue, up to `max_object_bytes` of queued events or
//! `max_object_age` after its oldest page was queued (the drain's take limits and
//! `batch_max_age`: nothing is buffered outside the durable queue). The batch is split by
//! partition — the [`Layout`] — and each part becomes one object, encoded by the
//! [`ObjectFormat`]. The batch leaves the queue only once S3 has confirmed every object of it
//! (the drain's ack follows `deliver`).
//!
//! Idempotent: an object's name comes from its first event (its time, and a hash of its
//! source and id). A batch retried after a failure or a crash starts with the same events
//! (the queue is taken in order from its oldest page, and holds at least what it held), so each
//! of its objects has the same key and is overwritten with the same events or more — never a
//! second copy beside the first. A partition whose first event is new gets a new key.
//!
//! Object formats and layouts: [`ObjectFormat`] (its name, extension, content type, `encode`
//! and `finish`): `ndjson_gzip` and `parquet`; [`Layout`] (which partition an event goes to,
//! and the key of a partition's object): `partitioned` and `security_lake` (one OCSF class per
//! custom source, each object a Parquet file of one class).
//!
//! Objects larger than `part_bytes` go up as a multipart upload, aborted if it fails. 503
//! SlowDown, 500, 429 and transport errors are retried with the agent's backoff (unlimited in
//! the daemon, `retry_max_attempts` in `--once`); 403 and 404 (NoSuchBucket) are refusals
//! naming the bucket and S3's error code.

use std::collections::HashMap;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub mod client;
pub mod config;
pub mod creds;
pub mod sigv4;

pub use config::{S3Config, S3Kind};

use super::{Probe, Sink, SinkError};
use crate::encodings::parquet::{class_by_uid, ocsf_class, Parquet};
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::sinks::http::client::{build_client_with_ca, delivery_retry, on_retry};
use crate::BoxFuture;
use client::{Failure, S3};

/// How an object's bytes are made from its events: `encode` on the async thread, with the
/// events borrowed (write what the object needs of them), then `finish` on owned bytes off it
/// (compression; a Parquet variant may build its file there from what `encode` wrote). A new
/// variant adds its name to [`ObjectFormat::NAMES`] and `by_name`, and an arm to each method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    /// One record per line in the sink's `format`, gzip-compressed (`.ndjson.gz`).
    NdjsonGzip,
    /// One Parquet file (`.parquet`, zstd) of the sink's `format` under its typed schema
    /// ([`crate::encodings::parquet`]), records sorted by time.
    Parquet,
}

impl ObjectFormat {
    /// Every name `object_format` takes.
    pub const NAMES: &'static [&'static str] = &["ndjson_gzip", "parquet"];

    pub fn by_name(name: &str) -> Option<ObjectFormat> {
        match name {
            "ndjson_gzip" => Some(ObjectFormat::NdjsonGzip),
            "parquet" => Some(ObjectFormat::Parquet),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectFormat::NdjsonGzip => "ndjson_gzip",
            ObjectFormat::Parquet => "parquet",
        }
    }

    /// The end of an object's name.
    pub fn extension(self) -> &'static str {
        match self {
            ObjectFormat::NdjsonGzip => ".ndjson.gz",
            ObjectFormat::Parquet => ".parquet",
        }
    }

    /// The object's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            ObjectFormat::NdjsonGzip => "application/gzip",
            ObjectFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The object's content before [`ObjectFormat::finish`]: its records, one a line (for
    /// Parquet, as `schema` decodes them, sorted by time).
    pub fn encode(self, writer: &Writer, schema: Option<&Parquet>, events: &[&Event]) -> Vec<u8> {
        match (self, schema) {
            (ObjectFormat::Parquet, Some(p)) => {
                p.records(events.iter().copied(), writer.include_raw)
            }
            _ => {
                let mut lines = Vec::with_capacity(events.len() * 512);
                for e in events {
                    writer.line(e, &mut lines);
                }
                lines
            }
        }
    }

    /// The object's bytes from what [`ObjectFormat::encode`] made: compressed (a Parquet file
    /// under `schema`). CPU work on owned bytes, run off the async thread (the agent's runtime
    /// has one).
    pub fn finish(self, encoded: Vec<u8>, schema: Option<&Parquet>) -> std::io::Result<Vec<u8>> {
        match (self, schema) {
            (ObjectFormat::NdjsonGzip, _) => crate::sinks::http::client::gzip(&encoded),
            (ObjectFormat::Parquet, Some(p)) => p.file(&encoded).map_err(std::io::Error::other),
            (ObjectFormat::Parquet, None) => Err(std::io::Error::other("parquet without a schema")),
        }
    }
}

/// Which object an event goes to, and what the object is called. A new layout (Security
/// Lake's `ext/{source}/region=…/accountId=…/eventDay=…/`) is a variant with its own
/// `partition` (any string that groups the events of one object) and `key`; the key must stay a
/// function of the partition and the object's first event, which is what makes a retried batch
/// overwrite its objects rather than double them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `{prefix}{source}/dt=YYYY-MM-DD/hour=HH/{name}`, by the event's UTC time (Hive-style
    /// partitions, which Athena, Spark and Trino read as columns).
    Partitioned,
    /// Amazon Security Lake's custom sources: one OCSF class per source,
    /// `ext/{custom_source}/region={region}/accountId={account_id}/eventDay=YYYYMMDD/{name}`,
    /// by the event's UTC day.
    SecurityLake(SecurityLake),
}

/// What `layout = "security_lake"` needs besides the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityLake {
    /// The region of the custom sources (the sink's `region`).
    pub region: String,
    /// `account_id`: the AWS account (or the external id) the custom sources were made for.
    pub account_id: String,
    /// The custom source of each OCSF class the OCSF encoder emits, `(class_uid, name)`.
    pub sources: Vec<(u32, String)>,
}

/// The custom source of each OCSF class when `security_lake_sources` does not name it.
pub const SECURITY_LAKE_SOURCES: [(u32, &str); 6] = [
    (3001, "auditship-account-change"),
    (3002, "auditship-authentication"),
    (3004, "auditship-entity-management"),
    (3005, "auditship-user-access"),
    (6003, "auditship-api-activity"),
    (6005, "auditship-datastore-activity"),
];

impl SecurityLake {
    /// The custom source of `e`'s OCSF class.
    fn source(&self, e: &Event) -> &str {
        let uid = crate::encodings::parquet::ocsf_class(e).uid();
        self.sources
            .iter()
            .find(|(c, _)| *c == uid)
            .map(|(_, n)| n.as_str())
            .expect("a source for every class the encoder emits")
    }
}

impl Layout {
    /// The partition of an event: the part of its object's key after the prefix and before the
    /// object's name.
    pub fn partition(&self, e: &Event) -> String {
        let t = crate::timefmt::rfc3339_ms(e.time);
        match self {
            // YYYY-MM-DDTHH:…
            Layout::Partitioned => format!("{}/dt={}/hour={}/", e.source, &t[..10], &t[11..13]),
            Layout::SecurityLake(lake) => format!(
                "ext/{}/region={}/accountId={}/eventDay={}{}{}/",
                lake.source(e),
                lake.region,
                lake.account_id,
                &t[..4],
                &t[5..7],
                &t[8..10]
            ),
        }
    }

    /// The key of the object of `partition` whose first event is `first`: the same for the
    /// same first event, in this process or the next.
    pub fn key(
        &self,
        prefix: &str,
        partition: &str,
        first: &Event,
        format: ObjectFormat,
    ) -> String {
        match self {
            Layout::Partitioned | Layout::SecurityLake(_) => {
                let mut h = blake3::Hasher::new();
                h.update(first.source.as_bytes());
                h.update(&[0]);
                h.update(first.id().as_bytes());
                let hash = h.finalize().to_hex();
                let t = crate::timefmt::rfc3339_ms(first.time);
                // 2024-10-18T14:10:04.123Z → 20241018T141004Z
                let stamp: String = t[..19].chars().filter(|c| *c != '-' && *c != ':').collect();
                format!(
                    "{prefix}{partition}{stamp}Z-{}{}",
                    &hash.as_str()[..16],
                    format.extension()
                )
            }
        }
    }
}

/// An S3 sink.
pub struct S3Sink {
    name: String,
    s3: S3,
    prefix: String,
    format: ObjectFormat,
    layout: Layout,
    writer: Writer,
    /// `object_format = "parquet"`: the schema of the sink's `format` (OCSF's of all classes),
    /// and for Security Lake that of each class.
    parquet: Option<Parquet>,
    classes: Vec<(u32, Parquet)>,
    part_bytes: usize,
    retry: RetryConfig,
    health: SinkHealth,
}

/// One object of a batch.
struct Object<'e> {
    key: String,
    events: Vec<&'e Event>,
}

impl S3Sink {
    pub fn new(
        name: &str,
        cfg: &S3Config,
        writer: Writer,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<S3Sink, SinkError> {
        let client = build_client_with_ca(name, cfg.timeout, &cfg.ca_file)?;
        let chain = creds::Chain::new(
            cfg.base.clone(),
            cfg.assume.clone(),
            cfg.sts.clone(),
            cfg.region.clone(),
            client.clone(),
        );
        tracing::info!(sink = %name, bucket = %cfg.bucket, prefix = %cfg.prefix, region = %cfg.region,
            endpoint = %crate::sinks::http::client::endpoint(&cfg.endpoint),
            credentials = %chain.describe(), object_format = cfg.object_format.name(),
            format = writer.format.name(), "s3 sink ready");
        Ok(S3Sink {
            name: name.to_string(),
            s3: S3::new(
                cfg.bucket.clone(),
                cfg.endpoint.clone(),
                cfg.path_style,
                cfg.region.clone(),
                client,
                chain,
            ),
            prefix: cfg.prefix.clone(),
            format: cfg.object_format,
            layout: cfg.layout.clone(),
            parquet: (cfg.object_format == ObjectFormat::Parquet)
                .then(|| Parquet::for_format(crate::sources::SIEM_TABLES, writer.format.name()))
                .flatten(),
            classes: match &cfg.layout {
                Layout::SecurityLake(lake) => lake
                    .sources
                    .iter()
                    .filter_map(|(uid, _)| {
                        Some((
                            *uid,
                            Parquet::ocsf_class(crate::sources::SIEM_TABLES, class_by_uid(*uid)?),
                        ))
                    })
                    .collect(),
                Layout::Partitioned => Vec::new(),
            },
            writer,
            part_bytes: cfg.part_bytes,
            retry: delivery_retry(retry, once),
            health: SinkHealth::default(),
        })
    }

    /// The batch's objects: its events by partition, in queue order, each object named after
    /// its first event.
    fn objects<'e>(&self, events: &'e [Event]) -> Vec<Object<'e>> {
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut parts: Vec<(String, Vec<&'e Event>)> = Vec::new();
        for e in events {
            let p = self.layout.partition(e);
            match at.get(&p) {
                Some(&i) => parts[i].1.push(e),
                None => {
                    at.insert(p.clone(), parts.len());
                    parts.push((p, vec![e]));
                }
            }
        }
        parts
            .into_iter()
            .map(|(p, events)| Object {
                key: self.layout.key(&self.prefix, &p, events[0], self.format),
                events,
            })
            .collect()
    }

    /// The Parquet schema of an object: its OCSF class's under Security Lake's layout (every
    /// object holds one class), else the sink's.
    fn schema(&self, o: &Object<'_>) -> Option<&Parquet> {
        if self.format != ObjectFormat::Parquet {
            return None;
        }
        match self.layout {
            Layout::SecurityLake(_) => {
                let uid = ocsf_class(o.events[0]).uid();
                self.classes.iter().find(|(c, _)| *c == uid).map(|(_, p)| p)
            }
            Layout::Partitioned => self.parquet.as_ref(),
        }
    }

    /// Runs `op` with the agent's backoff; how it ended, as the drain wants it.
    async fn retried<T, F, Fut>(
        &self,
        what: &str,
        key: &str,
        cancel: &CancellationToken,
        op: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let name = self.name.as_str();
        match retry::retry(
            &self.retry,
            cancel,
            on_retry::<Failure>(name, &self.health),
            op,
        )
        .await
        {
            Ok(t) => Ok(t),
            Err(Gave::Cancelled) => Err(SinkError::Cancelled {
                sink: self.name.clone(),
            }),
            Err(Gave::Up(e)) => Err(self.gave_up(what, key, e)),
        }
    }

    /// The error a call ends with once its retries stopped on `e`.
    fn gave_up(&self, what: &str, key: &str, e: Failure) -> SinkError {
        let bucket = &self.s3.bucket;
        if matches!(e.verdict(), Verdict::Retry { .. }) {
            let msg = format!(
                "{what} s3://{bucket}/{key}: gave up after {} attempts: {e}",
                self.retry.max_attempts.unwrap_or(0)
            );
            tracing::error!(sink = %self.name, error = %msg,
                "S3 could not be reached; nothing was committed: the next run writes the batch again");
            return SinkError::Io {
                sink: self.name.clone(),
                msg,
            };
        }
        let (status, hint) = match &e {
            Failure::Status { status, code, .. } => (
                *status,
                match (*status, code.as_str()) {
                    (404, "NoSuchBucket") => ": the bucket does not exist (check bucket, region and endpoint)",
                    (403, _) => ": the identity may not put objects in the bucket (s3:PutObject), or its keys are wrong",
                    (301, _) | (400, "AuthorizationHeaderMalformed") => ": the bucket is in another region (check region)",
                    _ => "",
                },
            ),
            Failure::CredentialsRefused(_) => (403, ": check the credentials, role_arn and external_id"),
            _ => (0, ""),
        };
        let detail = format!("bucket {bucket}: {what} {key}: {e}{hint}");
        tracing::error!(sink = %self.name, status, error = %detail,
            "S3 refused the batch; not retried. Nothing was committed");
        SinkError::Rejected {
            sink: self.name.clone(),
            status,
            detail,
        }
    }

    /// Writes one object whole: one PutObject, or a multipart upload when it is larger than a
    /// part (aborted if it fails, so no part is left behind).
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let ct = self.format.content_type();
        if body.len() <= self.part_bytes {
            return self
                .retried("PutObject", key, cancel, || {
                    self.s3.put_object(key, body.clone(), ct)
                })
                .await;
        }
        let id = self
            .retried("CreateMultipartUpload", key, cancel, || {
                self.s3.create_multipart(key, ct)
            })
            .await?;
        let done = self.parts(key, &id, &body, cancel).await;
        if done.is_err() {
            // Best effort, a few attempts, even at shutdown: an upload left open keeps its
            // parts (billed, invisible) until the bucket's lifecycle rule removes them.
            let policy = RetryConfig {
                max_attempts: Some(3),
                ..self.retry.clone()
            };
            let never = CancellationToken::new();
            let name = self.name.as_str();
            match retry::retry(
                &policy,
                &never,
                on_retry::<Failure>(name, &self.health),
                || self.s3.abort_multipart(key, &id),
            )
            .await
            {
                Ok(()) => tracing::info!(sink = %name, key, "multipart upload aborted"),
                Err(_) => tracing::warn!(sink = %name, key, upload_id = %id,
                    "could not abort the multipart upload: its parts stay until the bucket's AbortIncompleteMultipartUpload lifecycle rule removes them"),
            }
        }
        done
    }

    /// The parts of a multipart upload, then its completion.
    async fn parts(
        &self,
        key: &str,
        id: &str,
        body: &Bytes,
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let mut etags = Vec::new();
        for (i, start) in (0..body.len()).step_by(self.part_bytes).enumerate() {
            let part = body.slice(start..(start + self.part_bytes).min(body.len()));
            let n = i as u32 + 1;
            let etag = self
                .retried("UploadPart", key, cancel, || {
                    self.s3.upload_part(key, id, n, part.clone())
                })
                .await?;
            etags.push((n, etag));
        }
        let total = body.len() as u64;
        let mut attempted = false;
        self.retried("CompleteMultipartUpload", key, cancel, || {
            let again = std::mem::replace(&mut attempted, true);
            let etags = &etags;
            async move {
                match self.s3.complete_multipart(key, id, etags).await {
                    // An attempt whose answer was lost completed the upload: the object is there.
                    Err(Failure::Status { code, .. }) if again && code == "NoSuchUpload" => {
                        match self.s3.head_object(key).await? {
                            Some(n) if n == total => Ok(()),
                            _ => Err(Failure::Body(
                                "the multipart upload is gone and the object is not complete"
                                    .into(),
                            )),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    /// `check --connect`: a zero-byte probe object put, then deleted. Only an object the probe
    /// wrote is deleted: its name is new (process, time, a random number) and its put is
    /// conditional (`If-None-Match: *`), so an object already there is neither overwritten nor
    /// deleted.
    pub async fn probe(&self) -> Probe {
        let no = |said: String| Probe { ok: false, said };
        let bucket = &self.s3.bucket;
        if let Err(e) = self.s3.creds.get().await {
            return no(format!("credentials ({}): {e}", self.s3.creds.describe()));
        }
        let key = format!(
            "{}.auditship-probe-{}-{}-{:016x}",
            self.prefix,
            std::process::id(),
            crate::timefmt::now(),
            fastrand::u64(..)
        );
        match self
            .s3
            .put_new_object(&key, Bytes::new(), "application/octet-stream")
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return no(format!(
                    "bucket {bucket} already holds an object at {key}, which the probe did not write: left as it is; run check again"
                ))
            }
            Err(Failure::Transport(t)) => return no(format!("unreachable ({t})")),
            Err(Failure::Status { status, code, message, .. }) => {
                return no(match (status, code.as_str()) {
                    (404, "NoSuchBucket") => format!("bucket {bucket} does not exist (HTTP 404 NoSuchBucket: {message})"),
                    (403, _) => format!("put refused: the identity ({}) may not put objects in bucket {bucket} (HTTP 403 {code}: {message})", self.s3.creds.describe()),
                    _ => format!("put of a probe object in bucket {bucket} failed (HTTP {status} {code}: {message})"),
                })
            }
            Err(e) => return no(format!("put of a probe object in bucket {bucket}: {e}")),
        }
        match self.s3.delete_object(&key).await {
            Ok(()) => Probe {
                ok: true,
                said: format!(
                    "reachable (bucket {bucket} took a probe object, deleted again; credentials: {})",
                    self.s3.creds.describe()
                ),
            },
            Err(e) => no(format!(
                "bucket {bucket} took a probe object but its delete failed ({e}): remove s3://{bucket}/{key} by hand"
            )),
        }
    }
}

impl Sink for S3Sink {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for o in self.objects(events) {
                let schema = self.schema(&o).cloned();
                let encoded = self.format.encode(&self.writer, schema.as_ref(), &o.events);
                let format = self.format;
                let body =
                    tokio::task::spawn_blocking(move || format.finish(encoded, schema.as_ref()))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)
                        .map_err(|e| SinkError::Io {
                            sink: self.name.clone(),
                            msg: format!("encoding {}: {e}", o.key),
                        })?;
                let bytes = body.len();
                self.put(&o.key, Bytes::from(body), cancel).await?;
                tracing::debug!(sink = %self.name, key = %o.key, events = o.events.len(), bytes, "object written");
            }
            Ok(())
        })
    }

    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, id: &str, time: &str) -> Event {
        let t = crate::timefmt::parse_rfc3339(time).unwrap();
        Event::standalone(
            source,
            "wasabi_air",
            "Wasabi",
            t,
            &format!(r#"{{"id":"{id}"}}"#),
        )
    }

    /// Objects by source and hour, each named after its first event: a batch taken again
    /// with more events after it names the same objects.
    #[test]
    fn objects_are_partitioned_and_named_after_their_first_event() {
        let sink = S3Sink::new(
            "arch",
            &S3Config {
                bucket: "b".into(),
                prefix: "audit/".into(),
                region: "us-east-1".into(),
                endpoint: url::Url::parse("http://127.0.0.1:9").unwrap(),
                path_style: true,
                base: creds::Base::Static {
                    access_key_id: "AKIA".into(),
                    secret_access_key: crate::settings::Secret::new("s"),
                    session_token: None,
                    from: "config",
                },
                assume: None,
                sts: url::Url::parse("http://127.0.0.1:9").unwrap(),
                object_format: ObjectFormat::NdjsonGzip,
                layout: Layout::Partitioned,
                max_object_bytes: 1 << 20,
                max_object_age: std::time::Duration::from_secs(1),
                part_bytes: 5 << 20,
                timeout: std::time::Duration::from_secs(1),
                ca_file: None,
            },
            Writer::default(),
            &RetryConfig {
                initial: std::time::Duration::from_millis(1),
                max_delay: std::time::Duration::from_millis(1),
                max_attempts: Some(1),
            },
            true,
        )
        .unwrap();
        let batch = vec![
            ev("air", "a1", "2026-01-02T03:04:05.678Z"),
            ev("domo", "d1", "2026-01-02T03:59:59Z"),
            ev("air", "a2", "2026-01-02T04:00:00Z"),
            ev("air", "a3", "2026-01-02T03:30:00Z"),
        ];
        let objects = sink.objects(&batch);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(
            keys[0].starts_with("audit/air/dt=2026-01-02/hour=03/20260102T030405Z-"),
            "{keys:?}"
        );
        assert!(keys[0].ends_with(".ndjson.gz"));
        assert!(
            keys[1].starts_with("audit/domo/dt=2026-01-02/hour=03/"),
            "{keys:?}"
        );
        assert!(
            keys[2].starts_with("audit/air/dt=2026-01-02/hour=04/"),
            "{keys:?}"
        );
        assert_eq!(objects[0].events.len(), 2);
        let mut more = batch.clone();
        more.push(ev("air", "a4", "2026-01-02T03:31:00Z"));
        let again: Vec<String> = sink.objects(&more).into_iter().map(|o| o.key).collect();
        assert_eq!(again, keys);
        // Another first event: another object.
        let other = sink.objects(&batch[2..]);
        assert_eq!(other[0].key, keys[2]);
        assert_ne!(other[1].key, keys[0]);
    }

    #[test]
    fn ndjson_gzip_objects_hold_one_record_a_line() {
        let batch = [
            ev("air", "a1", "2026-01-02T03:04:05Z"),
            ev("air", "a2", "2026-01-02T03:04:06Z"),
        ];
        let refs: Vec<&Event> = batch.iter().collect();
        let f = ObjectFormat::NdjsonGzip;
        let gz = f
            .finish(
                f.encode(
                    &Writer {
                        include_raw: true,
                        ..Writer::default()
                    },
                    None,
                    &refs,
                ),
                None,
            )
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["raw"]["id"], "a2");
    }
}
