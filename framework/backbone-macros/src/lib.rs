//! Procedural macros for backbone. They are thin sugar over the builder API and arrive with the
//! macros issue; this crate is a placeholder so the workspace layout is complete.
