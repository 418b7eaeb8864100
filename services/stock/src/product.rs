//! A product's state and the commands that change it: pure, so the rules are tested without Kafka.

use std::collections::BTreeMap;

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

/// What became of an order's request for units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationState {
    /// The units are held for the order.
    Reserved,
    /// There were not enough: nothing is held.
    Rejected,
    /// Held once, given back (the order failed or was cancelled); or released before it was seen.
    Released,
}

/// An order's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Units asked for.
    pub quantity: i64,
    /// What became of them.
    pub state: ReservationState,
}

/// A product's state (JSON on `stock.private.products`, compacted, keyed by product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductState {
    /// The product.
    pub product: String,
    /// Units in the warehouse.
    pub warehouse: i64,
    /// Units held for orders: the sum of the `Reserved` reservations.
    pub reserved: i64,
    /// Every order seen, so none is reserved twice.
    pub orders: BTreeMap<String, Reservation>,
    /// The last `SetStock` request applied.
    pub last_request: Option<String>,
}

impl ProductState {
    /// A product never seen: nothing in the warehouse.
    pub fn new(product: &str) -> Self {
        Self {
            product: product.to_owned(),
            warehouse: 0,
            reserved: 0,
            orders: BTreeMap::new(),
            last_request: None,
        }
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        (self.warehouse - self.reserved).max(0)
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

    /// The state after `command`, and the verdict to publish if it was a new order.
    pub fn apply(&self, command: &Command) -> (Self, Option<OrderValidation>) {
        let mut next = self.clone();
        match command {
            Command::SetStock { quantity, request, .. } => {
                next.warehouse = *quantity;
                next.last_request = Some(request.clone());
                (next, None)
            }
            Command::Reserve { order_id, quantity, .. } => {
                if self.orders.contains_key(order_id) {
                    // Seen (a repeated CREATED, or released before): answered already, or never.
                    return (next, None);
                }
                let available = self.available();
                let (state, result, reason) = if *quantity <= available {
                    next.reserved += quantity;
                    (ReservationState::Reserved, ValidationResult::Pass, None)
                } else {
                    let reason = format!("only {available} of {quantity} available");
                    (ReservationState::Rejected, ValidationResult::Fail, Some(reason))
                };
                next.orders.insert(order_id.clone(), Reservation { quantity: *quantity, state });
                let verdict = OrderValidation {
                    order_id: order_id.clone(),
                    product: self.product.clone(),
                    // Orders' quantities are ints: the command carries one.
                    quantity: i32::try_from(*quantity).unwrap_or(i32::MAX),
                    result,
                    reason,
                };
                (next, Some(verdict))
            }
            Command::Release { order_id, .. } => {
                match next.orders.get_mut(order_id) {
                    Some(r) if r.state == ReservationState::Reserved => {
                        r.state = ReservationState::Released;
                        next.reserved -= r.quantity;
                    }
                    Some(_) => {}
                    None => {
                        // Released before it was seen: a late Reserve must not hold units.
                        next.orders.insert(
                            order_id.clone(),
                            Reservation { quantity: 0, state: ReservationState::Released },
                        );
                    }
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
        let (s, _) = s.apply(&release("o1"));
        assert_eq!((s.reserved, s.available()), (0, 5));
        let (s2, _) = s.apply(&release("o1"));
        assert_eq!(s2, s, "released once");

        let (s, _) = s.apply(&release("o3"));
        let (s, v) = s.apply(&reserve("o3", 1));
        assert_eq!((s.reserved, v), (0, None), "released before seen: never reserved");
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
