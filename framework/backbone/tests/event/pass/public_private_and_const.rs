//! A public topic from literals, a private one, and one from a `const` declaration; keys of several
//! types.

use backbone::{BoundEvent, TopicDecl};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ("stock", "checks"), key = order_id, schema = "tests/schemas/shop/order-checked-v1.avsc")]
pub struct OrderChecked {
    pub order_id: String,
    pub passed: bool,
}

mod topics {
    /// Stock levels: compacted, three partitions.
    pub const LEVELS: backbone::TopicDecl =
        backbone::TopicDecl::public("stock", "levels", 2).compacted().partitions(3);
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = topics::LEVELS, key = count, schema = "tests/schemas/shop/stock-level-v1.avsc")]
pub struct StockLevel {
    pub product: String,
    pub count: i32,
}

const _: () = assert!(OrderPlaced::TOPIC.is_public());
const _: () = assert!(!OrderChecked::TOPIC.is_public());

fn main() {
    let placed = OrderPlaced { id: "o-1".into(), product: "p".into(), quantity: 2 };
    assert_eq!(&*placed.key(), b"o-1");
    assert_eq!(OrderPlaced::topic().unwrap().name(), "shop.public.order-placed-v1");

    let checked = OrderChecked { order_id: "o-2".into(), passed: true };
    assert_eq!(&*checked.key(), b"o-2");
    assert_eq!(OrderChecked::topic().unwrap().name(), "stock.private.checks");
    assert!(OrderChecked::TOPIC.may_be_read_by("stock") && !OrderChecked::TOPIC.may_be_read_by("shop"));

    let level = StockLevel { product: "p".into(), count: 42 };
    assert_eq!(&*level.key(), b"42");
    let spec = StockLevel::topic().unwrap();
    assert_eq!((spec.name(), spec.partitions()), ("stock.public.levels-v2", 3));
    assert_eq!(StockLevel::TOPIC, TopicDecl::public("stock", "levels", 2).compacted().partitions(3));
    assert!(std::ptr::eq(StockLevel::topic().unwrap(), spec), "built once");
}
