//! The attributes' options (`name = "..."`, `version = "..."`, flags) and the type shapes the
//! macros read from signatures.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, GenericArgument, Lit, Meta, PathArguments, Token, Type};

/// The options of an attribute.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) allow_nondeterministic: bool,
}

/// Parses `name = "...", version = "...", allow_nondeterministic`, accepting only `allowed`.
pub(crate) fn parse(attr: TokenStream, allowed: &[&str]) -> syn::Result<Options> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut options = Options::default();
    for meta in metas {
        let key = meta
            .path()
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            return Err(syn::Error::new_spanned(
                meta.path(),
                format!("unknown option; expected one of: {}", allowed.join(", ")),
            ));
        }
        match (key.as_str(), &meta) {
            ("allow_nondeterministic", Meta::Path(_)) => options.allow_nondeterministic = true,
            ("name" | "version", Meta::NameValue(nv)) => {
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) = &nv.value
                else {
                    return Err(syn::Error::new_spanned(
                        &nv.value,
                        "expected a string literal",
                    ));
                };
                if s.value().is_empty() {
                    return Err(syn::Error::new_spanned(s, "may not be empty"));
                }
                if key == "name" {
                    options.name = Some(s.value());
                } else {
                    options.version = Some(s.value());
                }
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &meta,
                    format!("`{key}` is written `{key} = \"...\"` or as a bare flag"),
                ));
            }
        }
    }
    Ok(options)
}

/// The last path segment's name of a type (`perdure_core::ActivityContext` → `ActivityContext`),
/// looking through one reference.
pub(crate) fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Reference(r) => last_ident(&r.elem),
        _ => None,
    }
}

/// `Result<T, E>` or `Result<T>` (any path ending in `Result`): `T`.
pub(crate) fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}
