use std::collections::BTreeSet;

use backbone::TopicSpec;
use backbone::headers::dead_letter as dlq_headers;
use rdkafka::message::Headers as _;

use super::args::parse_offsets;
use super::letter::{Letter, truncate};
use super::replay::{DLQ_HEADER_PREFIX, REPLAY_HANDLER, REPLAYED_FROM, refuse_truncated};
use super::{dead_letter_prefix, dead_letter_topic_name, replay_target, retry_topic_name};

#[test]
fn truncated_dead_letters_are_not_replayed() {
    let letter = |offset: i64, truncated: Option<&[u8]>| Letter {
        topic: "s.private.dlq.t".into(),
        partition: 0,
        offset,
        key: None,
        payload: Some(b"the first 64 KiB".to_vec()),
        headers: truncated
            .map(|v| (dlq_headers::TRUNCATED.to_owned(), Some(v.to_vec())))
            .into_iter()
            .collect(),
    };
    assert!(refuse_truncated(&[letter(1, None), letter(2, Some(b"false"))]).is_ok());
    let refused = refuse_truncated(&[letter(1, None), letter(7, Some(b"true"))]).unwrap_err().to_string();
    assert!(refused.contains("s.private.dlq.t:7") && refused.contains("truncated"), "{refused}");
    assert!(refused.ends_with("nothing replayed"), "{refused}");
}

#[test]
fn offsets_parse_lists_and_ranges() {
    assert_eq!(parse_offsets("3,7,10-12").unwrap().0, BTreeSet::from([3, 7, 10, 11, 12]));
    assert_eq!(parse_offsets(" 5 , 5,4-4").unwrap().0, BTreeSet::from([4, 5]));
    for bad in ["", "a", "3,", "-1", "5-3", "1-2-3", "0-99999999"] {
        assert!(parse_offsets(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(parse_offsets("5-3").unwrap_err().contains("backwards"));
}

#[test]
fn the_dead_letter_topic_is_named_as_the_consumer_names_it() {
    let source = TopicSpec::public("orders", "created", 1).build().unwrap();
    let framework = backbone::consume::dead_letter_topic("stock", &source).unwrap();
    assert_eq!(dead_letter_topic_name("stock", source.name()).unwrap(), framework.name());
    let retry = backbone::consume::retry_topic("stock", &source).unwrap();
    assert_eq!(retry_topic_name("stock", source.name()).unwrap(), retry.name());
    assert!(framework.name().starts_with(&dead_letter_prefix("stock").unwrap()));
    assert!(dead_letter_prefix("Stock*").is_err());
}

#[test]
fn replays_go_back_to_the_services_own_private_topics_only() {
    let commands = TopicSpec::private("stock", "commands").build().unwrap();
    let orders = TopicSpec::public("orders", "order", 1).build().unwrap();
    let own_public = TopicSpec::public("stock", "level", 1).build().unwrap();
    for (source, back) in [(&commands, true), (&orders, false), (&own_public, false)] {
        assert_eq!(backbone::consume::replays_to_source("stock", source), back, "{}", source.name());
        let target = replay_target("stock", source.name()).unwrap();
        let expected = match back {
            true => source.name().to_owned(),
            false => retry_topic_name("stock", source.name()).unwrap(),
        };
        assert_eq!(target, expected, "the CLI and the runtime agree for {}", source.name());
    }
    // Another service's private topic is not this one's.
    let theirs = TopicSpec::private("orders", "state").build().unwrap();
    assert_ne!(replay_target("stock", theirs.name()).unwrap(), theirs.name());
}

#[test]
fn every_dead_letter_header_is_dropped_on_replay() {
    use dlq_headers as h;
    for name in [
        h::ORIGIN_TOPIC,
        h::ORIGIN_PARTITION,
        h::ORIGIN_OFFSET,
        h::ORIGIN_KEY,
        h::ERROR_KIND,
        h::ERROR_MESSAGE,
        h::HANDLER,
        h::ATTEMPTS,
    ] {
        assert!(name.starts_with(DLQ_HEADER_PREFIX), "{name}");
    }
    let letter = Letter {
        topic: "s.private.dlq.t".into(),
        partition: 0,
        offset: 4,
        key: None,
        payload: None,
        headers: vec![
            (h::ORIGIN_TOPIC.into(), Some(b"t".to_vec())),
            (h::HANDLER.into(), Some(b"reserve".to_vec())),
            ("tenant".into(), Some(b"acme".to_vec())),
            (REPLAYED_FROM.into(), Some(b"s.private.dlq.t:1".to_vec())),
            (REPLAY_HANDLER.into(), Some(b"audit".to_vec())),
            ("empty".into(), None),
        ],
    };
    let headers = letter.replay_headers();
    let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
    assert_eq!(
        got,
        [
            ("tenant", Some(&b"acme"[..])),
            ("empty", None),
            (REPLAYED_FROM, Some(&b"s.private.dlq.t:4"[..])),
            (REPLAY_HANDLER, Some(&b"reserve"[..]))
        ]
    );
}

#[test]
fn replay_restores_the_original_headers_the_consumer_kept() {
    use dlq_headers as h;
    let original = |name: &str| format!("{}{name}", h::ORIGINAL_PREFIX);
    let letter = Letter {
        topic: "s.private.dlq.t".into(),
        partition: 0,
        offset: 9,
        key: None,
        payload: None,
        headers: vec![
            (h::ORIGIN_TOPIC.into(), Some(b"t".to_vec())),
            (h::HANDLER.into(), Some(b"apply".to_vec())),
            // A replayed event that failed again: its earlier replay's marks are replaced.
            (original(REPLAYED_FROM), Some(b"s.private.dlq.t:2".to_vec())),
            (original(REPLAY_HANDLER), Some(b"apply".to_vec())),
            // The dead letter's own publish headers: not the original's.
            (backbone::headers::EVENT_TYPE.into(), Some(b"DeadLetter".to_vec())),
            (original(backbone::headers::EVENT_TYPE), Some(b"OrderCreated".to_vec())),
            (original("traceparent"), Some(b"00-abc".to_vec())),
        ],
    };
    let headers = letter.replay_headers();
    let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
    assert_eq!(
        got,
        [
            (backbone::headers::EVENT_TYPE, Some(&b"OrderCreated"[..])),
            ("traceparent", Some(&b"00-abc"[..])),
            (REPLAYED_FROM, Some(&b"s.private.dlq.t:9"[..])),
            (REPLAY_HANDLER, Some(&b"apply"[..]))
        ]
    );
}

/// The origin topic's name said the producer (its owner) and the type (the public topic is named
/// for it): backbone left both headers out. The retry topic says neither, so the replay writes them.
#[test]
fn replay_names_what_the_origin_topics_name_said() {
    use backbone::headers::{EVENT_TYPE, PRODUCER};
    use dlq_headers as h;
    let original = |name: &str| format!("{}{name}", h::ORIGINAL_PREFIX);
    let letter = |payload: &[u8], originals: Vec<(String, Option<Vec<u8>>)>| Letter {
        topic: "stock.private.dlq.orders.public.order-created-v1".into(),
        partition: 0,
        offset: 3,
        key: None,
        payload: Some(payload.to_vec()),
        headers: [
            vec![
                (h::ORIGIN_TOPIC.into(), Some(b"orders.public.order-created-v1".to_vec())),
                (h::HANDLER.into(), Some(b"reserve".to_vec())),
                (EVENT_TYPE.into(), Some(b"DeadLetter".to_vec())),
                (PRODUCER.into(), Some(b"stock".to_vec())),
            ],
            originals,
        ]
        .concat(),
    };
    let got = |letter: Letter| {
        letter
            .replay_headers()
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect::<Vec<_>>()
    };
    let minimal = vec![(original("traceparent"), Some(b"00-abc".to_vec()))];
    let header = |k: &str, v: &[u8]| (k.to_owned(), Some(v.to_vec()));
    assert_eq!(
        got(letter(b"{}", minimal.clone())),
        [
            header("traceparent", b"00-abc"),
            header(EVENT_TYPE, b"OrderCreated"),
            header(PRODUCER, b"orders"),
            header(REPLAYED_FROM, b"stock.private.dlq.orders.public.order-created-v1:3"),
            header(REPLAY_HANDLER, b"reserve"),
        ]
    );
    // Framed with a schema id: the type is the schema's, not written.
    let framed = got(letter(&[0, 0, 0, 0, 7, 2], minimal));
    assert!(!framed.iter().any(|(k, _)| k == EVENT_TYPE), "{framed:?}");
    // An original of an older version names both already: nothing is added.
    let legacy = vec![
        (original(EVENT_TYPE), Some(b"OrderCreated".to_vec())),
        (original(PRODUCER), Some(b"orders".to_vec())),
        (original("traceparent"), Some(b"00-abc".to_vec())),
    ];
    let names: Vec<String> = got(letter(b"{}", legacy)).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, [EVENT_TYPE, PRODUCER, "traceparent", REPLAYED_FROM, REPLAY_HANDLER]);
}

#[test]
fn truncation_counts_characters() {
    assert_eq!(truncate("héllo", 10), "héllo");
    assert_eq!(truncate("héllo", 2), "hé…");
}
