//! A vendor is a plugin: one type per vendor file implements [`Vendor`] — its kind name, its own
//! `[[sources]]` keys (a serde struct), their validation into its `Settings`, and the query
//! parameters the agent sets; its `Settings` implement [`Configured`]: how to build its
//! [`Source`]. The `vendors!` registry in `sources/mod.rs` lists them, one line each; nothing
//! else names a vendor.

use super::{CredentialId, Http, Source};
use crate::sources::config::{SourceCheck, SourceConfig};

/// Everything the agent knows of one kind of source, besides its file's reading of pages.
pub trait Vendor: Sync {
    /// `kind = "…"` in `[[sources]]`, and `kind` of every event it reads.
    fn kind(&self) -> &'static str;
    /// `vendor` of every event it reads.
    fn vendor(&self) -> &'static str;
    /// Its SIEM rows (OCSF, ECS, CEF), in its own file: required, so a vendor without rows does
    /// not compile (nothing falls back to the generic table). Its events carry it
    /// (`Event::with_siem`).
    fn siem(&self) -> &'static crate::rows::Table;
    /// What it is, for people: "Domo activity log".
    fn title(&self) -> &'static str;
    /// The keys of its own section of `[[sources]]` (its section struct's
    /// [`Section::KEYS`](crate::settings::Section::KEYS)), besides the ones every source takes.
    fn options(&self) -> &'static [&'static str];
    /// Those of its keys that hold secrets (its section struct's
    /// [`Section::SECRETS`](crate::settings::Section::SECRETS), known by their types): a
    /// `${NAME}` in one is not needed by `state`, which reads no secrets.
    fn secrets(&self) -> &'static [&'static str];
    /// Query parameters the agent itself sets, which a filter must not override.
    fn reserved_params(&self) -> &'static [&'static str];
    /// The query parameters its API documents as filters: a filter must be one of them (a
    /// misspelt one would be ignored by the vendor, and every event read).
    fn filter_params(&self) -> &'static [&'static str];
    /// Reads and validates its own keys (`c.section()`), reporting every problem on `c`;
    /// `None` when they cannot be used.
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<super::VendorSettings>;
}

/// What a vendor's validated settings (its own keys, credentials among them) build: each
/// vendor's `Settings` type, held in [`SourceConfig`] as its variant of
/// [`VendorSettings`](super::VendorSettings), so the source is built from the settings' own
/// type and never from a guess at it.
pub trait Configured {
    /// Builds the source of a validated entry.
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source>;
    /// The credential the vendor counts this source's requests against (its host and the
    /// identity its requests authenticate with), which every source with the same one shares
    /// (see `pace.rs`); `None` when it has none (it fails before asking anything).
    fn credential(&self, cfg: &SourceConfig) -> Option<CredentialId>;
}
