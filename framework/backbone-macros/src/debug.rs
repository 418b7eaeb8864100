//! `BACKBONE_MACRO_DEBUG=1`: print what a macro expands to.

use proc_macro2::TokenStream;

/// Prints `tokens` to stderr (what cargo shows of a build) when `BACKBONE_MACRO_DEBUG=1` is in the
/// build's environment. Cargo does not rebuild a crate because that variable changed: touch the
/// file (or `cargo clean -p <crate>`) to see it.
pub(crate) fn print(what: &str, name: &dyn std::fmt::Display, tokens: &TokenStream) {
    if std::env::var_os("BACKBONE_MACRO_DEBUG").is_some_and(|v| v == "1") {
        eprintln!("{what} for `{name}` expands to:\n{tokens}\n");
    }
}
