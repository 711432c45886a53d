//! A vendor is a plugin: one type per vendor file implements [`Vendor`] — its kind name, its own
//! `[[sources]]` keys (a serde struct), their validation, the query parameters the agent sets,
//! and how to build its [`Source`]. [`super::VENDORS`] lists them; nothing else names a vendor.

use super::{CredentialId, Http, Source};
use crate::sources::config::{SourceCheck, SourceConfig};

/// Everything the agent knows of one kind of source, besides its file's reading of pages.
pub trait Vendor: Sync {
    /// `kind = "…"` in `[[sources]]`, and `kind` of every event it reads.
    fn kind(&self) -> &'static str;
    /// `vendor` of every event it reads.
    fn vendor(&self) -> &'static str;
    /// What it is, for people: "Domo activity log".
    fn title(&self) -> &'static str;
    /// The keys of its own section of `[[sources]]` (the serde field names of its section
    /// struct, see [`options_of`]), besides the ones every source takes.
    fn options(&self) -> &'static [&'static str];
    /// Query parameters the agent itself sets, which a filter must not override.
    fn reserved_params(&self) -> &'static [&'static str];
    /// The query parameters its API documents as filters: a filter must be one of them (a
    /// misspelt one would be ignored by the vendor, and every event read).
    fn filter_params(&self) -> &'static [&'static str];
    /// Reads and validates its own keys (`c.section()`), reporting every problem on `c`;
    /// `None` when they cannot be used.
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<VendorSettings>;
    /// Builds the source of a validated entry of its kind.
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source>;
    /// The credential the vendor counts this source's requests against (its host and the
    /// identity its requests authenticate with), which every source with the same one shares
    /// (see `pace.rs`); `None` when it has none (it fails before asking anything).
    fn credential(&self, cfg: &SourceConfig) -> Option<CredentialId>;
}

/// The keys of a vendor's section struct `T`.
pub fn options_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    crate::settings::fields::<T>()
}

/// A vendor's validated settings, kept in [`SourceConfig`] and read back by its own `build`.
pub type VendorSettings = crate::settings::PluginSettings;

/// The settings of `cfg`, which its vendor made.
pub fn settings_of<'a, T: 'static>(cfg: &'a SourceConfig, vendor: &str) -> &'a T {
    cfg.settings.get::<T>().unwrap_or_else(|| {
        panic!(
            "source {}: settings of kind {} given to {vendor}",
            cfg.name,
            cfg.kind.as_str()
        )
    })
}
