//! `service!`: a whole service declared in one place, its ownership checked at compile time.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, LitStr, Path, Token, Type, Visibility, braced};

/// `pub stock: Stock { … }`
struct Declaration {
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: Ident,
    state: Type,
    lines: Vec<Line>,
}

/// One line of the body.
enum Line {
    /// `publishes OrderValidation;`: an event on a topic the service owns.
    Publishes(Type),
    /// `owns RESERVATIONS;`: a `const` `TopicDecl` the service owns.
    Owns(Path),
    /// `handles reserve;`: a `#[backbone::handler]`.
    Handles(Path),
    /// `table StockLevel;` (a bound event, its own topic) or `table LEVELS: StockLevel;`.
    Table { topic: Option<Path>, value: Type, span: Span },
    /// `routes http::routes();`: an axum `Router` over the state.
    Routes(Expr),
}

mod kw {
    syn::custom_keyword!(publishes);
    syn::custom_keyword!(owns);
    syn::custom_keyword!(handles);
    syn::custom_keyword!(table);
    syn::custom_keyword!(routes);
}

impl Parse for Declaration {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let ident: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let state = input.parse()?;
        let body;
        braced!(body in input);
        let mut lines = Vec::new();
        while !body.is_empty() {
            lines.push(body.parse()?);
        }
        if !input.is_empty() {
            return Err(input.error("one service per `service!`"));
        }
        Ok(Self { attrs, vis, ident, state, lines })
    }
}

impl Parse for Line {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let look = input.lookahead1();
        let line = if look.peek(kw::publishes) {
            input.parse::<kw::publishes>()?;
            Self::Publishes(input.parse()?)
        } else if look.peek(kw::owns) {
            input.parse::<kw::owns>()?;
            Self::Owns(input.parse()?)
        } else if look.peek(kw::handles) {
            input.parse::<kw::handles>()?;
            Self::Handles(input.parse()?)
        } else if look.peek(kw::table) {
            let span = input.parse::<kw::table>()?.span;
            let first: Type = input.parse()?;
            if input.peek(Token![:]) {
                input.parse::<Token![:]>()?;
                let Type::Path(syn::TypePath { qself: None, path }) = first else {
                    return Err(syn::Error::new_spanned(
                        first,
                        "expected the path of a `const` `backbone::TopicDecl`",
                    ));
                };
                Self::Table { topic: Some(path), value: input.parse()?, span }
            } else {
                Self::Table { topic: None, value: first, span }
            }
        } else if look.peek(kw::routes) {
            input.parse::<kw::routes>()?;
            Self::Routes(input.parse()?)
        } else {
            return Err(syn::Error::new(
                look.error().span(),
                "expected one of: `publishes Event;`, `owns TOPIC;`, `handles handler;`, `table Event;`, \
                 `table TOPIC: Value;`, `routes router;`",
            ));
        };
        input.parse::<Token![;]>()?;
        Ok(line)
    }
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    match syn::parse2::<Declaration>(input) {
        Ok(declaration) => {
            let tokens = generate(&declaration).unwrap_or_else(syn::Error::into_compile_error);
            crate::debug::print("backbone::service!", &declaration.ident, &tokens);
            tokens
        }
        Err(e) => e.into_compile_error(),
    }
}

fn generate(d: &Declaration) -> syn::Result<TokenStream> {
    let private = quote!(::backbone::__private);
    let service = d.ident.to_string().trim_start_matches("r#").replace('_', "-");
    let service_lit = LitStr::new(&service, d.ident.span());
    crate::event::check_service_name(&service_lit)?;
    let state = &d.state;
    let mut checks = Vec::new();
    let mut calls = Vec::new();
    for line in &d.lines {
        match line {
            Line::Publishes(ty) => {
                let message = format!(
                    "service `{service}` may not publish `{}`: its topic is owned by another service, \
                     and only a topic's owner writes it",
                    shown(ty)
                );
                checks.push(quote_spanned! {ty.span()=>
                    const _: () = if !<#ty as #private::BoundEvent>::TOPIC.may_be_written_by(#service_lit) {
                        ::core::panic!(#message)
                    };
                });
                calls.push(quote_spanned!(ty.span()=> .publishes::<#ty>()));
            }
            Line::Owns(path) => {
                let message = format!(
                    "service `{service}` may not own `{}`: that topic's owner is another service",
                    shown(path)
                );
                checks.push(quote_spanned! {path.span()=>
                    const _: () = if !#private::TopicDecl::may_be_written_by(&#path, #service_lit) {
                        ::core::panic!(#message)
                    };
                });
                calls.push(quote_spanned!(path.span()=> .owns(#path)));
            }
            Line::Handles(path) => {
                let reads = format!(
                    "service `{service}` may not consume what handler `{}` reads: it is another service's \
                     private topic, and only its owner reads a private topic",
                    shown(path)
                );
                let writes = format!(
                    "service `{service}` may not run handler `{}`: it emits an event on a topic another \
                     service owns, and only a topic's owner writes it",
                    shown(path)
                );
                checks.push(quote_spanned! {path.span()=>
                    const _: () = if !<#path as #private::HandlerInfo>::TOPIC.may_be_read_by(#service_lit) {
                        ::core::panic!(#reads)
                    };
                    const _: () = {
                        let emits = <#path as #private::HandlerInfo>::EMITS;
                        let mut i = 0;
                        while i < emits.len() {
                            if !emits[i].may_be_written_by(#service_lit) {
                                ::core::panic!(#writes)
                            }
                            i += 1;
                        }
                    };
                });
                calls.push(quote_spanned!(path.span()=> .handler::<#path>()));
            }
            Line::Table { topic, value, span } => {
                let (decl, what) = match topic {
                    Some(path) => (quote!(#path), shown(path)),
                    None => {
                        (quote_spanned!(value.span()=> <#value as #private::BoundEvent>::TOPIC), shown(value))
                    }
                };
                let message = format!(
                    "service `{service}` may not keep a table of `{what}`: it is another service's private \
                     topic, and only its owner reads a private topic"
                );
                let at = topic.as_ref().map_or_else(|| value.span(), Spanned::span);
                checks.push(quote_spanned! {at=>
                    const _: () = if !#private::TopicDecl::may_be_read_by(&#decl, #service_lit) {
                        ::core::panic!(#message)
                    };
                });
                calls.push(quote_spanned!(*span=> .table::<#value>(#decl)));
            }
            Line::Routes(expr) => calls.push(quote_spanned!(expr.span()=> .routes(#expr))),
        }
    }
    let attrs = &d.attrs;
    let vis = &d.vis;
    let ident = &d.ident;
    Ok(quote! {
        #(#attrs)*
        #vis fn #ident() -> #private::App<#state> {
            #(#checks)*
            #private::App::<#state>::new(#service_lit)
                #(#calls)*
        }
    })
}

/// A type or path as written, for messages.
fn shown(tokens: &impl quote::ToTokens) -> String {
    tokens.to_token_stream().to_string().replace(" :: ", "::").replace(" < ", "<").replace(" >", ">")
}
