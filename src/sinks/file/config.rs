//! `kind = "file"`: its keys, their validation, and the plugin ([`FileKind`]).

use std::path::PathBuf;

use serde::Deserialize;

use super::FileSink;
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::state::SinkPosition;
use crate::BoxFuture;

/// `kind = "file"`.
pub struct FileKind;

/// The keys of `kind = "file"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The file events are appended to (relative to the config file's directory).
    path: Option<String>,
    /// fdatasync the file before each commit (default true).
    fsync: Option<bool>,
    /// Permissions of the file when the sink creates it, an octal string (default "0600":
    /// audit data is sensitive), whatever the umask.
    mode: Option<String>,
    /// Rotate the file once it holds this many bytes (default: never).
    rotate_max_bytes: Option<i64>,
    /// Rotated files kept besides the current one (default 7).
    rotate_keep: Option<i64>,
}

/// A validated `kind = "file"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub path: PathBuf,
    /// fdatasync the file before each commit, so a power loss cannot leave the state ahead of
    /// the file (default true).
    pub fsync: bool,
    /// Permissions the file is given when the sink creates it (default 0o600), rotated files
    /// included.
    pub mode: u32,
    /// Built-in rotation, if configured.
    pub rotate: Option<Rotate>,
}

/// The file sink's rotation: once the file holds `max_bytes` (checked after a commit), it is
/// renamed `PATH.N` (N its generation, counting up) and a new file is started; the oldest
/// rotated files beyond `keep` are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotate {
    /// Size at which the file is rotated (a page already written is never split).
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u64,
}

/// The largest `rotate_max_bytes`: a file sink's committed length has 40 bits in the state.
pub const ROTATE_MAX_BYTES_LIMIT: u64 = (1 << 40) - 1;

impl Destination for FileKind {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn title(&self) -> &'static str {
        "a local file, one record per line, exactly once"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn settings(&self, c: &mut SinkCheck<'_, '_>) -> Option<SinkSettings> {
        let s: Section = c.section();
        let rotate = rotation(c, &s);
        let mode = file_mode(c, s.mode.as_deref());
        let path = match s.path.as_deref() {
            None | Some("") => {
                c.fail("path", "missing: the file to append events to");
                None
            }
            Some(p) => Some(c.base().join(p)),
        };
        Some(
            FileSettings {
                path: path?,
                fsync: s.fsync.unwrap_or(true),
                mode: mode?,
                rotate,
            }
            .into(),
        )
    }
    fn write_through(&self) -> bool {
        true
    }
}

impl Configured for FileSettings {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            let sink = FileSink::open(
                &cfg.name,
                self.path.clone(),
                self.fsync,
                self.mode,
                self.rotate,
                crate::sinks::writer(cfg),
                cx.state.clone(),
            )
            .await?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    }
    fn probe<'a>(&'a self, _cfg: &'a SinkConfig, _retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        let probe = match super::writable(&self.path) {
            Ok(said) => Probe { ok: true, said },
            Err(said) => Probe { ok: false, said },
        };
        Box::pin(async move { probe })
    }
    fn claims(&self, _cfg: &SinkConfig) -> Option<(&'static str, String)> {
        Some(("path", self.path.display().to_string()))
    }
    fn preflight(&self, _cfg: &SinkConfig, recorded: &SinkPosition) -> Option<String> {
        match super::refusal(&self.path, recorded) {
            Ok(why) => why,
            Err(e) => Some(format!("cannot read {}: {e}", self.path.display())),
        }
    }
}

/// `rotate_max_bytes` and `rotate_keep`.
fn rotation(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<Rotate> {
    let keep = match s.rotate_keep {
        None => 7,
        Some(n) if (1..=1024).contains(&n) => n as u64,
        Some(n) => {
            c.fail(
                "rotate_keep",
                format_args!("{n} is out of range; 1 to 1024 rotated files"),
            );
            7
        }
    };
    match s.rotate_max_bytes {
        None => {
            if s.rotate_keep.is_some() {
                c.fail(
                    "rotate_keep",
                    "needs rotate_max_bytes, the size at which the file is rotated",
                );
            }
            None
        }
        Some(n) if n >= 1 && n as u64 <= ROTATE_MAX_BYTES_LIMIT => Some(Rotate {
            max_bytes: n as u64,
            keep,
        }),
        Some(n) => {
            c.fail(
                "rotate_max_bytes",
                format_args!("{n} is out of range; 1 to {ROTATE_MAX_BYTES_LIMIT} bytes"),
            );
            None
        }
    }
}

/// `mode`: an octal string of permission bits ("0600", "640"), at most 0777, and readable and
/// writable by the owner (the agent appends to it and truncates it).
fn file_mode(c: &mut SinkCheck<'_, '_>, mode: Option<&str>) -> Option<u32> {
    let Some(m) = mode else {
        return Some(0o600);
    };
    let digits = m.strip_prefix("0o").unwrap_or(m);
    match u32::from_str_radix(digits, 8) {
        Ok(v) if !digits.is_empty() && digits.len() <= 4 && v <= 0o777 && v & 0o600 == 0o600 => {
            Some(v)
        }
        Ok(v) if v <= 0o777 && !digits.is_empty() && digits.len() <= 4 => {
            c.fail(
                "mode",
                format_args!("{m:?} does not let the owner read and write the file, which the agent must; e.g. \"0600\" or \"0640\""),
            );
            None
        }
        _ => {
            c.fail(
                "mode",
                format_args!("{m:?} is not a file mode: octal permission bits as a string, at most \"0777\", e.g. \"0600\" or \"0640\""),
            );
            None
        }
    }
}
