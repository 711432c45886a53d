//! `#[derive(Section)]` for a config section (a serde struct with named fields): implements
//! `crate::settings::Section` with
//!
//! - `KEYS`: the keys of the section, as serde names them (`#[serde(rename = "…")]` honoured,
//!   `#[serde(skip)]` and `#[serde(skip_deserializing)]` fields left out);
//! - `SECRETS`: the keys whose values are secrets, known by the field's type: `SecretText` or
//!   `SecretFile` (or an `Option` of one) is listed by its key; a map whose values are one
//!   (`BTreeMap<String, SecretText>`, or an `Option` of one) is listed as `key.*`: its every
//!   entry is a secret.
//!
//! The generated impl names the trait as `crate::settings::Section`: the derive is for the
//! `auditship` crate itself.

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    parse_macro_input, Data, DeriveInput, Fields, GenericArgument, LitStr, PathArguments, Type,
};

#[proc_macro_derive(Section)]
pub fn derive_section(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match section(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn section(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => &f.named,
            Fields::Unit => return impl_section(input, &[], &[]),
            Fields::Unnamed(_) => {
                return Err(syn::Error::new_spanned(
                    input,
                    "Section needs a struct with named fields",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                input,
                "Section needs a struct with named fields",
            ))
        }
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                return Err(meta.error("Section does not follow rename_all: rename each field"));
            }
            skip_value(&meta)
        })?;
    }
    let mut keys = Vec::new();
    let mut secrets = Vec::new();
    for f in fields {
        let ident = f.ident.as_ref().expect("named").to_string();
        let name = ident.strip_prefix("r#").unwrap_or(&ident).to_string();
        let Some(key) = serde_key(f, name)? else {
            continue;
        };
        match secret(&f.ty) {
            Some(Secret::Value) => secrets.push(key.clone()),
            Some(Secret::Map) => secrets.push(format!("{key}.*")),
            None => {}
        }
        keys.push(key);
    }
    impl_section(input, &keys, &secrets)
}

fn impl_section(
    input: &DeriveInput,
    keys: &[String],
    secrets: &[String],
) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let (imp, ty, whr) = input.generics.split_for_impl();
    Ok(quote! {
        impl #imp crate::settings::Section for #name #ty #whr {
            const KEYS: &'static [&'static str] = &[#(#keys),*];
            const SECRETS: &'static [&'static str] = &[#(#secrets),*];
        }
    })
}

/// The key serde reads the field from (`rename` honoured), or `None` when serde skips it.
fn serde_key(f: &syn::Field, mut key: String) -> syn::Result<Option<String>> {
    let mut skip = false;
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") || meta.path.is_ident("skip_deserializing") {
                skip = true;
            } else if meta.path.is_ident("rename") {
                if meta.input.peek(syn::Token![=]) {
                    let s: LitStr = meta.value()?.parse()?;
                    key = s.value();
                } else {
                    // `rename(serialize = "…", deserialize = "…")`: the keys are read.
                    meta.parse_nested_meta(|m| {
                        let s: LitStr = m.value()?.parse()?;
                        if m.path.is_ident("deserialize") {
                            key = s.value();
                        }
                        Ok(())
                    })?;
                }
            } else if meta.path.is_ident("flatten") {
                return Err(meta.error("Section cannot list the keys of a flattened field"));
            } else if meta.path.is_ident("alias") {
                return Err(meta.error("Section does not list aliases: one key a value"));
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        })?;
    }
    Ok((!skip).then_some(key))
}

/// Reads past the value of a serde attribute that does not change the keys (`default = "…"`,
/// `with = "…"`, `bound(…)`).
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|m| skip_value(&m))?;
    }
    Ok(())
}

enum Secret {
    /// The value is a secret.
    Value,
    /// Every value of the map is a secret.
    Map,
}

/// Whether a field of type `ty` holds a secret: `SecretText`/`SecretFile`, a map of them, or an
/// `Option` of either.
fn secret(ty: &Type) -> Option<Secret> {
    let ty = generic_arg(ty, "Option").unwrap_or(ty);
    if is_secret_type(ty) {
        return Some(Secret::Value);
    }
    let last = last_segment(ty)?;
    if last.ident == "BTreeMap" || last.ident == "HashMap" {
        if let PathArguments::AngleBracketed(a) = &last.arguments {
            if let Some(GenericArgument::Type(v)) = a.args.iter().nth(1) {
                if is_secret_type(v) {
                    return Some(Secret::Map);
                }
            }
        }
    }
    None
}

fn is_secret_type(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| {
        (s.ident == "SecretText" || s.ident == "SecretFile") && s.arguments.is_empty()
    })
}

/// `T` of `Name<T>` when `ty` is that.
fn generic_arg<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    let last = last_segment(ty)?;
    if last.ident != name {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(a) => match a.args.first()? {
            GenericArgument::Type(t) if a.args.len() == 1 => Some(t),
            _ => None,
        },
        _ => None,
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}
