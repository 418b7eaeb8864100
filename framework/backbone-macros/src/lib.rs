//! Procedural macros for backbone, re-exported by it: use them as `backbone::AvroEvent`, not from
//! this crate. The generated code names only `::backbone::…` paths, so the crate using a macro needs
//! `backbone` as a dependency (and nothing else).

mod avro;
mod avro_event;
mod locate;
mod serde_attrs;

/// Binds a type to its Avro contract (`.avsc`) and implements `backbone::schema::AvroEvent`, after
/// checking at compile time that the type matches the schema.
///
/// ```ignore
/// /// An order was placed.
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
/// #[serde(rename_all = "camelCase")]
/// #[avro(schema = "schemas/orders/order-created-v1.avsc")]
/// pub struct OrderCreated {
///     pub id: String,
///     pub customer_id: String,         // "customerId" in the schema
///     pub quantity: i32,
///     pub note: Option<String>,        // ["null", "string"]
///     pub state: OrderState,           // an Avro enum named OrderState
/// }
/// ```
///
/// (Examples that compile, and ones that must not, are in `framework/backbone/tests/avro_event/`.)
///
/// # The generated code
///
/// `SCHEMA` is the file's text, embedded at compile time; `schema()` parses it once into a static
/// (`backbone::schema::parse_once`). The file is also `include_bytes!`ed into an unused constant,
/// so cargo rebuilds the crate when the `.avsc` changes.
///
/// # Where the file is looked up
///
/// A relative path is looked up, first match wins:
///
/// 1. in the crate's directory (`CARGO_MANIFEST_DIR`);
/// 2. in the directory of the package holding the source file the derive is in (the nearest
///    `Cargo.toml` above it). It differs from 1 only when the file is compiled as part of another
///    crate, as trybuild does with its test cases (in a crate under `target/tests/trybuild/`): their
///    paths are relative to the crate the cases live in;
/// 3. in the parent directories of those two, nearest first, so a workspace-relative path such as
///    `schemas/orders/order-created-v1.avsc` works from any crate of the workspace.
///
/// An absolute path is taken as is.
///
/// # What is checked
///
/// - A struct with named fields needs a `record` schema; each Rust field must be a field of the
///   record and each record field a Rust field. A field's Avro name is its Rust name, after the
///   container's `#[serde(rename_all = "…")]` and the field's `#[serde(rename = "…")]`;
///   `#[serde(skip)]` fields are left out.
/// - Types, by the last segment of the Rust type's path (so `std::string::String` and `String` are
///   the same; a type alias is not seen through):
///
///   | Avro                                   | Rust                                        |
///   |----------------------------------------|---------------------------------------------|
///   | `null`                                 | `()`                                        |
///   | `boolean`                              | `bool`                                      |
///   | `int` (also `date`, `time-millis`)     | `i32`                                       |
///   | `long` (also `timestamp-millis` …)     | `i64`                                       |
///   | `float` / `double`                     | `f32` / `f64`                               |
///   | `bytes`                                | `Vec<u8>`, with `#[serde(with = "apache_avro::serde::bytes")]` |
///   | `string` (also `uuid`)                 | `String`                                    |
///   | `["null", T]` or `[T, "null"]`         | `Option<T>`                                 |
///   | `array` of `T`                         | `Vec<T>`                                    |
///   | `map` of `T`                           | `HashMap<String, T>` or `BTreeMap<String, T>` |
///   | `fixed` of size `S`                    | `[u8; S]`, with `#[serde(with = "apache_avro::serde::fixed")]` |
///   | `record`, `enum`, `fixed` named `N`    | a type whose name is `N` (not checked deeper) |
///
///   `Box<T>` is checked as `T`. Other unions have no Rust mapping and are refused. A `Vec<u8>` or
///   `[u8; N]` field (or an `Option` of one) needs a `#[serde(with = "…")]` (`bytes`, `bytes_opt`,
///   `fixed`, `fixed_opt` of `apache_avro::serde`, or your own): without it serde hands Avro a list
///   of numbers, which the encoder refuses. Nested records and enums are checked by name only:
///   derive `AvroEvent` on them too, against their own files, to check them fully.
/// - An enum with unit variants needs an Avro `enum` schema, and its variants (after serde's renames)
///   must be exactly the schema's symbols.
///
/// Every mismatch is reported, each pointing at the field or type concerned:
///
/// ```text
/// error: field `quantity` is `i64` here but `int` in schemas/orders/order-created-v1.avsc (expected `i32`)
/// error: field `note` is not in schemas/orders/order-created-v1.avsc
/// error: schema field `price` (long) has no Rust field
/// ```
///
/// # Debugging
///
/// With `BACKBONE_MACRO_DEBUG=1` in the environment of the build, the derive prints each expansion
/// to stderr. Cargo does not rebuild a crate because that variable changed: touch the file (or
/// `cargo clean -p <crate>`) to see it.
#[proc_macro_derive(AvroEvent, attributes(avro))]
pub fn derive_avro_event(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    avro_event::expand(&input, &locate::Origin::current()).into()
}
