//! `#[entity]` on an `impl` block: the `Entity` dispatch over the block's public methods, the
//! `EntityInterface` impl and the typed proxy `{Type}Proxy<T>`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type, Visibility};

use crate::args;

/// One operation: a public method with a `&self` or `&mut self` receiver.
struct Operation {
    method: syn::Ident,
    /// The operation's name as sent and matched (lower case).
    name: String,
    mutates: bool,
    is_async: bool,
    has_context: bool,
    inputs: Vec<(syn::Ident, Type)>,
    /// The type of a successful result (`()` when the method returns nothing).
    output: Type,
    returns_result: bool,
    returns_nothing: bool,
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = args::parse(attr, &["name"])?;
    let block: ItemImpl = syn::parse2(item)?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[entity] goes on the inherent `impl` block of the state type, not on a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "an entity type cannot be generic: its name is fixed",
        ));
    }
    let self_ty = &block.self_ty;
    let Some(type_name) = args::last_ident(self_ty) else {
        return Err(syn::Error::new_spanned(self_ty, "expected a type name"));
    };
    let entity_name = options.name.unwrap_or_else(|| type_name.clone());
    let proxy = format_ident!("{}Proxy", type_name);

    let mut ops = Vec::new();
    for item in &block.items {
        // Every method visible outside the impl (`pub`, `pub(crate)`, ...) with a receiver
        // is an operation; private methods are helpers.
        if let ImplItem::Fn(f) = item
            && !matches!(f.vis, Visibility::Inherited)
            && f.sig.receiver().is_some()
        {
            if f.sig.ident == "signal" {
                return Err(syn::Error::new_spanned(
                    &f.sig.ident,
                    "an operation cannot be called `signal`: the typed proxy uses that name for \
                     its one-way form",
                ));
            }
            ops.push(operation(f)?);
        }
    }
    for (i, a) in ops.iter().enumerate() {
        if ops[..i].iter().any(|b| b.name == a.name) {
            return Err(syn::Error::new_spanned(
                &a.method,
                "two operations differ only in case (operation names are case-insensitive)",
            ));
        }
    }
    let has_delete = ops.iter().any(|o| o.name == "delete");

    let arms = ops.iter().map(dispatch_arm);
    let delete_arm = (!has_delete).then(|| {
        quote! {
            "delete" => {
                ctx.delete_state();
                ::core::result::Result::Ok(::core::option::Option::None)
            }
        }
    });
    let result_ty = quote!(
        ::core::result::Result<
            ::core::option::Option<::perdure_core::Payload>,
            ::perdure_core::FailureDetails,
        >
    );
    let body = quote! {
        let __op = ctx.operation_name().to_ascii_lowercase();
        match __op.as_str() {
            #(#arms)*
            #delete_arm
            _ => ::core::result::Result::Err(ctx.unknown_operation()),
        }
    };
    // With an `async` operation the batch is a future the node awaits; `dispatch` (for
    // blocking callers such as the test harness) drives it on the calling thread.
    let entity_impl = if ops.iter().any(|o| o.is_async) {
        quote! {
            impl ::perdure_core::entity::Entity for #self_ty {
                fn dispatch(ctx: &mut ::perdure_core::EntityContext<Self>) -> #result_ty {
                    ::perdure_core::entity::block_on_dispatch(ctx)
                }

                fn dispatch_async(
                    ctx: &mut ::perdure_core::EntityContext<Self>,
                ) -> ::core::pin::Pin<::std::boxed::Box<
                    dyn ::core::future::Future<Output = #result_ty> + ::core::marker::Send + '_,
                >> {
                    ::std::boxed::Box::pin(async move { #body })
                }
            }
        }
    } else {
        quote! {
            impl ::perdure_core::entity::Entity for #self_ty {
                fn dispatch(ctx: &mut ::perdure_core::EntityContext<Self>) -> #result_ty {
                    #body
                }
            }
        }
    };
    let methods = ops.iter().map(proxy_method);
    let delete_method = (!has_delete).then(|| {
        quote! {
            /// Deletes the entity's state (the implicit `delete` operation).
            pub fn delete(&self) -> T::Call<()> {
                self.0.operation::<(), ()>("delete", &())
            }
        }
    });
    let proxy_doc = format!(
        " Typed operations of entity `{entity_name}`: calls and signals from an \
         orchestration (`ctx.entity::<{type_name}>(key)`), signals from the client."
    );

    Ok(quote! {
        #block

        #entity_impl

        impl ::perdure_core::EntityInterface for #self_ty {
            const NAME: &'static str = #entity_name;
            type Proxy<T: ::perdure_core::handles::EntityTarget> = #proxy<T>;
        }

        #[doc = #proxy_doc]
        #[derive(Clone, Debug)]
        pub struct #proxy<T>(T);

        impl<T> ::core::convert::From<T> for #proxy<T> {
            fn from(target: T) -> Self {
                Self(target)
            }
        }

        impl<T: ::perdure_core::handles::EntityTarget> #proxy<T> {
            /// The same operations, signalled (one-way).
            pub fn signal(&self) -> #proxy<T::Signal> {
                #proxy(self.0.signal())
            }

            #(#methods)*
            #delete_method
        }
    })
}

fn operation(f: &ImplItemFn) -> syn::Result<Operation> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "an entity operation cannot be generic: its input type is fixed",
        ));
    }
    let mut mutates = false;
    let mut has_context = false;
    let mut inputs = Vec::new();
    for (index, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(r) => {
                if r.reference.is_none() {
                    return Err(syn::Error::new_spanned(
                        r,
                        "an operation takes `&self` (reads) or `&mut self` (changes the state)",
                    ));
                }
                mutates = r.mutability.is_some();
            }
            FnArg::Typed(pat) => {
                if args::last_ident(&pat.ty).as_deref() == Some("EntityContext") {
                    if index != 1 {
                        return Err(syn::Error::new_spanned(
                            &pat.ty,
                            "the entity context comes right after the receiver",
                        ));
                    }
                    has_context = true;
                    continue;
                }
                if let Type::Reference(_) = &*pat.ty {
                    return Err(syn::Error::new_spanned(
                        &pat.ty,
                        "an operation's inputs are owned values (they are decoded from JSON)",
                    ));
                }
                inputs.push((format_ident!("__in{}", inputs.len()), (*pat.ty).clone()));
            }
        }
    }
    let (output, returns_result, returns_nothing) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false, true),
        ReturnType::Type(_, ty) => match args::result_ok_type(ty) {
            Some(ok) => (ok.clone(), true, false),
            None => ((**ty).clone(), false, false),
        },
    };
    Ok(Operation {
        method: sig.ident.clone(),
        name: sig.ident.to_string().to_ascii_lowercase(),
        mutates,
        is_async: sig.asyncness.is_some(),
        has_context,
        inputs,
        output,
        returns_result,
        returns_nothing,
    })
}

fn dispatch_arm(op: &Operation) -> TokenStream {
    let name = &op.name;
    let method = &op.method;
    let names: Vec<_> = op.inputs.iter().map(|(n, _)| n).collect();
    let types: Vec<_> = op.inputs.iter().map(|(_, t)| t).collect();
    let decode = match op.inputs.len() {
        0 => quote!(),
        1 => quote!(let #(#names)*: #(#types)* = ctx.input()?;),
        _ => quote!(let (#(#names),*): (#(#types),*) = ctx.input()?;),
    };
    let ctx_arg = op.has_context.then(|| quote!(__ctx,));
    let call = quote!(__state.#method(#ctx_arg #(#names),*));
    let run = match (op.is_async, op.mutates) {
        (false, true) => quote!(ctx.run_operation(|__state, __ctx| {
            let _ = &__ctx;
            #call
        })),
        (false, false) => quote!(ctx.run_read_operation(|__state, __ctx| {
            let _ = &__ctx;
            #call
        })),
        (true, true) => quote!(ctx.run_operation_async(move |__state, __ctx| {
            let _ = &__ctx;
            ::std::boxed::Box::pin(#call)
        }).await),
        (true, false) => quote!(ctx.run_read_operation_async(move |__state, __ctx| {
            let _ = &__ctx;
            ::std::boxed::Box::pin(#call)
        }).await),
    };
    let finish = if op.returns_result {
        quote! {
            let __out = __out.map_err(::perdure_core::IntoFailureDetails::into_failure_details)?;
            ctx.output(&__out)
        }
    } else if op.returns_nothing {
        quote! {
            let () = __out;
            ::core::result::Result::Ok(::core::option::Option::None)
        }
    } else {
        quote!(ctx.output(&__out))
    };
    quote! {
        #name => {
            #decode
            let __out = #run;
            #finish
        }
    }
}

fn proxy_method(op: &Operation) -> TokenStream {
    let method = &op.method;
    let name = op.method.to_string();
    let output = &op.output;
    let names: Vec<_> = op.inputs.iter().map(|(n, _)| n).collect();
    let types: Vec<_> = op.inputs.iter().map(|(_, t)| t).collect();
    let (input_ty, input) = match op.inputs.len() {
        0 => (quote!(()), quote!(&())),
        1 => (quote!(#(#types)*), quote!(&#(#names)*)),
        _ => (quote!((#(#types),*)), quote!(&(#(#names),*))),
    };
    let doc = format!(" Operation `{name}`.");
    quote! {
        #[doc = #doc]
        pub fn #method(&self, #(#names: #types),*) -> T::Call<#output> {
            self.0.operation::<#input_ty, #output>(#name, #input)
        }
    }
}
