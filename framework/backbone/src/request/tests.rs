use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::StreamConsumer;
use tokio::sync::watch;
use tower::{Layer as _, ServiceExt as _};
use uuid::Uuid;

use super::pending::{Routed, Routes};
use super::requester::{Reader, Shared, supervise_replies};
use super::responder::{answer_request, check_reply_topic};
use super::*;
use crate::config::Config;
use crate::handler::{HandlerContext, HandlerError, IncomingEvent, Json, Scope};
use crate::layer::{Retry, RetryLayer};
use crate::publish::Publisher;

fn request_event(reply_to: &str, deadline: Option<SystemTime>) -> IncomingEvent {
    let mut event = IncomingEvent::new("orders.public.stock-level-requests-v1", 0, 7)
        .with_key("k")
        .with_payload("sku-1")
        .with_header(headers::REQUEST_ID, Uuid::new_v4().hyphenated().to_string())
        .with_header(headers::REPLY_TO, reply_to)
        .with_header(headers::REQUESTER, "instance-1");
    if let Some(d) = deadline {
        let millis = d.duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
        event = event.with_header(headers::DEADLINE, millis);
    }
    event
}

fn reply(id: Uuid) -> Reply {
    Reply { id, event: IncomingEvent::new("stock.public.stock-level-replies-v1", 0, 0).with_payload("ok") }
}

#[test]
fn topics_follow_the_naming_and_ownership_rules() {
    let requests = request_topic("orders", "stock-level").build().unwrap();
    let replies = reply_topic("stock", "stock-level").build().unwrap();
    assert_eq!(requests.name(), "orders.public.stock-level-requests-v1");
    assert_eq!(replies.name(), "stock.public.stock-level-replies-v1");
    assert_eq!(replies.partitions(), 1);
    let configs = replies.configs(crate::Profile::Production);
    assert_eq!(configs["retention.ms"], "3600000");
    assert_eq!(configs["segment.bytes"], "1048576");

    // The responder must own the reply topic.
    let dlq = crate::consume::dead_letter_topic("stock", &requests).unwrap();
    let stock = crate::Service::new("stock").owns(&dlq).consumes(&requests).spec().unwrap();
    let err = check_reply_topic(&stock, &replies).unwrap_err().to_string();
    assert!(err.contains("does not own it"), "{err}");
    let private = TopicSpec::private("stock", "replies").build().unwrap();
    let stock = crate::Service::new("stock").owns(&private).spec().unwrap();
    assert!(check_reply_topic(&stock, &private).unwrap_err().to_string().contains("public"));

    // The requester must own the request topic.
    let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let orders = crate::Service::new("orders").consumes(&replies).spec().unwrap();
    let context = crate::Context::open(&config, &orders).unwrap();
    let err = Requester::builder(&context, &requests, &replies).unwrap_err();
    assert!(err.to_string().contains("does not own it"), "{err}");
}

#[test]
fn request_headers_are_read_and_checked() {
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let info = RequestInfo::from_event(&request_event("r", Some(deadline))).unwrap();
    assert_eq!((info.reply_to(), info.requester()), ("r", "instance-1"));
    assert!(!info.is_expired());
    assert!(info.remaining().unwrap() > Duration::from_secs(50));

    let past = RequestInfo::from_event(&request_event("r", Some(UNIX_EPOCH))).unwrap();
    assert!(past.is_expired());

    let err = RequestInfo::from_event(&IncomingEvent::new("t", 0, 0)).unwrap_err();
    assert_eq!(err.kind(), "missing-header");
    let bad = IncomingEvent::new("t", 0, 0).with_header(headers::REQUEST_ID, "not-a-uuid");
    assert_eq!(RequestInfo::from_event(&bad).unwrap_err().kind(), "bad-header");
}

#[test]
fn item_9_a_far_future_deadline_is_capped() {
    for asked in
        [SystemTime::now() + Duration::from_secs(24 * 3600), UNIX_EPOCH + Duration::from_millis(u64::MAX)]
    {
        let info = RequestInfo::from_event(&request_event("r", Some(asked))).unwrap();
        let remaining = info.remaining().unwrap();
        assert!(
            remaining <= MAX_DEADLINE && remaining > MAX_DEADLINE - Duration::from_secs(60),
            "{remaining:?}"
        );
    }
    // The largest number the header can hold, as text.
    let event = request_event("r", None).with_header(headers::DEADLINE, u64::MAX.to_string());
    let remaining = RequestInfo::from_event(&event).unwrap().remaining().unwrap();
    assert!(remaining <= MAX_DEADLINE, "{remaining:?}");
    // A near deadline stays as it is.
    let near = RequestInfo::from_event(&request_event("r", Some(SystemTime::now() + Duration::from_secs(5))))
        .unwrap();
    assert!(near.remaining().unwrap() <= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn item_9_a_huge_request_timeout_is_capped_not_a_panic() {
    // No broker: the publish never completes, and the (paused) clock runs to the capped timeout.
    let requests = request_topic("orders", "stock-level").build().unwrap();
    let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let orders = crate::Service::new("orders").owns(&requests).spec().unwrap();
    let (stop, _) = watch::channel(false);
    let requester = Requester {
        shared: Arc::new(Shared {
            routes: Routes::new(1),
            publisher: Publisher::new(&config, &orders).unwrap(),
            requests,
            reply_to: "stock.public.stock-level-replies-v1".into(),
            instance: "i".into(),
            event_type: DEFAULT_REQUEST_TYPE.into(),
        }),
        reader: Arc::new(Reader { stop, task: Mutex::new(None) }),
    };
    let started = tokio::time::Instant::now();
    let err = requester.request(b"sku-1", Duration::MAX).await.unwrap_err();
    assert!(matches!(err, RequestError::Timeout { timeout, .. } if timeout == MAX_DEADLINE), "{err}");
    assert_eq!(started.elapsed(), MAX_DEADLINE);
}

#[tokio::test]
async fn item_5_a_reply_reader_that_panics_is_started_again() {
    let requests = request_topic("orders", "stock-level").build().unwrap();
    let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let orders = crate::Service::new("orders").owns(&requests).spec().unwrap();
    let shared = Arc::new(Shared {
        routes: Routes::new(4),
        publisher: Publisher::new(&config, &orders).unwrap(),
        requests,
        reply_to: "stock.public.stock-level-replies-v1".into(),
        instance: "i".into(),
        event_type: DEFAULT_REQUEST_TYPE.into(),
    });
    let consumer: StreamConsumer =
        config.client_config("orders").set("group.id", "never-joined").create().unwrap();
    let (stop, stopped) = watch::channel(false);
    let pending = shared.routes.register(Uuid::new_v4()).unwrap();
    // The first two readers panic (as rdkafka's header accessor did); the third waits for stop.
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let read = move |_: Arc<Shared>, _: Arc<StreamConsumer>, mut stop: watch::Receiver<bool>| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(run >= 2, "reader {run} fails");
            stop.wait_for(|s| *s).await.ok();
        }
    };
    let supervisor = tokio::spawn(supervise_replies(shared.clone(), Arc::new(consumer), stopped, read));
    let restarted = tokio::time::timeout(Duration::from_secs(10), async {
        while shared.routes.stats().reader_restarts < 2 {
            tokio::task::yield_now().await;
        }
    });
    restarted.await.expect("both failures seen within 10 s");
    assert!(!supervisor.is_finished(), "the reader runs again");
    assert!(!shared.routes.lock().closed, "pending requests still wait for their replies");
    stop.send_replace(true);
    supervisor.await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // Stopped: pending callers end (Closed) rather than hang.
    assert!(pending.await.is_err());
}

#[test]
fn replies_convert_from_handler_outputs() {
    assert_eq!("a".into_reply().unwrap(), b"a");
    assert_eq!(String::from("b").into_reply().unwrap(), b"b");
    assert_eq!(Json(serde_json::json!({"n": 1})).into_reply().unwrap(), br#"{"n":1}"#);
    let err = Result::<String, _>::Err(HandlerError::permanent("no such sku")).into_reply().unwrap_err();
    assert!(!err.is_retriable());
}

fn responder_context(event: IncomingEvent) -> HandlerContext<()> {
    let spec = crate::Service::new("stock").spec().unwrap();
    let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    HandlerContext::new(event, ()).with_publisher(Publisher::new(&config, &spec).unwrap())
}

#[tokio::test]
async fn expired_requests_are_skipped_and_unanswerable_ones_refused() {
    async fn answer(crate::Event(sku): crate::Event<String>) -> String {
        format!("{sku}: 12")
    }
    let requests = request_topic("orders", "stock-level").build().unwrap();
    let replies = reply_topic("stock", "stock-level").build().unwrap();
    // A responder is named after its handler's function (its last path segment, as always).
    let dlq = crate::consume::dead_letter_topic("stock", &requests).unwrap();
    let stock = crate::Service::new("stock").owns(&replies).owns(&dlq).consumes(&requests).spec().unwrap();
    let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let context = crate::Context::open(&config, &stock).unwrap();
    let consumer = responder(&context, &requests, &replies, answer, ()).unwrap();
    assert_eq!(consumer.group(), "stock.answer");

    // The reply step over a handler that must not be called.
    let replies = Arc::new(replies);
    let step = |cx| {
        let never = tower::service_fn(|cx: HandlerContext<()>| async move {
            panic!("must not be called for {:?}", cx.event().payload())
        });
        answer_request(never, replies.clone(), responder_context(cx))
    };

    // Past its deadline: not handled, not answered (nothing is published), offset stored.
    step(request_event(replies.name(), Some(UNIX_EPOCH))).await.unwrap();

    // Reply-to naming another topic, or no request headers: a poison record.
    let err = step(request_event("orders.public.order-created-v1", None)).await.unwrap_err();
    assert_eq!(err.kind(), "bad-reply-to");
    assert!(!err.is_retriable());
    let err = step(IncomingEvent::new("t", 0, 0).with_payload("sku-1")).await.unwrap_err();
    assert_eq!(err.kind(), "missing-header");
}

#[tokio::test]
async fn a_request_is_retried_until_its_deadline_whatever_the_attempts() {
    let tries = Arc::new(AtomicU64::new(0));
    let counted = tries.clone();
    let failing = tower::service_fn(move |_: HandlerContext<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(HandlerError::retriable("database down")) }
    });
    let retry = Retry { max_attempts: 1, ..RESPONDER_RETRY };
    let service = RetryLayer::new(retry).layer(failing);
    let started = std::time::Instant::now();
    let deadline = SystemTime::now() + Duration::from_millis(450);
    let cx = HandlerContext::new(IncomingEvent::new("t", 0, 0), ()).with_scope(Scope::new(Some(deadline)));
    let err = service.clone().oneshot(cx).await.unwrap_err();
    // 50 + 100 + 200 ms of backoff fit before the deadline; the next 400 ms would not.
    assert!(err.is_retriable());
    assert_eq!((err.attempts(), tries.load(Ordering::SeqCst)), (4, 4));
    assert!(started.elapsed() < Duration::from_millis(450), "{:?}", started.elapsed());

    // Without a deadline, the policy's attempts.
    tries.store(0, Ordering::SeqCst);
    let err = service.oneshot(HandlerContext::new(IncomingEvent::new("t", 0, 0), ())).await.unwrap_err();
    assert_eq!((err.attempts(), tries.load(Ordering::SeqCst)), (1, 1));
}

#[test]
fn the_first_reply_wins_and_the_bound_holds() {
    let routes = Routes::new(2);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rx_a = routes.register(a).unwrap();
    let _rx_b = routes.register(b).unwrap();
    assert!(matches!(routes.register(c), Err(RequestError::Overloaded { max_pending: 2 })));

    assert_eq!(routes.deliver(reply(a)), Routed::Delivered);
    assert_eq!(routes.deliver(reply(a)), Routed::Duplicate);
    assert_eq!(rx_a.try_recv().unwrap().request_id(), a);
    // b times out; its reply comes late.
    assert!(routes.give_up(b));
    assert_eq!(routes.deliver(reply(b)), Routed::Late);
    assert_eq!(routes.deliver(reply(c)), Routed::Late);

    let stats = routes.stats();
    assert_eq!((stats.pending, stats.overloaded), (0, 1));
    assert_eq!((stats.duplicate_replies, stats.late_replies), (1, 2));

    // Closed: pending callers see the sender gone, new requests are refused.
    let mut rx = routes.register(c).unwrap();
    routes.close();
    assert!(rx.try_recv().is_err());
    assert!(matches!(routes.register(Uuid::new_v4()), Err(RequestError::Closed)));
}

#[test]
fn error_replies_become_remote_errors() {
    let id = Uuid::new_v4();
    let event = IncomingEvent::new("t", 0, 0)
        .with_payload("no such sku")
        .with_header(headers::REPLY_ERROR, "handler");
    let err = Reply { id, event }.into_result().unwrap_err();
    assert!(
        matches!(&err, RequestError::Remote { kind, message } if kind == "handler" && message == "no such sku")
    );
    assert!(!err.is_retriable());
    assert!(RequestError::Timeout { topic: "t".into(), timeout: Duration::from_secs(1) }.is_retriable());
    assert!(RequestError::Overloaded { max_pending: 1 }.is_retriable());
}
