//! The naming rules for backbone services and topics, written once.
//!
//! The runtime (`backbone::topic`) checks names when a service or topic is declared, the macros
//! check the literals they are given at compile time, and `backbone new service` checks a name
//! before it scaffolds anything. A proc-macro crate cannot depend on the runtime it expands into,
//! so the rules live here, in a crate with no dependencies, and all three call them.
//!
//! ```
//! assert!(backbone_names::is_service_name("stock"));
//! assert!(!backbone_names::is_service_name("Stock"));
//! assert!(backbone_names::is_topic_name("order-created"));
//! assert!(!backbone_names::is_topic_name("Order Created"));
//! ```

/// The longest service name: a service name is also a Kafka principal, a client-id prefix and a
/// DNS label in Kubernetes (RFC 1123), which allows 63 characters.
pub const MAX_SERVICE_NAME: usize = 63;

/// What [`is_service_name`] accepts, in words, for error messages.
pub const SERVICE_NAME_RULE: &str =
    "1–63 lower-case ASCII letters, digits and '-', starting with a letter and not ending with '-'";

/// What [`is_topic_name`] accepts, in words, for error messages.
pub const TOPIC_NAME_RULE: &str =
    "lower-case ASCII letters, digits, '-' and '.', starting with a letter or digit";

/// Whether `name` may name a service: see [`SERVICE_NAME_RULE`]. Such a name is a valid
/// Kubernetes DNS label and Cargo package name, and needs no quoting in a Kafka principal.
pub fn is_service_name(name: &str) -> bool {
    name.len() <= MAX_SERVICE_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `name` may be the name part of a topic a service declares (the framework adds the
/// `<service>.public.` or `<service>.private.` prefix and the `-v<N>` suffix): see
/// [`TOPIC_NAME_RULE`].
pub fn is_topic_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for good in ["a", "stock", "orders-v2", "a1-b2", &"s".repeat(63)] {
            assert!(is_service_name(good), "{good}");
        }
        for bad in ["", "Stock", "1stock", "-stock", "stock-", "st_ock", "stock.x", "stöck", &"s".repeat(64)]
        {
            assert!(!is_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn topic_names() {
        for good in ["order-created", "2fa", "orders.audit", "a"] {
            assert!(is_topic_name(good), "{good}");
        }
        for bad in ["", "Order", "-order", ".order", "order created", "order_created"] {
            assert!(!is_topic_name(bad), "{bad}");
        }
    }
}
