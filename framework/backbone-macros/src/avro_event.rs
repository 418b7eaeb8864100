//! `#[derive(AvroEvent)]`: bind a type to its `.avsc` and check it against it.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, GenericArgument, LitStr, PathArguments, Type};

use crate::avro::{self, Avro, NamedKind, TopLevel};
use crate::locate::Origin;
use crate::serde_attrs;

/// Expands the derive; errors come back as `compile_error!`s. Mismatches with a schema that was read
/// come with the impl all the same, so that they are not followed by errors where the type is used.
pub(crate) fn expand(input: &DeriveInput, origin: &Origin) -> TokenStream {
    let tokens =
        schema_attr(input).map_or_else(|e| e.into_compile_error(), |lit| expand_with(input, origin, lit));
    crate::debug::print("#[derive(AvroEvent)]", &input.ident, &tokens);
    tokens
}

/// The `AvroEvent` impl for `input` bound to the `.avsc` `lit` names, with the type's mismatches
/// with it as `compile_error!`s (what `#[derive(Event)]` reuses).
pub(crate) fn expand_with(input: &DeriveInput, origin: &Origin, lit: LitStr) -> TokenStream {
    match expand_checked(input, origin, lit) {
        Ok((tokens, None)) => tokens,
        Ok((mut tokens, Some(mismatches))) => {
            tokens.extend(mismatches.into_compile_error());
            tokens
        }
        Err(e) => e.into_compile_error(),
    }
}

/// The `.avsc`, found and read.
struct SchemaFile {
    /// As written in the attribute (for messages and spans).
    lit: LitStr,
    /// Where it was found.
    path: std::path::PathBuf,
    text: String,
}

/// The impl, and the type's mismatches with the schema if any; `Err` if there is no impl to give.
fn expand_checked(
    input: &DeriveInput,
    origin: &Origin,
    lit: LitStr,
) -> syn::Result<(TokenStream, Option<syn::Error>)> {
    match &input.data {
        Data::Struct(data) if matches!(data.fields, Fields::Named(_)) => {}
        Data::Enum(data) => {
            if let Some(variant) = data.variants.iter().find(|v| !matches!(v.fields, Fields::Unit)) {
                return Err(syn::Error::new_spanned(
                    variant,
                    "#[derive(AvroEvent)] supports enums with unit variants only (an Avro enum)",
                ));
            }
        }
        _ => return Err(not_named(input)),
    }
    let shown = lit.value();
    let path = origin.find(&shown).map_err(|e| syn::Error::new_spanned(&lit, e))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| syn::Error::new_spanned(&lit, format!("cannot read {}: {e}", path.display())))?;
    let file = SchemaFile { lit, path, text };

    let json: serde_json::Value = serde_json::from_str(&file.text)
        .map_err(|e| syn::Error::new_spanned(&file.lit, format!("{shown} is not valid JSON: {e}")))?;
    let top = avro::parse_top_level(&json).map_err(|e| {
        syn::Error::new_spanned(&file.lit, format!("{shown} is not a valid Avro schema: {e}"))
    })?;

    let checked = match &input.data {
        Data::Enum(data) => check_enum(input, data, &top, &file),
        _ => check_struct(input, &top, &file),
    };
    Ok((generate(input, &file), checked.err()))
}

fn not_named(input: &DeriveInput) -> syn::Error {
    let message = "#[derive(AvroEvent)] supports structs with named fields (an Avro record), \
                   or enums with unit variants (an Avro enum)";
    match &input.data {
        Data::Struct(data) if !matches!(data.fields, Fields::Unit) => {
            syn::Error::new_spanned(&data.fields, message)
        }
        _ => syn::Error::new_spanned(&input.ident, message),
    }
}

/// The `schema = "…"` of `#[avro(...)]`.
fn schema_attr(input: &DeriveInput) -> syn::Result<LitStr> {
    let mut schema = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("avro")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("schema") {
                if schema.is_some() {
                    return Err(meta.error("`schema` given twice"));
                }
                schema = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else {
                Err(meta.error("unknown `avro` attribute: expected `schema = \"path.avsc\"`"))
            }
        })?;
    }
    schema.ok_or_else(|| {
        syn::Error::new_spanned(&input.ident, "#[derive(AvroEvent)] needs #[avro(schema = \"path.avsc\")]")
    })
}

/// Collects errors so that all of them are reported.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn check_struct(input: &DeriveInput, top: &TopLevel, file: &SchemaFile) -> syn::Result<()> {
    let Data::Struct(syn::DataStruct { fields, .. }) = &input.data else { return Ok(()) };
    let shown = file.lit.value();
    let TopLevel::Record { full_name: _, fields: avro_fields } = top else {
        return Err(syn::Error::new_spanned(
            &file.lit,
            format!("not a record schema: {shown} is {}, and a struct needs a record", describe(top)),
        ));
    };
    let container = serde_attrs::container(&input.attrs)?;
    let mut errors = Errors::default();
    let mut seen = HashSet::new();
    for field in fields {
        let Some(ident) = &field.ident else { continue };
        let attrs = match serde_attrs::member(&field.attrs) {
            Ok(attrs) => attrs,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if attrs.skip {
            continue;
        }
        if let Some(span) = attrs.flatten {
            errors.push(syn::Error::new(span, "#[derive(AvroEvent)] cannot check #[serde(flatten)] fields"));
            continue;
        }
        let rust_name = ident.unraw().to_string();
        let avro_name = match (&attrs.rename, container.rename_all) {
            (Some(name), _) => name.clone(),
            (None, Some(rule)) => rule.field(&rust_name),
            (None, None) => rust_name.clone(),
        };
        let named = if avro_name == rust_name {
            format!("field `{rust_name}`")
        } else {
            format!("field `{rust_name}` (`{avro_name}` in Avro)")
        };
        let Some(avro_field) = avro_fields.iter().find(|f| f.name == avro_name) else {
            errors.push(syn::Error::new_spanned(ident, format!("{named} is not in {shown}")));
            continue;
        };
        seen.insert(avro_name);
        match avro_field.ty.rust() {
            None => errors.push(syn::Error::new_spanned(
                &field.ty,
                format!(
                    "{named} is `{}` in {shown}, which #[derive(AvroEvent)] cannot map to a Rust type \
                     (of unions, only [\"null\", T] is supported, as Option<T>)",
                    avro_field.ty
                ),
            )),
            Some(expected) if !matches(&field.ty, &avro_field.ty) => errors.push(syn::Error::new_spanned(
                &field.ty,
                format!(
                    "{named} is `{}` here but `{}` in {shown} (expected `{expected}`)",
                    show_type(&field.ty),
                    avro_field.ty
                ),
            )),
            Some(_) if is_bytes(&field.ty) && !attrs.with => {
                let ty = peel(&field.ty);
                let option = generic(ty, "Option", 1);
                let inner = option.as_ref().map_or(ty, |args| peel(args[0]));
                let (module, what) = match (byte_array_len(inner).is_some(), option.is_some()) {
                    (false, false) => ("bytes", "bytes"),
                    (false, true) => ("bytes_opt", "bytes"),
                    (true, false) => ("fixed", "fixed"),
                    (true, true) => ("fixed_opt", "fixed"),
                };
                errors.push(syn::Error::new_spanned(
                    &field.ty,
                    format!(
                        "{named} is Avro {what}: add #[serde(with = \"apache_avro::serde::{module}\")] \
                         (without it serde hands Avro a list of numbers, which the encoder refuses as {what})"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for avro_field in avro_fields.iter().filter(|f| !seen.contains(&f.name)) {
        let hint = container
            .rename_all
            .and_then(|rule| rule.field_for(&avro_field.name))
            .filter(|rust_name| *rust_name != avro_field.name)
            .map(|rust_name| format!(" (it would be `{rust_name}`)"))
            .unwrap_or_default();
        errors.push(syn::Error::new_spanned(
            &input.ident,
            format!("schema field `{}` ({}) has no Rust field{hint}", avro_field.name, avro_field.ty),
        ));
    }
    errors.finish()
}

fn check_enum(
    input: &DeriveInput,
    data: &syn::DataEnum,
    top: &TopLevel,
    file: &SchemaFile,
) -> syn::Result<()> {
    let shown = file.lit.value();
    let TopLevel::Enum { full_name, symbols } = top else {
        return Err(syn::Error::new_spanned(
            &file.lit,
            format!("not an enum schema: {shown} is {}, and an enum needs an Avro enum", describe(top)),
        ));
    };
    let simple = full_name.rsplit('.').next().unwrap_or(full_name);
    let container = serde_attrs::container(&input.attrs)?;
    let mut errors = Errors::default();
    let mut seen = HashSet::new();
    for variant in &data.variants {
        let attrs = match serde_attrs::member(&variant.attrs) {
            Ok(attrs) => attrs,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if attrs.skip {
            continue;
        }
        let rust_name = variant.ident.unraw().to_string();
        let symbol = match (&attrs.rename, container.rename_all) {
            (Some(name), _) => name.clone(),
            (None, Some(rule)) => rule.variant(&rust_name),
            (None, None) => rust_name.clone(),
        };
        if symbols.contains(&symbol) {
            seen.insert(symbol);
        } else {
            let named = if symbol == rust_name {
                format!("variant `{rust_name}`")
            } else {
                format!("variant `{rust_name}` (`{symbol}` in Avro)")
            };
            errors.push(syn::Error::new_spanned(
                &variant.ident,
                format!(
                    "{named} is not a symbol of enum `{simple}` in {shown} (symbols: {})",
                    symbols.join(", ")
                ),
            ));
        }
    }
    for symbol in symbols.iter().filter(|s| !seen.contains(*s)) {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            format!("symbol `{symbol}` of enum `{simple}` has no Rust variant"),
        ));
    }
    errors.finish()
}

fn describe(top: &TopLevel) -> String {
    match top {
        TopLevel::Record { full_name, .. } => format!("a record (`{full_name}`)"),
        TopLevel::Enum { full_name, .. } => format!("an enum (`{full_name}`)"),
        TopLevel::Other(ty) => format!("`{ty}`"),
    }
}

fn generate(input: &DeriveInput, file: &SchemaFile) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let text = LitStr::new(&file.text, file.lit.span());
    let private = quote!(::backbone::__private);
    // `include_bytes!` makes the crate depend on the file: cargo rebuilds it when the file changes.
    let tracked = file.path.to_str().map(|path| {
        let path = LitStr::new(path, Span::call_site());
        quote!(
            const _: &[u8] = include_bytes!(#path);
        )
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::AvroEvent for #ident #ty_generics #where_clause {
            const SCHEMA: &'static str = #text;

            fn schema() -> &'static #private::apache_avro::Schema {
                static SCHEMA: #private::OnceLock<#private::apache_avro::Schema> = #private::OnceLock::new();
                #private::parse_once(&SCHEMA, <Self as #private::AvroEvent>::SCHEMA)
            }
        }
        #tracked
    }
}

/// Whether the Rust type `ty` is the Rust form of the Avro type `avro`. The last path segment names
/// the type (`std::string::String` and `String` alike); named Avro types match a Rust type of the
/// same (simple) name, not deeper.
fn matches(ty: &Type, avro: &Avro) -> bool {
    let ty = peel(ty);
    if let Some(inner) = generic(ty, "Box", 1) {
        return matches(inner[0], avro);
    }
    match avro {
        Avro::Null => matches!(ty, Type::Tuple(t) if t.elems.is_empty()),
        Avro::Boolean => is_plain(ty, "bool"),
        Avro::Int(_) => is_plain(ty, "i32"),
        Avro::Long(_) => is_plain(ty, "i64"),
        Avro::Float => is_plain(ty, "f32"),
        Avro::Double => is_plain(ty, "f64"),
        Avro::String(_) => is_plain(ty, "String"),
        Avro::Bytes(_) => generic(ty, "Vec", 1).is_some_and(|args| is_plain(peel(args[0]), "u8")),
        Avro::Array(items) => generic(ty, "Vec", 1).is_some_and(|args| matches(args[0], items)),
        Avro::Map(values) => ["HashMap", "BTreeMap"].iter().any(|map| {
            generic(ty, map, 2)
                .is_some_and(|args| is_plain(peel(args[0]), "String") && matches(args[1], values))
        }),
        Avro::Union(variants) => match avro::optional(variants) {
            Some(inner) => generic(ty, "Option", 1).is_some_and(|args| matches(args[0], inner)),
            None => false,
        },
        Avro::Named(named) => {
            last_segment(ty).is_some_and(|seg| seg.ident == named.simple_name())
                || matches!(named.kind, NamedKind::Fixed(size) if byte_array_len(ty) == Some(size))
        }
    }
}

/// `N` of `[u8; N]` (with `N` a literal).
fn byte_array_len(ty: &Type) -> Option<u64> {
    let Type::Array(array) = ty else { return None };
    let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(len), .. }) = &array.len else { return None };
    if is_plain(peel(&array.elem), "u8") { len.base10_parse().ok() } else { None }
}

/// Whether `ty` is `Vec<u8>` or `[u8; N]`, or an `Option` of one: what serde (de)serializes as a list
/// of numbers unless told otherwise, and Avro reads back as bytes, which serde then refuses.
fn is_bytes(ty: &Type) -> bool {
    let ty = peel(ty);
    if let Some(inner) = generic(ty, "Option", 1) {
        return is_bytes(inner[0]);
    }
    generic(ty, "Vec", 1).is_some_and(|args| is_plain(peel(args[0]), "u8")) || byte_array_len(ty).is_some()
}

fn peel(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(g) => ty = &g.elem,
            Type::Paren(p) => ty = &p.elem,
            _ => return ty,
        }
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

/// `name` without generic arguments.
fn is_plain(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|seg| seg.ident == name && seg.arguments.is_none())
}

/// The type arguments of `name<…>`, if `ty` is that with at least `min` of them (`HashMap` may have a
/// third, its hasher).
fn generic<'a>(ty: &'a Type, name: &str, min: usize) -> Option<Vec<&'a Type>> {
    let seg = last_segment(ty).filter(|seg| seg.ident == name)?;
    let PathArguments::AngleBracketed(args) = &seg.arguments else { return None };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    (types.len() >= min).then_some(types)
}

/// A type as the user would write it: `Option<i64>`, not `Option < i64 >`.
fn show_type(ty: &Type) -> String {
    let mut out = String::new();
    let text = ty.to_token_stream().to_string();
    for (i, token) in text.split(' ').enumerate() {
        let glue = matches!(token, "<" | ">" | "," | "::" | ">>" | "]" | ";" | ")")
            || out.ends_with(['<', '&', '[', '('])
            || out.ends_with("::");
        if i > 0 && !glue {
            out.push(' ');
        }
        out.push_str(token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(text: &str) -> Type {
        syn::parse_str(text).unwrap()
    }

    fn field_type(json: &str) -> Avro {
        let record =
            format!(r#"{{"type": "record", "name": "R", "fields": [{{"name": "f", "type": {json}}}]}}"#);
        match avro::parse_top_level(&serde_json::from_str(&record).unwrap()).unwrap() {
            TopLevel::Record { mut fields, .. } => fields.remove(0).ty,
            _ => unreachable!(),
        }
    }

    #[test]
    fn rust_types_match_their_avro_types() {
        let cases = [
            (r#""int""#, "i32", "i64"),
            (r#""long""#, "i64", "u64"),
            (r#"{"type": "long", "logicalType": "timestamp-millis"}"#, "i64", "String"),
            (r#""string""#, "std::string::String", "&'static str"),
            (r#""boolean""#, "bool", "Option<bool>"),
            (r#""float""#, "f32", "f64"),
            (r#""double""#, "f64", "f32"),
            (r#""bytes""#, "Vec<u8>", "Vec<i8>"),
            (r#""null""#, "()", "Option<()>"),
            (r#"["null", "string"]"#, "Option<String>", "String"),
            (r#"["string", "null"]"#, "core::option::Option<String>", "Option<i32>"),
            (r#"{"type": "array", "items": "int"}"#, "Vec<i32>", "Vec<i64>"),
            (r#"{"type": "map", "values": "long"}"#, "HashMap<String, i64>", "HashMap<i64, i64>"),
            (
                r#"{"type": "map", "values": "long"}"#,
                "std::collections::BTreeMap<String, i64>",
                "Vec<(String, i64)>",
            ),
            (r#"{"type": "map", "values": "long"}"#, "HashMap<String, i64, S>", "HashMap<String, i32>"),
            (r#"{"type": "enum", "name": "a.State", "symbols": ["X"]}"#, "crate::State", "String"),
            (r#"{"type": "record", "name": "Inner", "fields": []}"#, "Box<Inner>", "Other"),
            (r#"{"type": "fixed", "name": "Md5", "size": 16}"#, "[u8; 16]", "[u8; 15]"),
            (r#"{"type": "fixed", "name": "Md5", "size": 16}"#, "Md5", "Vec<u8>"),
        ];
        for (json, good, bad) in cases {
            let avro = field_type(json);
            assert!(matches(&ty(good), &avro), "{good} should match {avro}");
            assert!(!matches(&ty(bad), &avro), "{bad} should not match {avro}");
        }
    }

    #[test]
    fn types_are_shown_as_written() {
        for text in [
            "Option<i64>",
            "Vec<Option<String>>",
            "HashMap<String, i64>",
            "&'a str",
            "[u8; 16]",
            "(i32, String)",
            "std::string::String",
        ] {
            assert_eq!(show_type(&ty(text)), text);
        }
    }
}
