//! A product's state and the commands that change it: pure, so the rules are tested without Kafka.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{OrderValidation, StockLevel, ValidationResult};

/// What changes a product (JSON on `stock.private.commands`, keyed by product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Command {
    /// The warehouse holds `quantity` units (`PUT /v1/stock/{product}`); `request` tells the
    /// caller when it has been applied.
    SetStock {
        /// The product.
        product: String,
        /// Units in the warehouse.
        quantity: i64,
        /// The request's id.
        request: String,
    },
    /// A new order wants `quantity` units.
    Reserve {
        /// The product.
        product: String,
        /// The order.
        order_id: String,
        /// Units.
        quantity: i64,
    },
    /// An order failed or was cancelled: release what it holds.
    Release {
        /// The product.
        product: String,
        /// The order.
        order_id: String,
    },
}

impl Command {
    /// The product it changes (its key).
    pub fn product(&self) -> &str {
        match self {
            Self::SetStock { product, .. }
            | Self::Reserve { product, .. }
            | Self::Release { product, .. } => product,
        }
    }

    /// Its event type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SetStock { .. } => "SetStock",
            Self::Reserve { .. } => "Reserve",
            Self::Release { .. } => "Release",
        }
    }
}

/// The most units one order may reserve (Orders' own bound): larger, or not positive, fails.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// The most reservations a product holds open at once; an order beyond them fails (and the
/// product's record stays bounded).
pub const MAX_OPEN: usize = 1_000;
/// How many settled orders (rejected, released, released before seen) a product remembers, most
/// recent first: a `Reserve` repeated within this window changes nothing. A repeat arriving after
/// this many later orders of the same product have settled would be taken as a new order. Repeats
/// come from at-least-once redelivery of the orders topic (an uncommitted batch after a restart or
/// a rebalance), far inside the window.
pub const SETTLED_WINDOW: usize = 1_000;

/// A product's state (JSON on `stock.private.products`, compacted, keyed by product). Bounded:
/// at most [`MAX_OPEN`] open reservations and [`SETTLED_WINDOW`] settled orders, whatever the
/// product's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "Stored")]
pub struct ProductState {
    /// The product.
    pub product: String,
    /// Units in the warehouse.
    pub warehouse: i64,
    /// Units held for orders: the sum of `reservations`.
    pub reserved: i64,
    /// Units held, by order: the open reservations.
    pub reservations: BTreeMap<String, i64>,
    /// Orders settled without holding units (rejected, released, or released before seen), oldest
    /// first, at most [`SETTLED_WINDOW`]: so a repeated order is not reserved again.
    pub settled: VecDeque<String>,
    /// The last `SetStock` request applied.
    pub last_request: Option<String>,
}

/// A product's state as stored, now or before the state was bounded (when `orders` held every
/// order ever seen, with what became of it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    product: String,
    warehouse: i64,
    reserved: i64,
    #[serde(default)]
    reservations: BTreeMap<String, i64>,
    #[serde(default)]
    settled: VecDeque<String>,
    #[serde(default)]
    orders: BTreeMap<String, LegacyReservation>,
    last_request: Option<String>,
}

#[derive(Deserialize)]
struct LegacyReservation {
    quantity: i64,
    state: LegacyState,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum LegacyState {
    Reserved,
    Rejected,
    Released,
}

impl From<Stored> for ProductState {
    fn from(stored: Stored) -> Self {
        let mut state = Self {
            product: stored.product,
            warehouse: stored.warehouse,
            reserved: stored.reserved,
            reservations: stored.reservations,
            settled: stored.settled,
            last_request: stored.last_request,
        };
        // The unbounded form: its open reservations are kept, its settled orders (in id order; the
        // time order is not recorded) up to the window.
        for (order, legacy) in stored.orders {
            if legacy.state == LegacyState::Reserved {
                state.reservations.insert(order, legacy.quantity);
            } else {
                state.settle(order);
            }
        }
        state
    }
}

impl ProductState {
    /// A product never seen: nothing in the warehouse.
    pub fn new(product: &str) -> Self {
        Self {
            product: product.to_owned(),
            warehouse: 0,
            reserved: 0,
            reservations: BTreeMap::new(),
            settled: VecDeque::new(),
            last_request: None,
        }
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.warehouse.saturating_sub(self.reserved).max(0)
    }

    /// Whether `order` was seen: holding units, or settled within the window.
    pub fn has_seen(&self, order: &str) -> bool {
        self.reservations.contains_key(order) || self.settled.iter().any(|o| o == order)
    }

    /// The public level.
    pub fn level(&self) -> StockLevel {
        StockLevel {
            product: self.product.clone(),
            warehouse: self.warehouse,
            reserved: self.reserved,
            available: self.available(),
        }
    }

    fn settle(&mut self, order: String) {
        self.settled.push_back(order);
        while self.settled.len() > SETTLED_WINDOW {
            self.settled.pop_front();
        }
    }

    /// Whether `quantity` units can be reserved for a new order now; why not if not.
    fn refusal(&self, quantity: i64) -> Option<String> {
        let available = self.available();
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            Some(format!("quantity {quantity} is not between 1 and {MAX_QUANTITY}"))
        } else if self.reservations.len() >= MAX_OPEN {
            Some(format!("{MAX_OPEN} orders already hold stock of this product; try later"))
        } else if quantity > available {
            Some(format!("only {available} of {quantity} available"))
        } else {
            None
        }
    }

    /// The state after `command`, and the verdict to publish if it was a new order. Never panics
    /// and never overflows, whatever the command holds.
    pub fn apply(&self, command: &Command) -> (Self, Option<OrderValidation>) {
        let mut next = self.clone();
        match command {
            Command::SetStock { quantity, request, .. } => {
                // The HTTP API refuses negative levels; one on the topic changes nothing.
                if *quantity >= 0 {
                    next.warehouse = *quantity;
                }
                next.last_request = Some(request.clone());
                (next, None)
            }
            Command::Reserve { order_id, quantity, .. } => {
                if self.has_seen(order_id) {
                    // Seen (a repeated CREATED, or released before): answered already, or never.
                    return (next, None);
                }
                let held = match self.refusal(*quantity) {
                    None => self.reserved.checked_add(*quantity),
                    Some(_) => None,
                };
                let (result, reason) = match held {
                    Some(reserved) => {
                        next.reserved = reserved;
                        next.reservations.insert(order_id.clone(), *quantity);
                        (ValidationResult::Pass, None)
                    }
                    None => {
                        next.settle(order_id.clone());
                        let reason =
                            self.refusal(*quantity).unwrap_or_else(|| "too many units reserved".into());
                        (ValidationResult::Fail, Some(reason))
                    }
                };
                let verdict = OrderValidation {
                    order_id: order_id.clone(),
                    product: self.product.clone(),
                    // Orders' quantities are ints: the command carries one.
                    quantity: i32::try_from(*quantity).unwrap_or(if *quantity < 0 {
                        i32::MIN
                    } else {
                        i32::MAX
                    }),
                    result,
                    reason,
                };
                (next, Some(verdict))
            }
            Command::Release { order_id, .. } => {
                if let Some(quantity) = next.reservations.remove(order_id) {
                    next.reserved = next.reserved.saturating_sub(quantity).max(0);
                    next.settle(order_id.clone());
                } else if !self.has_seen(order_id) {
                    // Released before it was seen: a late Reserve must not hold units.
                    next.settle(order_id.clone());
                }
                (next, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(order: &str, quantity: i64) -> Command {
        Command::Reserve { product: "p".into(), order_id: order.into(), quantity }
    }

    fn release(order: &str) -> Command {
        Command::Release { product: "p".into(), order_id: order.into() }
    }

    #[test]
    fn reserves_what_is_available_once_and_releases_it() {
        let set = Command::SetStock { product: "p".into(), quantity: 5, request: "r1".into() };
        let (s, v) = ProductState::new("p").apply(&set);
        assert_eq!((s.warehouse, s.available(), v), (5, 5, None));

        let (s, v) = s.apply(&reserve("o1", 3));
        assert_eq!(v.unwrap().result, ValidationResult::Pass);
        assert_eq!((s.reserved, s.available()), (3, 2));

        let (again, v) = s.apply(&reserve("o1", 3));
        assert_eq!((&again, v), (&s, None), "a repeated order reserves nothing and answers nothing");

        let (s, v) = s.apply(&reserve("o2", 3));
        let v = v.unwrap();
        assert_eq!((v.result, v.reason.as_deref()), (ValidationResult::Fail, Some("only 2 of 3 available")));
        assert_eq!(s.reserved, 3, "a failed order reserves nothing");

        let (s, _) = s.apply(&release("o2"));
        assert_eq!(s.reserved, 3, "releasing a rejected order gives nothing back");
        let (again, v) = s.apply(&reserve("o2", 1));
        assert_eq!((&again, v), (&s, None), "a rejected order is not reconsidered");
        let (s, _) = s.apply(&release("o1"));
        assert_eq!((s.reserved, s.available()), (0, 5));
        let (s2, _) = s.apply(&release("o1"));
        assert_eq!(s2, s, "released once");

        let (s, _) = s.apply(&release("o3"));
        let (s, v) = s.apply(&reserve("o3", 1));
        assert_eq!((s.reserved, v), (0, None), "released before seen: never reserved");
    }

    fn stocked(quantity: i64) -> ProductState {
        let set = Command::SetStock { product: "p".into(), quantity, request: "r".into() };
        ProductState::new("p").apply(&set).0
    }

    #[test]
    fn item_11_a_quantity_out_of_bounds_fails_with_a_reason_and_reserves_nothing() {
        let s = stocked(i64::MAX);
        for quantity in [0, -1, -5, i64::MIN, MAX_QUANTITY + 1, i64::MAX] {
            let (next, verdict) = s.apply(&reserve("o", quantity));
            let verdict = verdict.expect("answered");
            assert_eq!(verdict.result, ValidationResult::Fail, "{quantity}");
            assert!(verdict.reason.unwrap().contains("is not between 1 and 1000000"), "{quantity}");
            assert_eq!((next.reserved, next.reservations.len()), (0, 0), "{quantity}");
            assert!(next.has_seen("o"), "answered once");
        }
        // Near the top of i64: no overflow anywhere.
        let (s, v) = s.apply(&reserve("big", MAX_QUANTITY));
        assert_eq!(v.unwrap().result, ValidationResult::Pass);
        assert_eq!(s.available(), i64::MAX - MAX_QUANTITY);
        let (s, _) = s.apply(&Command::SetStock { product: "p".into(), quantity: 0, request: "r2".into() });
        assert_eq!((s.available(), s.reserved), (0, MAX_QUANTITY));
        let (s, _) = s.apply(&Command::SetStock { product: "p".into(), quantity: -3, request: "r3".into() });
        assert_eq!(s.warehouse, 0, "a negative level changes nothing");
        let (s, _) = s.apply(&release("big"));
        assert_eq!(s.reserved, 0);
    }

    #[test]
    fn item_3_thousands_of_orders_keep_the_record_bounded_and_each_command_cheap() {
        // Ids as long as Orders allows (128 characters): the worst case for the record's size.
        let id = |n: usize| format!("{n:0>128}");
        let mut s = stocked(1_000_000_000);
        let mut largest = 0;
        let mut slowest = std::time::Duration::ZERO;
        let mut total = std::time::Duration::ZERO;
        for n in 0..6_000 {
            let started = std::time::Instant::now();
            let (next, verdict) = s.apply(&reserve(&id(n), 1));
            assert_eq!(verdict.unwrap().result, ValidationResult::Pass, "order {n}");
            // Most orders are settled (cancelled) later; one in 4 stays open for a while.
            let (next, _) = if n % 4 == 0 && n >= 2_000 {
                next.apply(&release(&id(n - 2_000)))
            } else if n % 4 != 0 {
                next.apply(&release(&id(n)))
            } else {
                (next, None)
            };
            slowest = slowest.max(started.elapsed());
            total += started.elapsed();
            if n % 50 == 0 {
                largest = largest.max(serde_json::to_vec(&next).unwrap().len());
            }
            s = next;
        }
        largest = largest.max(serde_json::to_vec(&s).unwrap().len());
        // 500 open, the window of settled ones: ~200 KB with 128-character ids, whatever the history.
        assert_eq!(s.reservations.len(), 500);
        assert_eq!(s.settled.len(), SETTLED_WINDOW);
        assert_eq!(s.reserved, 500);
        let bound = (MAX_OPEN + SETTLED_WINDOW) * (128 + 16) + 1024;
        assert!(largest <= bound, "the record reached {largest} bytes (bound {bound})");
        eprintln!(
            "largest record {largest} bytes; commands {:?} on average, {slowest:?} at most",
            total / 6_000
        );
        // A repeat within the window is still recognised.
        let (again, v) = s.apply(&reserve(&id(5_999), 1));
        assert_eq!((again.reserved, v), (s.reserved, None));

        // Open reservations are capped too: beyond MAX_OPEN, an order fails with a reason.
        let mut s = stocked(1_000_000_000);
        for n in 0..MAX_OPEN {
            s = s.apply(&reserve(&id(n), 1)).0;
        }
        let (full, v) = s.apply(&reserve("one-more", 1));
        let v = v.unwrap();
        assert_eq!(v.result, ValidationResult::Fail);
        assert!(v.reason.unwrap().contains("already hold stock"));
        assert_eq!(full.reservations.len(), MAX_OPEN);
        assert!(serde_json::to_vec(&full).unwrap().len() <= bound);
    }

    #[test]
    fn item_3_a_record_of_the_unbounded_form_is_read_into_the_bounded_one() {
        let old = serde_json::json!({
            "product": "p", "warehouse": 5, "reserved": 3, "lastRequest": "r",
            "orders": {
                "o1": {"quantity": 3, "state": "RESERVED"},
                "o2": {"quantity": 3, "state": "REJECTED"},
                "o3": {"quantity": 0, "state": "RELEASED"},
            },
        });
        let s: ProductState = serde_json::from_value(old).unwrap();
        assert_eq!(s.reservations, BTreeMap::from([("o1".to_owned(), 3)]));
        assert_eq!(s.settled, ["o2", "o3"]);
        assert_eq!((s.reserved, s.available()), (3, 2));
        let (s, _) = s.apply(&release("o1"));
        assert_eq!(s.reserved, 0);
        let back: ProductState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s, "the bounded form round-trips");
    }

    #[test]
    fn commands_are_tagged_camel_case_json() {
        let json = serde_json::to_value(reserve("o1", 2)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "reserve", "product": "p", "orderId": "o1", "quantity": 2})
        );
    }
}
