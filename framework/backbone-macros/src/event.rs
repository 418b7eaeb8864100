//! `#[derive(Event)]`: bind a type to its topic, key field and `.avsc`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Fields, Ident, Lit, LitStr};

use crate::locate::Origin;

/// What `#[event(...)]` says.
struct Attr {
    topic: Expr,
    key: Ident,
    schema: LitStr,
}

pub(crate) fn expand(input: &DeriveInput, origin: &Origin) -> TokenStream {
    let tokens = expand_checked(input, origin).unwrap_or_else(syn::Error::into_compile_error);
    crate::debug::print("#[derive(Event)]", &input.ident, &tokens);
    tokens
}

fn expand_checked(input: &DeriveInput, origin: &Origin) -> syn::Result<TokenStream> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Event)] is for structs with named fields (an Avro record with a key field)",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &data.fields,
            "#[derive(Event)] is for structs with named fields (an Avro record with a key field)",
        ));
    };
    let attr = parse_attr(input)?;
    let topic = topic_decl(&attr.topic)?;
    let Some(key_field) = fields.named.iter().find(|f| f.ident.as_ref() == Some(&attr.key)) else {
        let names: Vec<String> =
            fields.named.iter().filter_map(|f| f.ident.as_ref().map(ToString::to_string)).collect();
        return Err(syn::Error::new_spanned(
            &attr.key,
            format!(
                "`{}` has no field `{}` to be its key (its fields: {})",
                input.ident,
                attr.key,
                names.join(", ")
            ),
        ));
    };
    let avro = crate::avro_event::expand_with(input, origin, attr.schema);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let private = quote!(::backbone::__private);
    let key = &attr.key;
    let key_ty = &key_field.ty;
    // The key's bytes, spanned on the field's type: a type that cannot be a key is reported there.
    let key_bytes = quote_spanned!(key_ty.span()=> <#key_ty as #private::EventKey>::key_bytes(&self.#key));
    let key_type = key_type_name(key_ty);
    Ok(quote! {
        #avro

        #[automatically_derived]
        impl #impl_generics #private::BoundEvent for #ident #ty_generics #where_clause {
            const TOPIC: #private::TopicDecl = #topic;
            const KEY_TYPE: &'static str = #key_type;

            fn topic() -> ::core::result::Result<&'static #private::TopicSpec, #private::TopicError> {
                static SPEC: #private::OnceLock<
                    ::core::result::Result<#private::TopicSpec, #private::TopicError>,
                > = #private::OnceLock::new();
                #private::cached_spec(&SPEC, &<Self as #private::BoundEvent>::TOPIC)
            }

            fn key(&self) -> #private::Cow<'_, [u8]> {
                #key_bytes
            }
        }
    })
}

/// The key's type as estate checks compare it, from how it is written (no trait bound, so a type
/// that cannot be a key is reported once, by `EventKey`): `String` and `&str` are `string`, `Vec<u8>`
/// and `[u8; N]` `bytes`, the integer keys their name; anything else (an alias …) is unknown, "".
fn key_type_name(ty: &syn::Type) -> &'static str {
    match ty {
        syn::Type::Reference(r) => key_type_name(&r.elem),
        syn::Type::Array(_) => "bytes",
        syn::Type::Path(p) => match p.path.segments.last().map(|s| s.ident.to_string()).as_deref() {
            Some("String" | "str") => "string",
            Some("Vec") => "bytes",
            Some("i32") => "i32",
            Some("i64") => "i64",
            Some("u32") => "u32",
            Some("u64") => "u64",
            _ => "",
        },
        _ => "",
    }
}

fn parse_attr(input: &DeriveInput) -> syn::Result<Attr> {
    let (mut topic, mut key, mut schema) = (None, None, None);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            let twice = |what: &str| meta.error(format!("`{what}` given twice"));
            if meta.path.is_ident("topic") {
                if topic.is_some() {
                    return Err(twice("topic"));
                }
                topic = Some(meta.value()?.parse::<Expr>()?);
            } else if meta.path.is_ident("key") {
                if key.is_some() {
                    return Err(twice("key"));
                }
                key = Some(meta.value()?.parse::<Ident>()?);
            } else if meta.path.is_ident("schema") {
                if schema.is_some() {
                    return Err(twice("schema"));
                }
                schema = Some(meta.value()?.parse::<LitStr>()?);
            } else {
                return Err(meta.error(
                    "unknown `event` attribute: expected `topic = …`, `key = field` or `schema = \"….avsc\"`",
                ));
            }
            Ok(())
        })?;
    }
    let missing = |what: &str| {
        syn::Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(Event)] needs `{what}` in #[event(topic = (\"owner\", \"event\", 1), key = field, \
                 schema = \"….avsc\")]"
            ),
        )
    };
    Ok(Attr {
        topic: topic.ok_or_else(|| missing("topic"))?,
        key: key.ok_or_else(|| missing("key"))?,
        schema: schema.ok_or_else(|| missing("schema"))?,
    })
}

/// `("orders", "order-created", 1)` (public), `("stock", "levels")` (private) or a path to a
/// `const` `TopicDecl`; literals are checked here, against the naming rules of `backbone::topic`.
fn topic_decl(expr: &Expr) -> syn::Result<TokenStream> {
    let private = quote!(::backbone::__private);
    let usage = "expected `topic = (\"owner\", \"event\", version)` for a public topic, \
                 `topic = (\"owner\", \"name\")` for a private one, or a path to a `const` `backbone::TopicDecl`";
    match expr {
        Expr::Path(path) => Ok(quote_spanned!(path.span()=> #path)),
        Expr::Tuple(tuple) => {
            let parts: Vec<&Expr> = tuple.elems.iter().collect();
            let owner = string(parts.first().copied(), tuple.span(), "the owning service")?;
            check_service_name(&owner)?;
            let name = string(parts.get(1).copied(), tuple.span(), "the topic's name")?;
            check_topic_name(&name)?;
            match parts.get(2) {
                None => Ok(quote!(#private::TopicDecl::private(#owner, #name))),
                Some(Expr::Lit(ExprLit { lit: Lit::Int(version), .. })) if parts.len() == 3 => {
                    if version.base10_parse::<u32>()? == 0 {
                        return Err(syn::Error::new_spanned(version, "contract versions start at 1"));
                    }
                    Ok(quote!(#private::TopicDecl::public(#owner, #name, #version)))
                }
                Some(other) => Err(syn::Error::new_spanned(other, usage)),
            }
        }
        other => Err(syn::Error::new_spanned(other, usage)),
    }
}

fn string(expr: Option<&Expr>, span: Span, what: &str) -> syn::Result<LitStr> {
    match expr {
        Some(Expr::Lit(ExprLit { lit: Lit::Str(s), .. })) => Ok(s.clone()),
        Some(other) => Err(syn::Error::new_spanned(other, format!("expected a string: {what}"))),
        None => Err(syn::Error::new(span, format!("missing {what}"))),
    }
}

/// The runtime's service-name rule (`backbone_names`), as a compile error on the literal.
pub(crate) fn check_service_name(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    if backbone_names::is_service_name(&name) {
        Ok(())
    } else {
        let rule = backbone_names::SERVICE_NAME_RULE;
        Err(syn::Error::new_spanned(lit, format!("`{name}` is not a service name: {rule}")))
    }
}

/// The runtime's rule for a topic's name part (`backbone_names`), as a compile error on the literal.
fn check_topic_name(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    if backbone_names::is_topic_name(&name) {
        Ok(())
    } else {
        let rule = backbone_names::TOPIC_NAME_RULE;
        Err(syn::Error::new_spanned(lit, format!("`{name}` is not a topic name: {rule}")))
    }
}
