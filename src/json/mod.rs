//! How entries are read: everything that looks at JSON text on the way from a page to its events.
//!
//! - [`entries`]: the entry point — a page's text in, its events out (with their content
//!   hashes, for a content-keyed source); the vendor files call it.
//! - [`page`]: walks a page's envelope and array, and hands each entry's text to a reader.
//! - [`compact`]: a formatted page made compact before it is read, so every `raw` is one line.
//! - [`canon`]: the canonical encoding of an entry, by one scan of its text (its hash is the
//!   content hash, see [`crate::keys`]).
//! - [`decode`]: reads a vendor shape out of that encoding, so content-keyed entries are
//!   scanned once.
//! - [`scan`]: the byte search the scanner, the readers and the event writer share.
//!
//! serde_json reads the entries of vendor-id sources, and any entry the canonical reader
//! refuses. The hand-written scanner and reader answer only where they give exactly what
//! serde_json would; the tests hold them to serde_json (and the encoding to a tree built by
//! serde_json). Each has paid its way on the end-to-end benchmark (see README, Performance); a
//! plain-text reader for vendor-id sources did not, and was removed.

pub mod canon;
pub mod compact;
pub mod decode;
pub mod entries;
pub mod page;
pub mod scan;

pub use entries::{read_entries, read_hashed_entries, Layout, Shape};
