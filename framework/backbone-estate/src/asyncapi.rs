//! AsyncAPI (todo).
