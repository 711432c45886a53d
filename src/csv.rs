//! CSV rows of native events, for `auditship export --format csv`: RFC 4180 (CRLF line ends, a
//! field with a comma, a double quote, CR or LF quoted and its quotes doubled), a header row,
//! one column per native field.

use crate::event::Event;
use crate::timefmt;

/// The columns, in order: the native event's fields, nested ones by their dotted path.
pub const COLUMNS: [&str; 13] = [
    "id",
    "source",
    "time",
    "action",
    "actor.id",
    "actor.name",
    "target.type",
    "target.id",
    "target.name",
    "project.id",
    "project.name",
    "src_ip",
    "user_agent",
];

/// Appends the header row.
pub fn write_header(out: &mut Vec<u8>) {
    write_row(out, COLUMNS.iter().map(|c| Some(*c)));
}

/// Appends one event's row; an absent field is an empty cell.
pub fn write_event(out: &mut Vec<u8>, ev: &Event) {
    let time = timefmt::rfc3339_ms(ev.time);
    let actor = ev.actor().unwrap_or_default();
    let target = ev.target().unwrap_or_default();
    let project = ev.project().unwrap_or_default();
    write_row(
        out,
        [
            Some(ev.id()),
            Some(&*ev.source),
            Some(time.as_str()),
            ev.action(),
            actor.id,
            actor.name,
            target.kind,
            target.id,
            target.name,
            project.id,
            project.name,
            ev.src_ip(),
            ev.user_agent(),
        ],
    );
}

fn write_row<'a>(out: &mut Vec<u8>, cells: impl IntoIterator<Item = Option<&'a str>>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_cell(out, cell.unwrap_or(""));
    }
    out.extend_from_slice(b"\r\n");
}

fn write_cell(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for part in s.split('"').enumerate() {
        if part.0 > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part.1.as_bytes());
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(cells: &[&str]) -> String {
        let mut out = Vec::new();
        write_row(&mut out, cells.iter().map(|c| Some(*c)));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_what_rfc_4180_requires() {
        assert_eq!(cells(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(
            cells(&["a,b", "say \"hi\"", "two\nlines", "cr\r"]),
            "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\r\"\r\n"
        );
        assert_eq!(cells(&["\""]), "\"\"\"\"\r\n");
    }

    #[test]
    fn the_header_names_every_native_field() {
        let mut out = Vec::new();
        write_header(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,source,time,action,actor.id,actor.name,target.type,target.id,target.name,\
             project.id,project.name,src_ip,user_agent\r\n"
        );
    }
}
