//! Issue items 5 and 9 against the real broker: a reply whose header name is not UTF-8 neither kills
//! the requester's reply reader nor loses its headers; a request with a huge timeout neither panics
//! nor sends a deadline beyond `request::MAX_DEADLINE`. And the responder's failures: a refusal or a
//! panic is an error reply, a retriable error is retried until answered or, past the request's
//! deadline, the request is left unanswered and its partition moves on.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backbone::consume::{ConsumerHooks, dead_letter_topic};
use backbone::handler::{Event, HandlerError, State};
use backbone::request::{self, MAX_DEADLINE, RequestError, Requester, headers};
use backbone::{Service, TopicSpec};
use backbone_testkit::{shared_kafka, unique};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{BaseProducer, Producer as _};

mod common;

/// A header name that is not UTF-8.
const BAD_NAME: &[u8] = b"\xff\xfe-not-utf-8";

/// Writes a record with `headers` whose names are raw bytes (NUL-free): rdkafka's safe API takes
/// header names as `&str` only, so this goes through librdkafka's C API.
#[allow(unsafe_code)] // The test must write a header name that is not UTF-8 (see above).
fn produce_raw(producer: &BaseProducer, topic: &str, key: &[u8], payload: &[u8], headers: &[(&[u8], &[u8])]) {
    use rdkafka::bindings as rd;
    let topic = CString::new(topic).unwrap();
    let names: Vec<CString> = headers.iter().map(|(n, _)| CString::new(*n).unwrap()).collect();
    let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
    let mem = |bytes: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 {
        mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
            ptr: bytes.as_ptr().cast_mut().cast(),
            size: bytes.len(),
        },
    };
    let mut vus = vec![
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC,
            rd::rd_kafka_vu_s__bindgen_ty_1 { cstr: topic.as_ptr() },
        ),
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, mem(key)),
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, mem(payload)),
        // RD_KAFKA_MSG_F_COPY: librdkafka copies key and payload.
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS, rd::rd_kafka_vu_s__bindgen_ty_1 { i: 0x2 }),
    ];
    for (name, (_, value)) in names.iter().zip(headers) {
        let header = rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
            name: name.as_ptr(),
            val: value.as_ptr().cast(),
            size: isize::try_from(value.len()).unwrap(),
        };
        vus.push(vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADER, rd::rd_kafka_vu_s__bindgen_ty_1 { header }));
    }
    // SAFETY: a live producer; every pointer in `vus` outlives the call, and librdkafka copies the
    // key, payload and headers (MSG_F_COPY; headers are always copied).
    let error = unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len()) };
    assert!(error.is_null(), "produceva failed");
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

/// Answers `count` requests on `requests` by hand: the first reply also carries a header named
/// [`BAD_NAME`]. Returns each request's deadline header.
fn answer_by_hand(requests: &str, replies: &str, count: usize) -> Vec<u64> {
    let reader: BaseConsumer =
        shared_kafka().client_config().set("group.id", unique("hand")).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(requests, 0, rdkafka::Offset::Beginning).unwrap();
    reader.assign(&tpl).unwrap();
    let producer: BaseProducer = shared_kafka().client_config().create().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut deadlines = Vec::new();
    while deadlines.len() < count && std::time::Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let header = |name: &str| {
            let h = message.headers().unwrap();
            h.iter().find(|h| h.key == name).and_then(|h| h.value).unwrap().to_vec()
        };
        let (id, requester) = (header(headers::REQUEST_ID), header(headers::REQUESTER));
        deadlines.push(String::from_utf8(header(headers::DEADLINE)).unwrap().parse().unwrap());
        let answer = format!("answer-{}", deadlines.len() - 1);
        let mut reply: Vec<(&[u8], &[u8])> =
            vec![(headers::REQUEST_ID.as_bytes(), &id), (headers::REQUESTER.as_bytes(), &requester)];
        if deadlines.len() == 1 {
            reply.push((BAD_NAME, b"odd"));
        }
        produce_raw(&producer, replies, &id, answer.as_bytes(), &reply);
    }
    deadlines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_5_and_9_a_reply_with_a_header_name_not_utf8_and_a_huge_timeout_are_handled() {
    let config = common::config(shared_kafka().bootstrap_servers());
    let (responder, requester) = (unique("stock"), unique("orders"));
    let requests: TopicSpec = request::request_topic(&requester, "probe").partitions(1).build().unwrap();
    let replies = request::reply_topic(&responder, "probe").build().unwrap();
    let responding = Service::new(&responder).owns(&replies).spec().unwrap();
    let _responding = responding.start(&config).await.expect("provisions the reply topic");
    let spec = Service::new(&requester).owns(&requests).consumes(&replies).spec().unwrap();
    let running = spec.start(&config).await.expect("provisions the request topic");
    let requester = Requester::builder(&running.context(), &requests, &replies)
        .unwrap()
        .start()
        .await
        .expect("requester");
    let hand = {
        let (requests, replies) = (requests.name().to_owned(), replies.name().to_owned());
        tokio::task::spawn_blocking(move || answer_by_hand(&requests, &replies, 3))
    };

    // Item 5: the reply carrying a header named with bytes that are not UTF-8 reaches its caller,
    // that header included, and the reader lives on for the next.
    let first = requester.request(b"one", Duration::from_secs(30)).await.expect("the first reply");
    assert_eq!(first.payload(), b"answer-0");
    assert!(
        first.event().raw_headers().any(|(name, value)| name == BAD_NAME && value == b"odd"),
        "{:?}",
        first.event()
    );
    let second = requester.request(b"two", Duration::from_secs(30)).await.expect("a later reply");
    assert_eq!(second.payload(), b"answer-1");

    // Item 9: a huge timeout is capped, not a panic (`Instant + Duration::MAX` overflows).
    let sent = SystemTime::now();
    let third = requester.request(b"three", Duration::MAX).await.expect("the third reply");
    assert_eq!(third.payload(), b"answer-2");
    let deadlines = hand.await.unwrap();
    let latest = (sent + MAX_DEADLINE + Duration::from_secs(5)).duration_since(UNIX_EPOCH).unwrap();
    assert!(
        u128::from(deadlines[2]) <= latest.as_millis(),
        "the deadline sent is at most MAX_DEADLINE ahead: {deadlines:?}"
    );
    assert_eq!(requester.stats().reader_restarts, 0);
    requester.close().await;
}

/// A request handler that answers, refuses, panics or fails retriably as the request says; its
/// state counts the tries of `flaky`.
async fn moody(
    Event(what): Event<String>,
    State(tries): State<Arc<AtomicU32>>,
) -> Result<String, HandlerError> {
    match what.as_str() {
        "refuse" => Err(HandlerError::permanent("no such sku")),
        "panic" => panic!("boom"),
        "flaky" if tries.fetch_add(1, Ordering::SeqCst) < 2 => Err(HandlerError::retriable("database down")),
        "flaky" => Ok("recovered".to_owned()),
        "down" => Err(HandlerError::retriable("database down")),
        sku => Ok(format!("{sku}: 12")),
    }
}

/// Says when the responder has its partition.
struct Assigned(tokio::sync::watch::Sender<bool>);

impl ConsumerHooks for Assigned {
    fn assigned(&self, _: &str, partitions: &[i32]) {
        if !partitions.is_empty() {
            self.0.send_replace(true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responders_failures_are_error_replies_retries_or_no_answer_past_the_deadline() {
    let config = common::config(shared_kafka().bootstrap_servers());
    let (responder, requester) = (unique("stock"), unique("orders"));
    let requests: TopicSpec = request::request_topic(&requester, "moods").partitions(1).build().unwrap();
    let replies = request::reply_topic(&responder, "moods").build().unwrap();
    let spec = Service::new(&requester).owns(&requests).consumes(&replies).spec().unwrap();
    let requesting = spec.start(&config).await.expect("provisions the request topic");
    let dlq = dead_letter_topic(&responder, &requests).unwrap();
    let spec = Service::new(&responder).owns(&replies).owns(&dlq).consumes(&requests).spec().unwrap();
    let responding = spec.start(&config).await.expect("provisions the reply topic");
    let tries = Arc::new(AtomicU32::new(0));
    let (assigned, mut is_assigned) = tokio::sync::watch::channel(false);
    let consumer = request::responder(&responding.context(), &requests, &replies, moody, tries.clone())
        .expect("responder")
        .hooks(Assigned(assigned));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move { stopped.await.unwrap_or_default() }));
    tokio::time::timeout(Duration::from_secs(60), is_assigned.wait_for(|a| *a))
        .await
        .expect("assigned within 60 s")
        .unwrap();
    let requester = Requester::builder(&requesting.context(), &requests, &replies)
        .unwrap()
        .start()
        .await
        .expect("requester");
    let ask = |what: &'static str, timeout: u64| {
        let requester = requester.clone();
        async move { requester.request(what.as_bytes(), Duration::from_secs(timeout)).await }
    };

    let reply = ask("sku-1", 30).await.expect("an answer");
    assert_eq!(reply.payload(), b"sku-1: 12");
    // A refusal and a panic are error replies, with their kinds; neither is retried.
    match ask("refuse", 30).await {
        Err(RequestError::Remote { kind, message }) => {
            assert_eq!((&*kind, &*message), ("handler", "no such sku"))
        }
        other => panic!("an error reply, not {other:?}"),
    }
    match ask("panic", 30).await {
        Err(RequestError::Remote { kind, message }) => {
            assert_eq!(kind, "panic");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("an error reply, not {other:?}"),
    }
    // A retriable failure is retried until it passes, within the deadline.
    assert_eq!(ask("flaky", 30).await.expect("answered after retries").payload(), b"recovered");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    // One that never passes is given up before its deadline, unanswered; the next is answered.
    assert!(matches!(ask("down", 2).await, Err(RequestError::Timeout { .. })));
    let reply = ask("sku-2", 30).await.expect("the partition moved on");
    assert_eq!(reply.payload(), b"sku-2: 12");
    assert_eq!(requester.stats().late_replies, 0, "no reply to the given-up request");

    requester.close().await;
    stop.send(()).ok();
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("stops").unwrap().expect("clean stop");
}
