//! How entries are read: everything that looks at JSON text on the way from a page to its events.
//! It knows nothing of events: `sources::entries`, the entry point the vendor files call, turns
//! what these read into events.
//!
//! - [`page`]: walks a page's envelope and array, and hands each entry's text to a reader;
//!   [`PageError`] says why a page's JSON could not be walked, [`Text`] is a string field that
//!   borrows from the page, [`Shape`] a vendor entry's serde shape.
//! - [`compact`]: a formatted page made compact before it is read, so every `raw` is one line.
//! - [`canon`]: the canonical encoding of an entry, by one scan of its text (its hash is the
//!   content hash, see `keys`).
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
pub mod page;
pub mod scan;

pub use page::{PageError, Shape, Text};
