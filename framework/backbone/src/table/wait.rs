//! Waiting on a table: for an offset, for a partition's end, for a key's value.

use std::time::{Duration, Instant};

use crate::publish::Delivery;

use super::probe::End;
use super::view::Progress;
use super::*;

impl<V> Table<V> {
    /// Waits until the view has applied `offset` of `partition` (and the partition has restored),
    /// so a read sees that write or a later one; without polling. Fails at once for a partition
    /// the topic does not have ([`WaitError::NoSuchPartition`]), when
    /// [`TableBuilder::max_waiters`] waits run ([`WaitError::Busy`]) and if another instance holds
    /// the partition; with [`WaitError::Timeout`] after `timeout`.
    pub async fn wait_for(&self, partition: i32, offset: i64, timeout: Duration) -> Result<(), WaitError> {
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let now = *progress.borrow();
        if !now.owned && matches!(self.shared.not_held(partition), NotReady::NotOwned { .. }) {
            return Err(WaitError::NotOwned { table: self.shared.name.clone(), partition });
        }
        let applied = |p: &Progress| p.owned && p.caught_up && p.applied.is_some_and(|a| a >= offset);
        let seen = matches!(tokio::time::timeout(timeout, progress.wait_for(applied)).await, Ok(Ok(_)));
        if seen {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                table: self.shared.name.clone(),
                partition,
                offset,
                applied: progress.borrow().applied,
                timeout,
            })
        }
    }

    /// [`wait_for`](Self::wait_for) the write at `delivery` (what [`Publisher::publish`] resolved
    /// with).
    pub async fn wait_for_delivery(&self, delivery: Delivery, timeout: Duration) -> Result<(), WaitError> {
        self.wait_for(delivery.partition, delivery.offset, timeout).await
    }

    /// Where `partition` ends now: its high watermark, the offset its next record will get (one
    /// round trip to its leader). A consistency token at or past it names a write that has not
    /// happened.
    pub async fn high_watermark(&self, partition: i32) -> Result<i64, WaitError>
    where
        V: Send + Sync + 'static,
    {
        let shared = self.shared.clone();
        let looked = tokio::task::spawn_blocking(move || shared.high_watermark(partition)).await;
        match looked {
            Ok(Ok(high)) => Ok(high),
            Ok(Err(e)) => {
                Err(WaitError::End { table: self.shared.name.clone(), partition, reason: e.to_string() })
            }
            Err(e) => {
                Err(WaitError::End { table: self.shared.name.clone(), partition, reason: e.to_string() })
            }
        }
    }

    /// Waits until the view has applied every record of `partition` a `read_committed` reader
    /// sees now (its end is looked up first): a read then sees every write to it acknowledged or
    /// committed before the call, whoever made it. What a new owner of a key does before trusting
    /// the view with it, e.g. a handler that took over a partition from a stopped instance. Fails
    /// at once for a partition the topic does not have, when [`TableBuilder::max_waiters`] waits
    /// run and if another instance holds the partition, with [`WaitError::End`] if the end cannot
    /// be looked up, and with [`WaitError::Timeout`] after `timeout`.
    pub async fn sync(&self, partition: i32, timeout: Duration) -> Result<(), WaitError>
    where
        V: Send + Sync + 'static,
    {
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let now = *progress.borrow();
        if !now.owned && matches!(self.shared.not_held(partition), NotReady::NotOwned { .. }) {
            return Err(WaitError::NotOwned { table: self.shared.name.clone(), partition });
        }
        // Lookups go one at a time (one probe consumer); a caller that waited while one ran takes
        // the next one's answer with the callers that waited beside it: it began after they came.
        let arrived = Instant::now();
        let shared = self.shared.clone();
        let end = tokio::time::timeout(timeout, async move {
            let mut syncs = shared.syncs.lock().await;
            if let Some(&(began, last)) = syncs.get(&partition)
                && began >= arrived
            {
                return Ok(Ok(vec![End { high: -1, last }]));
            }
            let began = Instant::now();
            let probed = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || shared.probe_ends(&[partition])).await
            };
            if let Ok(Ok(ends)) = &probed {
                syncs.insert(partition, (began, ends.first().and_then(|e| e.last)));
            }
            probed
        })
        .await;
        let last = match end {
            Ok(Ok(Ok(ends))) => ends.first().and_then(|e| e.last),
            Ok(Ok(Err(e))) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: e.to_string(),
                });
            }
            Ok(Err(e)) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: format!("no answer within {timeout:?}"),
                });
            }
        };
        let applied =
            |p: &Progress| p.owned && p.caught_up && last.is_none_or(|l| p.applied.is_some_and(|a| a >= l));
        if matches!(tokio::time::timeout(timeout, progress.wait_for(applied)).await, Ok(Ok(_))) {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                table: self.shared.name.clone(),
                partition,
                offset: last.unwrap_or(-1),
                applied: progress.borrow().applied,
                timeout,
            })
        }
    }

    /// Like [`sync`](Self::sync), but for everything acknowledged to any writer of `partition`
    /// before the call, records behind a transaction still open included: waits (asking again
    /// with backoff, from 10 ms to 200 ms) until every record written so far is decided (committed
    /// or aborted), then until the view has applied those committed. A retry of a write made by
    /// another instance finds it even if a transaction (an exactly-once handler's) was open on the
    /// partition when it was written. Takes up to a transaction's life longer than `sync` while one
    /// is open; fails as `sync` does, and with [`WaitError::Timeout`] if writes stay undecided for
    /// `timeout`.
    pub async fn sync_acknowledged(&self, partition: i32, timeout: Duration) -> Result<(), WaitError>
    where
        V: Send + Sync + 'static,
    {
        self.shared.progress(partition)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let end_error =
            |reason: String| WaitError::End { table: self.shared.name.clone(), partition, reason };
        // One lookup off the async workers; a panicked task or a broker error is the same failure.
        let lookup = |written: bool| {
            let shared = self.shared.clone();
            let looked = tokio::task::spawn_blocking(move || {
                if written { shared.written_end(partition) } else { shared.high_watermark(partition) }
            });
            async move {
                match looked.await {
                    Ok(Ok(end)) => Ok(end),
                    Ok(Err(e)) => Err(end_error(e.to_string())),
                    Err(e) => Err(end_error(e.to_string())),
                }
            }
        };
        let written = lookup(true).await?;
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
        loop {
            // The committed end (the last stable offset) reaches what was written: all decided.
            let stable = lookup(false).await?;
            if stable >= written {
                break;
            }
            let pause = backoff.next_delay();
            if tokio::time::Instant::now() + pause > deadline {
                return Err(WaitError::Timeout {
                    table: self.shared.name.clone(),
                    partition,
                    offset: written - 1,
                    applied: self.shared.progress(partition)?.borrow().applied,
                    timeout,
                });
            }
            tokio::time::sleep(pause).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.sync(partition, left).await
    }

    /// Waits until `key`'s value (`None`: absent) satisfies `condition`, and returns it: checked
    /// now and again after each change the view applies to the key's partition, without polling
    /// (a long-poll read). A partition still restoring is waited for. Fails at once when
    /// [`TableBuilder::max_waiters`] waits run, if another instance holds the partition, and (as
    /// soon as it is seen) if the key is absent from its partition but was read from another one
    /// this instance holds ([`WaitError::Misplaced`]); with [`WaitError::Timeout`] after `timeout`.
    pub async fn wait_until_key(
        &self,
        key: impl AsRef<[u8]>,
        condition: impl Fn(Option<&V>) -> bool,
        timeout: Duration,
    ) -> Result<Option<V>, WaitError>
    where
        V: Clone,
    {
        let key = key.as_ref();
        let partition = self.partition_for(key);
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let mut misplaced = self.shared.misplaced_seen.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            progress.borrow_and_update();
            misplaced.borrow_and_update();
            // The value now (if the partition has restored here), and whether the key, absent where
            // it belongs, was read from another partition: then it never comes where lookups look.
            // `condition` runs outside the lock.
            let (now, elsewhere) = {
                let views = self.shared.read_views();
                let elsewhere = || {
                    self.shared.misplaced(&views, key, partition).map(|m| WaitError::Misplaced(Box::new(m)))
                };
                match views.get(&partition) {
                    Some(view) if view.caught_up => {
                        let value = view.entries.get(key).cloned();
                        let misplaced = if value.is_none() { elsewhere() } else { None };
                        (Some(value), misplaced)
                    }
                    Some(_) => (None, None), // restoring
                    None => match self.shared.not_held(partition) {
                        NotReady::NotOwned { .. } => {
                            return Err(elsewhere().unwrap_or_else(|| WaitError::NotOwned {
                                table: self.shared.name.clone(),
                                partition,
                            }));
                        }
                        _ => (None, None),
                    },
                }
            };
            if let Some(value) = now {
                if condition(value.as_ref()) {
                    return Ok(value);
                }
                if let Some(e) = elsewhere {
                    return Err(e);
                }
            }
            let changed = async {
                tokio::select! {
                    changed = progress.changed() => changed.is_ok(),
                    changed = misplaced.changed() => changed.is_ok(),
                }
            };
            if !matches!(tokio::time::timeout_at(deadline, changed).await, Ok(true)) {
                return Err(WaitError::Timeout {
                    table: self.shared.name.clone(),
                    partition,
                    offset: -1,
                    applied: progress.borrow().applied,
                    timeout,
                });
            }
        }
    }
}
