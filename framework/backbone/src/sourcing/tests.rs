use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::reader::Reader;
use super::totals::{Hooks, Part, Totals, fold_of};
use super::*;
use crate::config::Config;
use crate::consume::ConsumerHooks as _;
use crate::handler::IncomingEvent;
use crate::schema::Registry;
use crate::topic::TopicSpec;

fn totals() -> Arc<Totals<i64>> {
    let config = Config::default();
    let parts = (0..2).map(|p| (p, Part { committed: HashMap::new(), open: HashMap::new(), events: 0 }));
    Arc::new(Totals {
        name: "t".into(),
        snapshot: TopicSpec::private("svc", "totals").compacted().build().unwrap(),
        fold: fold_of(|total: &mut i64, amount: String| *total += amount.parse::<i64>().unwrap()),
        reader: Mutex::new(Reader::new(&config, "svc", "svc.private.totals").unwrap()),
        parts: Mutex::new(parts.collect()),
        stopping: AtomicBool::new(false),
        stats: watch::channel(TotalsStats::default()).0,
    })
}

fn event(partition: i32, key: &str, payload: &str) -> IncomingEvent {
    IncomingEvent::new("svc.public.in-v1", partition, 0).with_key(key).with_payload(payload)
}

fn committed(totals: &Totals<i64>, key: &str) -> Option<i64> {
    totals.lock_parts().values().find_map(|p| p.committed.get(key.as_bytes()).copied())
}

#[test]
fn an_aborted_transaction_forgets_its_changes_a_committed_one_keeps_them() {
    let totals = totals();
    let hooks = Hooks(totals.clone());
    let registry = Registry::new(&Config::default().schema_registry_url).unwrap();
    let count = |p, key, amount| totals.count(&event(p, key, amount), &registry);
    count(0, "a", "5").unwrap();
    count(1, "b", "2").unwrap();
    count(0, "a", "1").unwrap();
    assert_eq!(committed(&totals, "a"), None, "nothing committed yet");
    hooks.transaction_ended(true);
    assert_eq!((committed(&totals, "a"), committed(&totals, "b")), (Some(6), Some(2)));
    let stats = *totals.stats.borrow();
    assert_eq!((stats.events, stats.written, stats.transactions), (3, 2, 1));

    // Counted, then aborted: the events will be handled again, from the committed total.
    count(0, "a", "100").unwrap();
    hooks.transaction_ended(false);
    count(0, "a", "100").unwrap();
    hooks.transaction_ended(true);
    assert_eq!(committed(&totals, "a"), Some(106), "counted once");
    assert_eq!(totals.stats.borrow().events, 4);

    // An event that does not decode changes nothing (it is dead-lettered).
    let not_utf8 = IncomingEvent::new("svc.public.in-v1", 0, 0).with_key("c").with_payload([0xff]);
    assert!(!totals.count(&not_utf8, &registry).unwrap_err().is_retriable());
    hooks.transaction_ended(true);
    assert_eq!(committed(&totals, "c"), None);
    // An event of a partition not held is retried, not counted.
    assert!(count(5, "d", "1").unwrap_err().is_retriable());
}
