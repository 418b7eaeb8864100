//! Call order: each publish takes its place in line at call time ([`Turns`]), with the context it
//! captured then ([`Context`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

/// What a publish captures from its caller at call time.
pub(crate) struct Context {
    /// The correlation id in scope, if any; otherwise the trace id (in `traceparent`) is used.
    pub(crate) correlation: Option<String>,
    pub(crate) traceparent: [u8; 55],
}

impl Context {
    /// The context of an event published now, inside its producer `span`: the correlation id in
    /// scope, and the span's trace context (a new trace when there is none).
    pub(crate) fn current(span: &tracing::Span) -> Self {
        let trace =
            span.in_scope(crate::trace::current_context).unwrap_or_else(crate::trace::TraceContext::new_root);
        Self { correlation: crate::trace::correlation_id(), traceparent: trace.header_bytes() }
    }

    pub(super) fn correlation(&self) -> &[u8] {
        self.correlation.as_deref().map_or(self.trace_id(), str::as_bytes)
    }

    /// The trace id (32 hex digits) of `traceparent`.
    fn trace_id(&self) -> &[u8] {
        &self.traceparent[3..35]
    }

    /// Whether the correlation id is not the trace id, so it must be written beside `traceparent`
    /// (readers take the trace id when the correlation header is absent).
    pub(super) fn correlation_differs(&self) -> bool {
        self.correlation.as_deref().is_some_and(|c| c.as_bytes() != self.trace_id())
    }
}

/// Keeps publishes in call order: each call takes a ticket at once; a publish enqueues only on its
/// turn, so the order in which futures are polled does not matter.
#[derive(Default)]
pub(super) struct Turns {
    state: Mutex<TurnState>,
}

#[derive(Default)]
struct TurnState {
    next_ticket: u64,
    next_to_send: u64,
    /// Tickets whose futures were dropped before their turn.
    abandoned: BTreeSet<u64>,
    /// Publishes waiting for their turn, by ticket: a release wakes only the next one.
    waiting: HashMap<u64, std::task::Waker>,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn take(&self) -> Ticket<'_> {
        let mut s = self.lock();
        let number = s.next_ticket;
        s.next_ticket += 1;
        Ticket { turns: self, number, finished: false }
    }

    pub(super) fn is_turn(&self, ticket: u64) -> bool {
        self.lock().next_to_send == ticket
    }

    pub(super) async fn wait_for(&self, ticket: u64) {
        /// Forgets the waker if the wait is dropped before its turn.
        struct Waiting<'a>(&'a Turns, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting.remove(&self.1);
            }
        }
        let _waiting = Waiting(self, ticket);
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.next_to_send == ticket {
                return Poll::Ready(());
            }
            match s.waiting.entry(ticket) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if !e.get().will_wake(cx.waker()) {
                        e.insert(cx.waker().clone());
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Ends `ticket`'s turn (sent, failed or abandoned) and passes the turn on.
    fn release(&self, ticket: u64) {
        let mut s = self.lock();
        if s.next_to_send != ticket {
            s.abandoned.insert(ticket);
            return;
        }
        s.next_to_send += 1;
        loop {
            let next = s.next_to_send;
            if !s.abandoned.remove(&next) {
                break;
            }
            s.next_to_send += 1;
        }
        let next_to_send = s.next_to_send;
        let next = s.waiting.remove(&next_to_send);
        drop(s);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// A place in line; giving it up (drop) passes the turn on.
pub(super) struct Ticket<'a> {
    turns: &'a Turns,
    pub(super) number: u64,
    finished: bool,
}

impl Ticket<'_> {
    pub(super) fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.turns.release(self.number);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}
