//! `format = "native"`: the event as DESIGN.md's native JSON object (`id`, `source`, `kind`,
//! `vendor`, `time`, the normalised fields, `raw`). The writer itself is
//! [`Event::write_json`], beside the spans it reads.

use super::Encoding;
use crate::event::Event;

/// The native JSON object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Native;

impl Encoding for Native {
    const NAME: &'static str = "native";

    #[inline]
    fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
        e.write_json(out, include_raw);
    }
}
