//! The sample stock service of the backbone estate; the estate issue fills it.

fn main() {}
