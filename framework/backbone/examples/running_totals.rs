//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example running_totals` (several times:
//! each run starts from the totals the last one committed).
//!
//! Keeps the balance of each account over a stream of payments in memory, exactly once: the
//! changed balances go to a compacted snapshot topic in the same transaction as the consumed
//! offsets, and a start loads them before counting on. Kill it (`kill -9`) at any moment and run it
//! again: no payment is lost or counted twice.

use std::time::Duration;

use backbone::consume::dead_letter_topic;
use backbone::sourcing::RunningTotals;
use backbone::{Config, Outgoing, Service, TopicSpec};
use serde::{Deserialize, Serialize};

/// An account's balance and how many payments made it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Balance {
    payments: u64,
    cents: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let payments = TopicSpec::public("bank", "payment", 1).partitions(6).build()?;
    let balances = TopicSpec::private("bank", "balances").partitions(6).compacted().build()?;
    let spec = Service::new("bank")
        .owns(&payments)
        .owns(&balances)
        .owns(&dead_letter_topic("bank", &payments)?)
        .consumes(&payments)
        .spec()?;
    let config = Config::from_env(spec.name())?;
    let running = spec.start(&config).await?;

    // Each payment's key is the account, its payload the amount in cents, as text.
    let fold = |balance: &mut Balance, cents: String| {
        balance.payments += 1;
        balance.cents += cents.parse::<i64>().unwrap_or(0);
    };
    let totals = RunningTotals::builder(&running.context(), &payments, &balances, fold).every(500).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counting = tokio::spawn({
        let totals = totals.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                () = backbone::shutdown_signal() => {}
            }
        };
        async move { totals.run(shutdown).await }
    });

    // Once the snapshot is loaded: what the last run committed.
    let mut stats = totals.subscribe();
    stats.wait_for(|s| s.partitions == 6).await?;
    let counted =
        |totals: &RunningTotals<Balance>| totals.snapshot().values().map(|b| b.payments).sum::<u64>();
    let before = counted(&totals);
    println!("loaded {} snapshot records: {before} payments counted so far", totals.stats().loaded);

    for i in 0..1_000_i64 {
        let (account, cents) = (format!("account-{}", i % 10), (i * 37 % 200 - 50).to_string());
        running
            .publisher()
            .publish(&payments, Outgoing::new("Payment", account.as_bytes(), cents.as_bytes()))
            .await?;
    }
    // Committed totals include the new payments within a few transactions.
    tokio::time::timeout(Duration::from_secs(60), async {
        while counted(&totals) < before + 1_000 {
            if stats.changed().await.is_err() {
                break;
            }
        }
    })
    .await?;
    for (account, balance) in totals.snapshot() {
        println!("{}: {balance:?}", String::from_utf8_lossy(&account));
    }
    println!("{:?}", totals.stats());
    // Commits what is counted and leaves the group.
    stop.send(()).ok();
    counting.await??;
    running.shutdown().await?;
    Ok(())
}
