//! What the SIEM encodings share: how a vendor's [`Table`] (its rows, in its own file under
//! `sources/`; the types in [`crate::rows`]) finds the row of an event, the tables of
//! `docs/siem-formats.md` ([`readme_section`] of the vendors' tables, a test in `sources/`
//! holds them to them), and a JSON object writer. An action no row names falls to its table's
//! `other` row: OCSF activity 99 "Other" with the vendor's label as `activity_name`.

use crate::event::Event;
pub use crate::rows::{Class, Rule, Table, GENERIC};

impl Table {
    /// The row of `e`'s action (and target kind), or `other`.
    #[inline]
    pub fn rule(&self, e: &Event) -> &Rule {
        let (Some(action), target) = (self.action(e), e.target().and_then(|t| t.kind)) else {
            return &self.other;
        };
        self.rules
            .iter()
            .find(|r| r.action == action && (r.target.is_none() || r.target == target))
            .unwrap_or(&self.other)
    }

    /// The vendor's action code the rows name: the `action_key` field of its JSON (a plain
    /// string), else the event's `action`.
    #[inline]
    pub fn action<'e>(&self, e: &'e Event) -> Option<&'e str> {
        self.action_key
            .and_then(|k| crate::json::scan::top_level(e.raw(), k))
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .filter(|v| !v.is_empty() && !v.contains('\\'))
            .or(e.action())
    }
}

/// The tables of `docs/siem-formats.md`: one per vendor, a row per action and the default last.
pub fn readme_section(tables: &[&Table]) -> String {
    let mut s = String::new();
    for t in tables {
        s.push_str(&format!(
            "\n**{} {}** (`kind = \"{}\"`)\n\n| vendor action | OCSF class | OCSF activity | ECS event.category | ECS event.type |\n|---|---|---|---|---|\n",
            t.product, t.feature, t.kind
        ));
        for r in t.rules.iter().chain([&t.other]) {
            let action = match r.target {
                Some(k) => format!("`{}` on `{}`", r.action, k),
                None if std::ptr::eq(r, &t.other) => r.action.to_string(),
                None => format!("`{}`", r.action),
            };
            s.push_str(&format!(
                "| {action} | {} {} | {} {} | {} | {} |\n",
                r.class.uid(),
                r.class.name(),
                r.activity,
                r.class.activity_caption(r.activity).unwrap_or("?"),
                r.category,
                r.types.join(", ")
            ));
        }
    }
    s
}

/// Writes a JSON object a field at a time: keys are literals with nothing to escape, values
/// are escaped as the native writer escapes them. Absent values are left out, never `null`.
pub(crate) struct Json<'o> {
    pub out: &'o mut Vec<u8>,
    comma: bool,
}

impl<'o> Json<'o> {
    /// Opens the top-level object.
    #[inline]
    pub fn open(out: &'o mut Vec<u8>) -> Json<'o> {
        out.push(b'{');
        Json { out, comma: false }
    }

    /// Writes the fields of an object whose `{` is already written (the caller closes it).
    pub fn inside(out: &'o mut Vec<u8>) -> Json<'o> {
        Json { out, comma: false }
    }

    #[inline]
    pub fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = true;
    }

    #[inline]
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        crate::event::push_json_str(self.out, v);
    }

    #[inline]
    pub fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    #[inline]
    pub fn num(&mut self, k: &str, v: i64) {
        use std::io::Write;
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    /// Opens an object under `k`; [`Json::end`] closes it.
    #[inline]
    pub fn begin(&mut self, k: &str) {
        self.key(k);
        self.out.push(b'{');
        self.comma = false;
    }

    #[inline]
    pub fn end(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }

    /// An array of strings under `k`.
    pub fn strs<'v>(&mut self, k: &str, vs: impl IntoIterator<Item = &'v str>) {
        self.key(k);
        self.out.push(b'[');
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            crate::event::push_json_str(self.out, v);
        }
        self.out.push(b']');
    }

    /// `{"type":..,"id":..,"name":..}`-like object of an entity under `k`, with the given keys.
    pub fn entity(&mut self, k: &str, keys: [&str; 3], e: &crate::event::Entity<'_>) {
        self.begin(k);
        self.opt(keys[0], e.kind);
        self.opt(keys[1], e.id);
        self.opt(keys[2], e.name);
        self.end();
    }

    /// Closes the top-level object.
    #[inline]
    pub fn close(self) {
        self.out.push(b'}');
    }
}
