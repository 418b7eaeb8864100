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
    assert!(!rejected(C::MessageSizeTooLarge).breaks_transaction());
    assert!(!PublishError::Closed.breaks_transaction());
}
