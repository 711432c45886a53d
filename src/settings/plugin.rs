//! A plugin's validated settings behind one type: a vendor's (`[[sources]]`) or a
//! destination's (`[[sinks]]`) own keys, as its plugin read them, kept in the entry's config
//! and read back by the same plugin. Reload compares configs with `==`, so the settings are
//! `Debug + PartialEq` behind the trait object.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A plugin's validated settings.
#[derive(Clone)]
pub struct PluginSettings(Arc<dyn AnySettings>);

impl PluginSettings {
    pub fn new<T: fmt::Debug + PartialEq + Send + Sync + 'static>(t: T) -> PluginSettings {
        PluginSettings(Arc::new(t))
    }

    /// The settings as the plugin's type; `None` for another type (a programming error the
    /// plugin turns into a panic naming itself).
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(f)
    }
}

impl PartialEq for PluginSettings {
    fn eq(&self, other: &PluginSettings) -> bool {
        self.0.same(other.0.as_any())
    }
}

/// `Debug + PartialEq` behind a trait object.
trait AnySettings: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn Any) -> bool;
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<T: fmt::Debug + PartialEq + Send + Sync + 'static> AnySettings for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn same(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
