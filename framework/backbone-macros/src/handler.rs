//! `#[handler]`: check an `async fn` handler with readable errors and declare it for `service!`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, LitStr, Path, PathArguments, ReturnType, Token, Type};

/// What `#[handler(...)]` says.
#[derive(Default)]
struct Options {
    exactly_once: bool,
    group: Option<LitStr>,
    topic: Option<Path>,
    state: Option<Type>,
    emits: Vec<Type>,
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let name =
        syn::parse2::<ItemFn>(item.clone()).map_or_else(|_| "?".to_owned(), |f| f.sig.ident.to_string());
    let tokens = match expand_checked(attr, item.clone()) {
        Ok(tokens) => tokens,
        // The function as written, beside the error: uses of it then compile and only the
        // attribute's complaint is reported.
        Err(e) => {
            let mut tokens = e.into_compile_error();
            tokens.extend(item);
            tokens
        }
    };
    crate::debug::print("#[backbone::handler]", &name, &tokens);
    tokens
}

fn parse_options(attr: TokenStream) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("exactly_once") {
            options.exactly_once = true;
        } else if meta.path.is_ident("group") {
            options.group = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("topic") {
            options.topic = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("state") {
            options.state = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("emits") {
            let content;
            syn::parenthesized!(content in meta.input);
            options.emits.extend(Punctuated::<Type, Token![,]>::parse_terminated(&content)?);
        } else {
            return Err(meta.error(
                "unknown handler option: expected `exactly_once`, `group = \"…\"`, `emits(Event, …)`, `topic = PATH` or \
                 `state = Type`",
            ));
        }
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(options)
}

fn expand_checked(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = parse_options(attr)?;
    let function: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(e.span(), "#[backbone::handler] goes on an `async fn` (a handler function)")
    })?;
    let sig = &function.sig;
    let name = &sig.ident;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            format!("handler `{name}` must be an `async fn`: the consumer runtime awaits it"),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("handler `{name}` cannot be generic: the service subscribes one concrete function"),
        ));
    }
    let mut arguments = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    format!("handler `{name}` cannot take `self`: a handler is a free `async fn`"),
                ));
            }
            FnArg::Typed(typed) => arguments.push(&*typed.ty),
        }
    }
    if arguments.len() > 8 {
        return Err(syn::Error::new_spanned(
            arguments[8],
            format!("handler `{name}` takes {} arguments: at most 8 extractors", arguments.len()),
        ));
    }

    let private = quote!(::backbone::__private);
    // The state the arguments are checked against: the `State<S>` argument's, or `state = …`, or
    // `()` (every built-in extractor but `State` works with any state).
    let state = options
        .state
        .clone()
        .or_else(|| arguments.iter().find_map(|ty| generic_of(ty, "State").cloned()))
        .unwrap_or_else(|| syn::parse_quote!(()));
    let extractor_checks =
        arguments.iter().map(|ty| quote_spanned!(ty.span()=> #private::assert_extractor::<#state, #ty>();));
    // Where an output that is not an outcome is reported: the return type.
    let outcome_span = match &sig.output {
        ReturnType::Default => name.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };

    // The Avro event it reads, declared in the spec for estate checks: an `Event<T>` of a bound
    // event (with `topic = …`, `T` need not be one).
    let expects = match (&options.topic, arguments.iter().find_map(|ty| event_type(ty))) {
        (None, Some(event)) => {
            // Projections only, no new bound: a type that is not bound to a topic is reported
            // once, as it is for `TOPIC`.
            quote_spanned!(event.span()=> .expects_keyed::<#event>(
                <#event as #private::BoundEvent>::TOPIC,
                <#event as #private::BoundEvent>::KEY_TYPE,
            ))
        }
        _ => quote!(),
    };
    let topic = match (&options.topic, arguments.iter().find_map(|ty| event_type(ty))) {
        (Some(path), _) => quote!(#path),
        (None, Some(event)) => {
            quote_spanned!(event.span()=> <#event as #private::BoundEvent>::TOPIC)
        }
        (None, None) => {
            return Err(syn::Error::new_spanned(
                name,
                format!(
                    "cannot tell which topic handler `{name}` consumes: take an `Event<T>` of a \
                     `#[derive(backbone::Event)]` type, or say `#[backbone::handler(topic = PATH)]` (a `const` \
                     `backbone::TopicDecl`)"
                ),
            ));
        }
    };
    let mut handler_options = quote!(#private::HandlerOptions::new());
    if let Some(group) = &options.group {
        handler_options.extend(quote!(.group(#group)));
    }
    if options.exactly_once {
        handler_options.extend(quote!(.exactly_once()));
    }

    let emits = &options.emits;
    let emitted_topics =
        emits.iter().map(|ty| quote_spanned!(ty.span()=> <#ty as #private::BoundEvent>::TOPIC));
    let vis = &function.vis;
    let name_str = LitStr::new(&name.to_string(), name.span());
    let state_param = format_ident!("__BackboneState");
    let docs =
        format!("The declaration of handler [`{name}`] (`#[backbone::handler]`), for `backbone::service!`.");
    // The function behind a closure that turns its output into an outcome, so that each mistake
    // is reported once, where it is made: a future that is not `Send` on the name, an output that
    // is not an outcome on the return type (argument types are checked below).
    let params: Vec<_> = (0..arguments.len()).map(|i| format_ident!("__arg{i}")).collect();
    let call = quote_spanned!(name.span()=> #private::assert_send(#name(#(#params),*)));
    let outcome = quote_spanned!(outcome_span=> #private::IntoOutcome::into_outcome(future.await));
    let boxed = quote! {
        #private::BoxedHandler::named(#name_str, |#(#params: #arguments),*| {
            let future = #call;
            async move { #outcome }
        })
    };
    Ok(quote! {
        #function

        #[doc = #docs]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        #[automatically_derived]
        impl #private::HandlerInfo for #name {
            const NAME: &'static str = #name_str;
            const TOPIC: #private::TopicDecl = #topic;
            const OPTIONS: #private::HandlerOptions = #handler_options;
            const EMITS: &'static [#private::TopicDecl] = &[#(#emitted_topics),*];
        }

        #[automatically_derived]
        impl<#state_param> #private::HandlerDecl<#state_param> for #name
        where
            #state_param: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
            #( #arguments: #private::FromEvent<#state_param> + ::core::marker::Send + 'static, )*
        {
            fn handler() -> #private::BoxedHandler<#state_param> {
                #boxed
            }

            fn declare(app: #private::App<#state_param>) -> #private::App<#state_param> {
                app #(.publishes::<#emits>())* #expects
            }
        }

        const _: () = {
            #( #extractor_checks )*
        };
    })
}

/// `T` of `Event<T>`, or of `Option<Event<T>>`.
fn event_type(ty: &Type) -> Option<&Type> {
    generic_of(ty, "Event").or_else(|| generic_of(ty, "Option").and_then(|inner| generic_of(inner, "Event")))
}

/// The single type argument of `ty` if `ty`'s last path segment is `name`.
fn generic_of<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(ty) if args.args.len() == 1 => Some(ty),
        _ => None,
    }
}
