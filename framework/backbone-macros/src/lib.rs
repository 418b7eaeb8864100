//! Procedural macros for backbone, re-exported by it: use them as `backbone::AvroEvent`,
//! `backbone::Event`, `#[backbone::handler]` and `backbone::service!`, not from this crate. The generated code names only `::backbone::…` paths, so the crate using a macro needs
//! `backbone` as a dependency (and nothing else).

mod avro;
mod avro_event;
mod debug;
mod event;
mod handler;
mod locate;
mod serde_attrs;
mod service;

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

/// Binds a type to its topic, its key field and its Avro contract: implements
/// `backbone::BoundEvent` (so `publisher.emit(&event)` needs no topic or key) and
/// `backbone::schema::AvroEvent` (with every check `#[derive(AvroEvent)]` makes).
///
/// ```ignore
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
/// #[serde(rename_all = "camelCase")]
/// #[event(topic = ("orders", "order-created", 1), key = id, schema = "schemas/orders/order-created-v1.avsc")]
/// pub struct OrderCreated {
///     pub id: String,
///     pub quantity: i32,
/// }
/// ```
///
/// - `topic = ("owner", "event", version)`: a public contract topic (`<owner>.public.<event>-v<N>`);
///   `topic = ("owner", "name")`: a private one (`<owner>.private.<name>`); or `topic = PATH` to a
///   `const` `backbone::TopicDecl` (for partitions, compaction, retention …). Literal names are
///   checked against the naming rules here.
/// - `key = field`: the field whose bytes are the Kafka key (`String`, `Vec<u8>`, `[u8; N]`,
///   integers as decimal text, or a type implementing `backbone::event::EventKey`). A field that
///   does not exist is an error on `key = …`; a type that cannot be a key, an error on the field.
/// - `schema = "….avsc"`: looked up and checked as by `#[derive(AvroEvent)]`; mismatches are
///   reported on the fields.
///
/// With `BACKBONE_MACRO_DEBUG=1` in the build's environment, the expansion is printed to stderr.
/// Cases that compile and that must not: `framework/backbone/tests/event/`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::expand(&input, &locate::Origin::current()).into()
}

/// Declares an event handler: an `async fn` whose arguments are extractors (`Event<T>`, `Key<K>`,
/// `Metadata`, `State<S>`, `Publisher`, `CorrelationId` …) and which returns `()` or
/// `Result<(), E>` with `E: Into<HandlerError>`.
///
/// ```ignore
/// #[backbone::handler(exactly_once)]
/// async fn reserve(Event(order): Event<OrderCreated>, State(stock): State<Stock>, out: Publisher)
///     -> Result<(), HandlerError> {
///     out.emit(&verdict(&order, &stock)).await?;
///     Ok(())
/// }
/// ```
///
/// The function stays as written (call it in tests); beside it the attribute declares a type of the
/// same name for `backbone::service!` (`handles reserve;`) or `App::handler::<reserve>()`: the topic
/// consumed is its `Event<T>` argument's (`T` a `#[derive(backbone::Event)]` type), the consumer
/// group `<service>.<handler>`.
///
/// Options: `exactly_once` (`Consumer::exactly_once`), `group = "…"` (another consumer group),
/// `emits(OrderChecked, …)` (bound events the handler publishes: the service declares them, and
/// `service!` checks at compile time that it owns their topics),
/// `topic = PATH` (a `const` `backbone::TopicDecl`, when the event type is not bound to a topic),
/// `state = Type` (the state the arguments are checked against, when no `State<S>` argument says).
///
/// Mistakes are reported on the code that makes them, in the spirit of axum's `debug_handler`: a
/// function that is not `async` (on `fn`), an argument that is not an extractor (on its type), a
/// return type that is not an outcome (on it), a future that is not `Send` (on the name).
/// Cases: `framework/backbone/tests/handler/`. `BACKBONE_MACRO_DEBUG=1` prints the expansion.
#[proc_macro_attribute]
pub fn handler(attr: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    handler::expand(attr.into(), item.into()).into()
}

/// Declares a whole service in one place: what it owns, publishes and consumes, its tables and its
/// HTTP routes; expands to a function returning the `backbone::App` built from it.
///
/// ```ignore
/// backbone::service! {
///     /// Stock: reserves stock for new orders and answers stock queries.
///     pub stock: Stock {
///         publishes OrderValidation;     // a bound event on a topic Stock owns (schema registered)
///         owns RESERVATIONS;             // a `const` TopicDecl Stock owns
///         table StockLevel;              // a table of a bound event's topic
///         table LEVELS: StockLevel;      // … or of a `const` TopicDecl
///         handles reserve;               // a #[backbone::handler]: its topic consumed, its `emits` published
///         routes http::routes();         // an axum Router<Stock>
///     }
/// }
///
/// stock().run_with(&config, |tables| Ok(Stock { levels: tables.of()? }), backbone::shutdown_signal()).await?;
/// ```
///
/// The service's name is the function's, `_` read as `-`. Each line is checked at compile time, by
/// `const` evaluation of the topics' owners and visibility, and an error points at the line:
/// publishing or owning a topic another service owns (with `publishes`, `owns`, or a handler's
/// `emits(…)`), consuming (a handler's topic, or a table's) another service's private topic. The same rules are checked again at start-up.
///
/// Why a function-like macro and not an attribute: a service is not a Rust item of its own (an
/// attribute would hang it on a struct or module whose fields or items mean nothing), the
/// declaration reads as one line per fact about the service, and each line has its own span for
/// the errors. Cases: `framework/backbone/tests/service/`. `BACKBONE_MACRO_DEBUG=1` prints the
/// expansion.
#[proc_macro]
pub fn service(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    service::expand(input.into()).into()
}
