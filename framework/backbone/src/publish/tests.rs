//! Tests of publish errors that need no broker.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::*;

fn rejected(code: RDKafkaErrorCode) -> PublishError {
    PublishError::Rejected { topic: "t".into(), code }
}

#[test]
fn size_and_transaction_errors_are_told_apart() {
    use RDKafkaErrorCode as C;
    // librdkafka's local refusal and the broker's share code 10; a batch over the topic's limit is 18.
    let local = PublishError::from_kafka(
        "t",
        Duration::from_secs(1),
        KafkaError::MessageProduction(C::MessageSizeTooLarge),
    );
    assert!(local.is_too_large() && !local.is_retriable(), "{local}");
    assert!(rejected(C::MessageBatchTooLarge).is_too_large());
    assert!(!rejected(C::NotEnoughReplicas).is_too_large());
    assert!(!PublishError::TimedOut { topic: "t".into(), timeout: Duration::from_secs(1) }.is_too_large());

    for code in [C::State, C::Fatal, C::PurgeQueue, C::InvalidProducerEpoch, C::ProducerFenced] {
        assert!(rejected(code).breaks_transaction(), "{code:?}");
    }
    let denied = PublishError::from_kafka(
        "t",
        Duration::from_secs(1),
        KafkaError::MessageProduction(C::TopicAuthorizationFailed),
    );
    assert!(matches!(denied, PublishError::Unauthorized { .. }) && denied.breaks_transaction());
    assert!(!rejected(C::MessageSizeTooLarge).breaks_transaction());
    assert!(!PublishError::Closed.breaks_transaction());
}

mod metadata {
    use rdkafka::message::Headers as _;

    use super::super::order::Context;
    use super::super::publisher::metadata_headers;
    use super::*;

    const TRACEPARENT: &[u8; 55] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn written(topic: &str, event: Outgoing<'_>, correlation: Option<&str>) -> Vec<(String, String)> {
        let context = Context { correlation: correlation.map(str::to_owned), traceparent: *TRACEPARENT };
        let headers = metadata_headers(topic, &event, &context, "orders");
        headers
            .iter()
            .map(|h| (h.key.to_owned(), String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
            .collect()
    }

    fn names(headers: &[(String, String)]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    const EVENTS: &str = "orders.public.events-v1";
    const CREATED: &str = "orders.public.order-created-v1";

    #[test]
    fn a_schemaless_event_keeps_its_type_unless_the_topic_is_named_for_it() {
        let json = Outgoing::new("OrderCreated", b"k", b"{}");
        let on_events = written(EVENTS, json, None);
        assert_eq!(names(&on_events), [headers::EVENT_TYPE, headers::TRACEPARENT]);
        assert_eq!(on_events[0].1, "OrderCreated");
        // The topic is named for the type: traceparent alone.
        assert_eq!(names(&written(CREATED, json, None)), [headers::TRACEPARENT]);
        // Another type on that topic, a private topic, or a payload that looks framed keep it.
        let other = Outgoing::new("OrderCancelled", b"k", b"{}");
        assert_eq!(names(&written(CREATED, other, None))[0], headers::EVENT_TYPE);
        assert_eq!(names(&written("orders.private.state", json, None))[0], headers::EVENT_TYPE);
        let framed_looking = Outgoing::new("OrderCreated", b"k", &[0, 0, 0, 0, 1, 2]);
        assert_eq!(names(&written(CREATED, framed_looking, None))[0], headers::EVENT_TYPE);
        // A tombstone on the topic named for its type.
        assert_eq!(
            names(&written(CREATED, Outgoing::tombstone("OrderCreated", b"k"), None)),
            [headers::TRACEPARENT]
        );
    }

    #[test]
    fn a_schema_framed_event_carries_no_type() {
        let avro = Outgoing::new("OrderCreated", b"k", &[0, 0, 0, 0, 7, 2]).schema_framed();
        assert_eq!(names(&written(EVENTS, avro, None)), [headers::TRACEPARENT]);
    }

    #[test]
    fn the_correlation_id_is_written_only_when_it_is_not_the_trace_id() {
        let json = Outgoing::new("OrderCreated", b"k", b"{}");
        assert_eq!(names(&written(CREATED, json, Some(TRACE_ID))), [headers::TRACEPARENT]);
        let other = written(CREATED, json, Some("req-7"));
        assert_eq!(names(&other), [headers::CORRELATION_ID, headers::TRACEPARENT]);
        assert_eq!(other[0].1, "req-7");
    }

    #[test]
    fn full_metadata_writes_all_four_as_before() {
        let letter = Outgoing::new("DeadLetter", b"k", b"{}").full_metadata();
        let all = written(CREATED, letter, None);
        assert_eq!(
            names(&all),
            [headers::EVENT_TYPE, headers::PRODUCER, headers::CORRELATION_ID, headers::TRACEPARENT]
        );
        assert_eq!(all[1].1, "orders");
        assert_eq!(all[2].1, TRACE_ID);
        // Even framed: full means full.
        let framed = Outgoing::new("OrderCreated", b"k", &[0, 0, 0, 0, 7]).schema_framed().full_metadata();
        assert_eq!(written(EVENTS, framed, None).len(), 4);
    }
}
