//! `#[orchestration]` and `#[activity]`: a handle type named after the function, the
//! function as its `run`, and the `DurableFunction` impl.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::args;
use crate::checks;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Orchestration,
    Activity,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Self::Orchestration => "an orchestration",
            Self::Activity => "an activity",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Orchestration => "Orchestration",
            Self::Activity => "Activity",
        }
    }

    fn context(self) -> &'static str {
        match self {
            Self::Orchestration => "OrchestrationContext",
            Self::Activity => "ActivityContext",
        }
    }
}

pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let allowed: &[&str] = match kind {
        Kind::Orchestration => &["name", "version", "allow_nondeterministic"],
        Kind::Activity => &["name"],
    };
    let options = args::parse(attr, allowed)?;
    let mut f: ItemFn = syn::parse2(item)?;
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("{} is an `async fn`", kind.word()),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "{} cannot be generic: its input and output types are fixed by its name",
                kind.word()
            ),
        ));
    }
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new_spanned(
            receiver,
            format!("{} is a free function, not a method", kind.word()),
        ));
    }

    // The parameters: an optional context first, then at most one input.
    let mut has_context = false;
    let mut input_ty: Option<Type> = None;
    for (index, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pat) = arg else { continue };
        if let Type::Reference(r) = &*pat.ty
            && args::last_ident(&r.elem).as_deref() == Some(kind.context())
        {
            return Err(syn::Error::new_spanned(
                &pat.ty,
                format!(
                    "take the {} by value (it is cheap to clone), not by reference",
                    kind.context()
                ),
            ));
        }
        let is_context = args::last_ident(&pat.ty).as_deref() == Some(kind.context());
        if is_context && index == 0 {
            has_context = true;
        } else if is_context {
            return Err(syn::Error::new_spanned(
                &pat.ty,
                format!("the {} comes first", kind.context()),
            ));
        } else if input_ty.is_some() {
            return Err(syn::Error::new_spanned(
                arg,
                format!(
                    "{} takes one input; put several values in a struct or a tuple",
                    kind.word()
                ),
            ));
        } else {
            input_ty = Some((*pat.ty).clone());
        }
    }
    let output_ty = match &sig.output {
        ReturnType::Type(_, ty) => args::result_ok_type(ty).cloned(),
        ReturnType::Default => None,
    }
    .ok_or_else(|| {
        syn::Error::new(
            sig.output.span(),
            format!(
                "{} returns `Result<T, E>` (T: Serialize, E: an error or FailureDetails)",
                kind.word()
            ),
        )
    })?;

    // A failed check still emits the function, so that the only errors are the checks'.
    let checked = match kind {
        Kind::Orchestration => {
            checks::check_and_strip(&mut f.block, options.allow_nondeterministic)
        }
        Kind::Activity => Ok(()),
    };

    let vis = &f.vis;
    let ident = &f.sig.ident;
    let name = options.name.unwrap_or_else(|| ident.to_string());
    let version = match &options.version {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let docs: Vec<_> = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    let other_attrs: Vec<_> = f
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .cloned()
        .collect();
    let input = input_ty.clone().unwrap_or_else(|| syn::parse_quote!(()));
    let mut run = f.clone();
    run.attrs = other_attrs;
    run.vis = syn::parse_quote!(pub);
    run.sig.ident = format_ident!("run");

    let ctx_ty = match kind {
        Kind::Orchestration => quote!(::perdure_core::OrchestrationContext),
        Kind::Activity => quote!(::perdure_core::ActivityContext),
    };
    // The handle is a type named after the function (`say_hello` -> `SayHelloActivity`) and
    // a function with the function's own name that returns it: a `fn` item, unlike a unit
    // struct, may be shadowed by a `let` of the same name.
    let plain = ident.to_string();
    let plain = plain.strip_prefix("r#").unwrap_or(&plain);
    let handle = format_ident!("{}{}", camel_case(plain), kind.suffix());
    let call = match (has_context, input_ty.is_some()) {
        (true, true) => quote!(#handle::run(ctx, input)),
        (true, false) => quote!(#handle::run(ctx)),
        (false, true) => quote!(#handle::run(input)),
        (false, false) => quote!(#handle::run()),
    };
    let (kind_tokens, add) = match (kind, &options.version) {
        (Kind::Activity, _) => (
            quote!(::perdure_core::handles::FunctionKind::Activity),
            quote!(registry.add_activity(<Self as ::perdure_core::DurableFunction>::NAME, __f);),
        ),
        (Kind::Orchestration, None) => (
            quote!(::perdure_core::handles::FunctionKind::Orchestration),
            quote!(registry.add_orchestration(<Self as ::perdure_core::DurableFunction>::NAME, __f);),
        ),
        (Kind::Orchestration, Some(v)) => (
            quote!(::perdure_core::handles::FunctionKind::Orchestration),
            quote!(registry.add_orchestration_version(
                <Self as ::perdure_core::DurableFunction>::NAME, #v, __f);),
        ),
    };
    let what = kind.word();
    let handle_doc = format!(
        " The handle of {what} `{name}` (written by the attribute on `{ident}`); the function \
         itself is `{handle}::run`."
    );
    let fn_doc = format!(
        " {what} `{name}`, as a handle: pass `{ident}` to `ctx.call` and `Registry::register`."
    );
    let marker = (kind == Kind::Orchestration)
        .then(|| quote!(impl ::perdure_core::handles::OrchestrationHandle for #handle {}));

    let errors = checked.err().map(syn::Error::into_compile_error);
    Ok(quote! {
        #errors
        #[doc = #handle_doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #vis struct #handle;

        impl #handle {
            #run
        }

        impl ::perdure_core::DurableFunction for #handle {
            const NAME: &'static str = #name;
            const VERSION: ::core::option::Option<&'static str> = #version;
            const KIND: ::perdure_core::handles::FunctionKind = #kind_tokens;
            type Input = #input;
            type Output = #output_ty;

            fn register(self, registry: &mut ::perdure_core::Registry) {
                let __f = |ctx: #ctx_ty, input: #input| {
                    let _ = &ctx;
                    let _ = &input;
                    #call
                };
                #add
            }
        }

        #marker

        #(#docs)*
        #[doc = ""]
        #[doc = #fn_doc]
        #[must_use]
        #vis fn #ident() -> #handle {
            #handle
        }
    })
}

/// `say_hello` -> `SayHello`.
fn camel_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}
