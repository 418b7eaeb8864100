//! Handlers the attribute accepts, and what it declares for each.

use backbone::__private::{HandlerDecl, HandlerInfo};
use backbone::handler::{BoxedHandler, HandlerContext, IncomingEvent};
use backbone::{BoundEvent, CorrelationId, Event, HandlerError, Key, Metadata, Publisher, State, TopicDecl};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[derive(Clone, Default)]
pub struct Stock {
    pub calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Everything at once, exactly once.
#[backbone::handler(exactly_once, emits(OrderPlaced))]
pub async fn reserve(
    Event(_order): Event<OrderPlaced>,
    Key(_key): Key<String>,
    _meta: Metadata,
    State(_stock): State<Stock>,
    _out: Publisher,
    _cid: Option<CorrelationId>,
) -> Result<(), HandlerError> {
    Ok(())
}

/// A unit return, tombstones accepted, another group.
#[backbone::handler(group = "stock.audit")]
async fn audit(_order: Option<Event<OrderPlaced>>, State(stock): State<Stock>) {
    stock.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

const RAW: TopicDecl = TopicDecl::public("shop", "raw", 1);

/// Not a bound event: the topic is given, the state too (no `State` argument says it).
#[backbone::handler(topic = RAW, state = Stock)]
async fn raw(Event(_text): Event<String>, _meta: Metadata) -> Result<(), backbone::PublishError> {
    Ok(())
}

fn main() {
    assert_eq!(<reserve as HandlerInfo>::NAME, "reserve");
    assert_eq!(<reserve as HandlerInfo>::TOPIC, TopicDecl::public("shop", "order-placed", 1));
    assert_eq!(
        <reserve as HandlerInfo>::OPTIONS,
        backbone::__private::HandlerOptions::new().exactly_once()
    );
    assert_eq!(
        <audit as HandlerInfo>::OPTIONS,
        backbone::__private::HandlerOptions::new().group("stock.audit")
    );
    assert_eq!(<reserve as HandlerInfo>::EMITS, [OrderPlaced::TOPIC]);
    assert!(<audit as HandlerInfo>::EMITS.is_empty());
    assert_eq!(<raw as HandlerInfo>::TOPIC, RAW);
    assert_eq!(<raw as HandlerInfo>::NAME, "raw");

    // The function is still a function, and the declared handler calls it.
    let stock = Stock::default();
    let handler: BoxedHandler<Stock> = <audit as HandlerDecl<Stock>>::handler();
    assert_eq!(handler.name(), "audit");
    let tombstone = IncomingEvent::new("shop.public.order-placed-v1", 0, 0);
    futures::executor::block_on(handler.call(HandlerContext::new(tombstone, stock.clone()))).unwrap();
    futures::executor::block_on(audit(None, State(stock.clone())));
    assert_eq!(stock.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
