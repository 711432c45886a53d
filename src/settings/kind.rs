//! `kind = "…"` of a `[[sources]]` or `[[sinks]]` entry: a plugin of a registry (the vendors, the
//! destinations), named by its kind. One type for both, [`Kind`], over the registry's trait.

use std::fmt;

/// A trait object type whose plugins are listed in a static registry, each named by its kind.
pub trait Registered: Sync + 'static {
    /// Every plugin, in the order the registry lists them.
    fn registry() -> &'static [&'static Self];
    /// The plugin's `kind = "…"`.
    fn kind_name(&self) -> &'static str;
}

/// A plugin of `P`'s registry, chosen by `kind = "…"`. Compared and printed by its name.
pub struct Kind<P: ?Sized + 'static>(&'static P);

impl<P: ?Sized + Registered> Kind<P> {
    /// The kind named `s` in the registry.
    pub fn parse(s: &str) -> Option<Kind<P>> {
        P::registry()
            .iter()
            .find(|p| p.kind_name() == s)
            .map(|p| Kind(*p))
    }

    /// `kind = "…"`.
    pub fn as_str(self) -> &'static str {
        self.0.kind_name()
    }

    /// The plugin.
    pub fn plugin(self) -> &'static P {
        self.0
    }
}

// By hand: derives would ask `P: Clone`, which a trait object is not.
impl<P: ?Sized> Clone for Kind<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: ?Sized> Copy for Kind<P> {}

impl<P: ?Sized + Registered> PartialEq for Kind<P> {
    fn eq(&self, other: &Kind<P>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<P: ?Sized + Registered> Eq for Kind<P> {}

impl<P: ?Sized + Registered> fmt::Debug for Kind<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Animal: Sync {
        fn name(&self) -> &'static str;
    }
    struct Cat;
    struct Dog;
    impl Animal for Cat {
        fn name(&self) -> &'static str {
            "cat"
        }
    }
    impl Animal for Dog {
        fn name(&self) -> &'static str {
            "dog"
        }
    }
    static ANIMALS: &[&dyn Animal] = &[&Cat, &Dog];
    impl Registered for dyn Animal {
        fn registry() -> &'static [&'static Self] {
            ANIMALS
        }
        fn kind_name(&self) -> &'static str {
            self.name()
        }
    }

    #[test]
    fn a_kind_is_found_by_name_and_compared_and_printed_by_it() {
        let dog = Kind::<dyn Animal>::parse("dog").unwrap();
        assert_eq!(dog.as_str(), "dog");
        assert_eq!(dog.plugin().name(), "dog");
        assert_eq!(dog, Kind::<dyn Animal>::parse("dog").unwrap());
        assert_ne!(dog, Kind::<dyn Animal>::parse("cat").unwrap());
        assert_eq!(format!("{dog:?}"), "dog");
        assert!(Kind::<dyn Animal>::parse("cow").is_none());
    }
}
