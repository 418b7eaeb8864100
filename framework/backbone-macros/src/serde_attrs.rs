//! The `#[serde(...)]` attributes that change a field's or variant's name on the wire, read the way
//! serde reads them.

use syn::parse::ParseStream;
use syn::{Attribute, LitStr, Token};

/// serde's `rename_all` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    fn parse(lit: &LitStr) -> syn::Result<Self> {
        Ok(match lit.value().as_str() {
            "lowercase" => Self::Lower,
            "UPPERCASE" => Self::Upper,
            "PascalCase" => Self::Pascal,
            "camelCase" => Self::Camel,
            "snake_case" => Self::Snake,
            "SCREAMING_SNAKE_CASE" => Self::ScreamingSnake,
            "kebab-case" => Self::Kebab,
            "SCREAMING-KEBAB-CASE" => Self::ScreamingKebab,
            other => return Err(syn::Error::new_spanned(lit, format!("unknown rename rule `{other}`"))),
        })
    }

    /// A (snake_case) field's name under this rule.
    pub(crate) fn field(self, field: &str) -> String {
        match self {
            Self::Lower | Self::Snake => field.to_owned(),
            Self::Upper | Self::ScreamingSnake => field.to_ascii_uppercase(),
            Self::Pascal => {
                let mut pascal = String::with_capacity(field.len());
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            Self::Camel => lower_first(&Self::Pascal.field(field)),
            Self::Kebab => field.replace('_', "-"),
            Self::ScreamingKebab => Self::ScreamingSnake.field(field).replace('_', "-"),
        }
    }

    /// The snake_case field name this rule turns into `name`, if there is one.
    pub(crate) fn field_for(self, name: &str) -> Option<String> {
        let mut snake = String::with_capacity(name.len() + 4);
        for (i, ch) in name.char_indices() {
            match ch {
                '-' => snake.push('_'),
                c if c.is_uppercase()
                    && i > 0
                    && !matches!(self, Self::Upper | Self::ScreamingSnake | Self::ScreamingKebab) =>
                {
                    snake.push('_');
                    snake.extend(c.to_lowercase());
                }
                c => snake.extend(c.to_lowercase()),
            }
        }
        (self.field(&snake) == name).then_some(snake)
    }

    /// A (PascalCase) variant's name under this rule.
    pub(crate) fn variant(self, variant: &str) -> String {
        match self {
            Self::Pascal => variant.to_owned(),
            Self::Lower => variant.to_ascii_lowercase(),
            Self::Upper => variant.to_ascii_uppercase(),
            Self::Camel => lower_first(variant),
            Self::Snake => {
                let mut snake = String::with_capacity(variant.len() + 4);
                for (i, ch) in variant.char_indices() {
                    if i > 0 && ch.is_uppercase() {
                        snake.push('_');
                    }
                    snake.push(ch.to_ascii_lowercase());
                }
                snake
            }
            Self::ScreamingSnake => Self::Snake.variant(variant).to_ascii_uppercase(),
            Self::Kebab => Self::Snake.variant(variant).replace('_', "-"),
            Self::ScreamingKebab => Self::ScreamingSnake.variant(variant).replace('_', "-"),
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What the container's `#[serde(...)]` says about names.
#[derive(Debug, Default)]
pub(crate) struct Container {
    pub(crate) rename_all: Option<RenameRule>,
}

/// What a field's or variant's `#[serde(...)]` says about its name.
#[derive(Debug, Default)]
pub(crate) struct Member {
    pub(crate) rename: Option<String>,
    /// `#[serde(skip)]`: not on the wire at all.
    pub(crate) skip: bool,
    /// `#[serde(flatten)]`, which the derive cannot check.
    pub(crate) flatten: Option<proc_macro2::Span>,
    /// `#[serde(with = "…")]` or `#[serde(deserialize_with = "…")]`: its own (de)serialization.
    pub(crate) with: bool,
}

pub(crate) fn container(attrs: &[Attribute]) -> syn::Result<Container> {
    let mut out = Container::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                let lit = one_name(&meta)?;
                out.rename_all = Some(RenameRule::parse(&lit)?);
                Ok(())
            } else {
                skip_meta(meta.input)
            }
        })?;
    }
    Ok(out)
}

pub(crate) fn member(attrs: &[Attribute]) -> syn::Result<Member> {
    let mut out = Member::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                out.rename = Some(one_name(&meta)?.value());
                Ok(())
            } else if meta.path.is_ident("skip") {
                out.skip = true;
                Ok(())
            } else if meta.path.is_ident("flatten") {
                out.flatten = Some(syn::spanned::Spanned::span(&meta.path));
                Ok(())
            } else if meta.path.is_ident("with") || meta.path.is_ident("deserialize_with") {
                out.with = true;
                skip_meta(meta.input)
            } else {
                skip_meta(meta.input)
            }
        })?;
    }
    Ok(out)
}

/// `key = "x"`, or `key(serialize = "x", deserialize = "x")` with the same name both ways (an Avro
/// field has one name).
fn one_name(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    if meta.input.peek(Token![=]) {
        return meta.value()?.parse();
    }
    let (mut ser, mut de) = (None::<LitStr>, None::<LitStr>);
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("serialize") {
            ser = Some(inner.value()?.parse()?);
        } else if inner.path.is_ident("deserialize") {
            de = Some(inner.value()?.parse()?);
        } else {
            return Err(inner.error("expected `serialize` or `deserialize`"));
        }
        Ok(())
    })?;
    match (ser, de) {
        (Some(s), Some(d)) if s.value() == d.value() => Ok(s),
        (Some(s), Some(_)) | (Some(s), None) | (None, Some(s)) => Err(syn::Error::new_spanned(
            &s,
            "#[derive(AvroEvent)] needs the same name for serialize and deserialize (an Avro name is one name)",
        )),
        (None, None) => Err(meta.error("expected `serialize = \"…\"` and `deserialize = \"…\"`")),
    }
}

/// Skips a serde key the derive does not care about: `key`, `key = value` or `key(...)`.
fn skip_meta(input: ParseStream<'_>) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<syn::Expr>()?;
    } else if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RenameRule::{self, *};

    const RULES: [RenameRule; 8] =
        [Lower, Upper, Pascal, Camel, Snake, ScreamingSnake, Kebab, ScreamingKebab];

    #[test]
    fn fields_and_variants_are_renamed_as_serde_does() {
        let fields = [
            "customer_id",
            "CUSTOMER_ID",
            "CustomerId",
            "customerId",
            "customer_id",
            "CUSTOMER_ID",
            "customer-id",
            "CUSTOMER-ID",
        ];
        let variants = [
            "outofstock",
            "OUTOFSTOCK",
            "OutOfStock",
            "outOfStock",
            "out_of_stock",
            "OUT_OF_STOCK",
            "out-of-stock",
            "OUT-OF-STOCK",
        ];
        for ((rule, field), variant) in RULES.into_iter().zip(fields).zip(variants) {
            assert_eq!(rule.field("customer_id"), field, "{rule:?}");
            assert_eq!(rule.variant("OutOfStock"), variant, "{rule:?}");
        }
    }

    #[test]
    fn the_rust_field_behind_an_avro_name_is_found_for_the_hint() {
        for rule in RULES {
            assert_eq!(rule.field_for(&rule.field("placed_at")).as_deref(), Some("placed_at"), "{rule:?}");
        }
        assert_eq!(Camel.field_for("placed_at"), None);
    }
}
