//! Graph (todo).
