//! Encodings: how one event becomes a record — a sink's `format`: `native`, `ocsf` (OCSF 1.8.0),
//! `ecs` (Elastic Common Schema) and `cef` (ArcSight CEF); the SIEM ones share the per-vendor
//! tables of [`siem`]. Each is one file here behind [`Encoding`], listed once in
//! the `registry!` line at the bottom of this file, which makes the [`Format`] a sink holds and
//! the name `format = "..."` selects it by.
//!
//! A sink kind frames records (a line each for stdout and the file, a JSON array, Splunk HEC
//! objects or `_bulk` pairs for HTTP); an encoding writes what goes inside one frame. [`Format`]
//! is an enum, not a trait object: writing is per event, and a `match` over the few encodings is
//! inlined where a sink writes, at the cost of nothing per event.

use crate::event::Event;

pub mod cef;
pub mod ecs;
pub mod native;
pub mod ocsf;
pub mod parquet;
pub mod siem;

/// One way to write an event.
pub trait Encoding: Default + std::fmt::Debug + Clone + PartialEq + Eq + Send + Sync {
    /// The name `format = "..."` selects it by.
    const NAME: &'static str;

    /// Appends the event's record to `out`: one JSON object (or one line of text) with no
    /// newline after it; `include_raw = false` leaves the vendor's event out.
    fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>);
}

/// Lists every encoding once: the [`Format`] enum, its names and its dispatch follow.
macro_rules! registry {
    ($($variant:ident => $ty:ty),+ $(,)?) => {
        /// The encoding a sink writes its events in.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Format {
            $($variant($ty)),+
        }

        impl Format {
            /// Every encoding's name, for messages.
            pub const NAMES: &'static [&'static str] = &[$(<$ty as Encoding>::NAME),+];

            /// The encoding `format = name` selects.
            pub fn by_name(name: &str) -> Option<Format> {
                $(if name == <$ty as Encoding>::NAME {
                    return Some(Format::$variant(<$ty>::default()));
                })+
                None
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Format::$variant(_) => <$ty as Encoding>::NAME),+
                }
            }

            /// Appends one event's record (see [`Encoding::write`]).
            #[inline]
            pub fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
                match self {
                    $(Format::$variant(enc) => enc.write(e, include_raw, out)),+
                }
            }
        }
    };
}

registry! {
    Native => native::Native,
    Ocsf => ocsf::Ocsf,
    Ecs => ecs::Ecs,
    Cef => cef::Cef,
}

impl Default for Format {
    fn default() -> Format {
        Format::Native(native::Native)
    }
}

/// How a sink writes each event: the encoding, and whether `raw` is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    /// The sink's `format`.
    pub format: Format,
    /// The sink's `include_raw`.
    pub include_raw: bool,
}

impl Writer {
    /// Appends one event's record, with no newline.
    #[inline]
    pub fn record(&self, e: &Event, out: &mut Vec<u8>) {
        self.format.write(e, self.include_raw, out);
    }

    /// Appends one event's record and a newline.
    #[inline]
    pub fn line(&self, e: &Event, out: &mut Vec<u8>) {
        self.record(e, out);
        out.push(b'\n');
    }

    /// Writes a batch as one record per line into `buf` (cleared first).
    pub fn lines(&self, events: &[Event], buf: &mut Vec<u8>) {
        buf.clear();
        for e in events {
            self.line(e, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_selects_its_encoding_and_nothing_else_does() {
        assert_eq!(Format::NAMES, ["native", "ocsf", "ecs", "cef"]);
        for n in Format::NAMES {
            assert_eq!(Format::by_name(n).unwrap().name(), *n);
        }
        assert_eq!(Format::by_name("native"), Some(Format::default()));
        for n in ["", "Native", "OCSF", "CEF", "native "] {
            assert_eq!(Format::by_name(n), None, "{n:?}");
        }
    }
}
