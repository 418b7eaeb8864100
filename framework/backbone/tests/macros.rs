//! `#[derive(Event)]`, `#[backbone::handler]` and `backbone::service!`: what compiles and what each
//! refuses, and how (`.stderr` next to each failing case; regenerate with
//! `TRYBUILD=overwrite cargo test -p backbone --test macros` and read every one).

#[test]
fn derive_event_binds_types_to_topics_and_keys() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/event/pass/*.rs");
    cases.compile_fail("tests/event/fail/*.rs");
}

#[test]
fn handler_attribute_declares_handlers_and_explains_mistakes() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/handler/pass/*.rs");
    cases.compile_fail("tests/handler/fail/*.rs");
}

#[test]
fn service_macro_checks_ownership_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/service/pass/*.rs");
    cases.compile_fail("tests/service/fail/*.rs");
}
