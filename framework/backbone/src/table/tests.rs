use super::*;
use crate::publish::Delivery;

#[test]
fn partitions_like_the_java_client() {
    // Against the broker's placement: tests/tables.rs.
    for (key, partitions) in [("", 6), ("a", 6), ("ab", 6), ("abc", 6), ("abcd", 6), ("order-42", 6)] {
        assert!((0..partitions).contains(&partition_for(key.as_bytes(), partitions)));
    }
}

#[test]
fn tokens_round_trip() {
    let d = Delivery { partition: 3, offset: 42 };
    assert_eq!(parse_token(&d.to_string()), Some(d));
    assert_eq!(parse_token("3"), None);
    assert_eq!(parse_token("-1:4"), None);
}

#[test]
fn not_ready_is_a_503_with_retry_after() {
    let e = NotReady::Restoring { table: "t".into(), partition: 1 };
    assert_eq!((e.status(), e.retry_after_secs()), (503, 1));
}
