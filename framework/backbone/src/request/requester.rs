//! The requester side: sending requests and routing their replies to the callers waiting.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Headers as _, Message as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::consume::ConsumeError;
use crate::handler::IncomingEvent;
use crate::publish::{Outgoing, Publisher};
use crate::runtime::Context;
use crate::topic::{TopicError, TopicSpec, check_may_read};

use super::pending::{InFlight, Routes, bump};
use super::reply::{Reply, RequestError};
use crate::reader::{self, AssignError, Isolation, Start};

use super::*;

pub(super) struct Shared {
    pub(super) routes: Routes,
    pub(super) publisher: Publisher,
    pub(super) requests: TopicSpec,
    pub(super) reply_to: String,
    pub(super) instance: String,
    pub(super) event_type: String,
}

/// Stops the reply reader when the last [`Requester`] clone goes.
pub(super) struct Reader {
    pub(super) stop: watch::Sender<bool>,
    pub(super) task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Sends requests and waits for their replies. Cheap to clone: clones share the pending requests,
/// the reply reader and the metrics. Build one with [`Requester::builder`].
#[derive(Clone)]
pub struct Requester {
    pub(super) shared: Arc<Shared>,
    pub(super) reader: Arc<Reader>,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("requests", &self.shared.requests.name())
            .field("reply_to", &self.shared.reply_to)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Requester`].
#[must_use = "a requester builder does nothing until started"]
pub struct RequesterBuilder {
    client: rdkafka::ClientConfig,
    publisher: Publisher,
    requests: TopicSpec,
    replies: TopicSpec,
    max_pending: usize,
    event_type: String,
}

impl fmt::Debug for RequesterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequesterBuilder")
            .field("requests", &self.requests.name())
            .field("replies", &self.replies.name())
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

/// How long start-up waits for the reply topic's metadata and end offsets.
pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

impl Requester {
    /// A requester for the context's service, which must own `requests` and may read `replies` (the
    /// responder's reply topic); the context's publisher publishes the requests.
    pub fn builder(
        context: &Context,
        requests: &TopicSpec,
        replies: &TopicSpec,
    ) -> Result<RequesterBuilder, ConsumeError> {
        let spec = context.spec();
        if spec.owned(requests.name()).is_none() {
            return Err(TopicError::InvalidTopic {
                topic: requests.name().to_owned(),
                reason: format!(
                    "service `{}` sends requests on `{}` but does not own it: a requester publishes on \
                     a topic of its own (`request::request_topic(\"{}\", …)`, declared with `.owns(…)`)",
                    spec.name(),
                    requests.name(),
                    spec.name()
                ),
            }
            .into());
        }
        check_may_read(spec.name(), replies)?;
        Ok(RequesterBuilder {
            client: context.config().client_config(spec.name()),
            publisher: context.publisher().clone(),
            requests: requests.clone(),
            replies: replies.clone(),
            max_pending: 10_000,
            event_type: DEFAULT_REQUEST_TYPE.to_owned(),
        })
    }

    /// Sends `payload` and waits up to `timeout` (publishing included; at most [`MAX_DEADLINE`])
    /// for its reply.
    ///
    /// Fails at once with [`RequestError::Overloaded`] when `max_pending` requests are pending.
    /// Dropping the future stops waiting (the request may still be answered; the reply is dropped).
    pub async fn request(&self, payload: &[u8], timeout: Duration) -> Result<Reply, RequestError> {
        let timeout = timeout.min(MAX_DEADLINE);
        let shared = &*self.shared;
        let routes = &shared.routes;
        let id = Uuid::new_v4();
        let deadline = tokio::time::Instant::now() + timeout;
        let deadline_millis = (SystemTime::now() + timeout)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut rx = routes.register(id)?;
        let _in_flight = InFlight { routes, id };
        let timed_out = || {
            bump(&routes.counters.timed_out);
            RequestError::Timeout { topic: shared.reply_to.clone(), timeout }
        };

        let id_text = id.hyphenated().to_string();
        let deadline_text = deadline_millis.to_string();
        let request_headers = [
            (headers::REQUEST_ID, id_text.as_bytes()),
            (headers::REPLY_TO, shared.reply_to.as_bytes()),
            (headers::REQUESTER, shared.instance.as_bytes()),
            (headers::DEADLINE, deadline_text.as_bytes()),
        ];
        let event = Outgoing::new(&shared.event_type, id_text.as_bytes(), payload).headers(&request_headers);
        match tokio::time::timeout_at(deadline, shared.publisher.publish(&shared.requests, event)).await {
            Ok(Ok(_)) => bump(&routes.counters.sent),
            Ok(Err(e)) => {
                routes.give_up(id);
                bump(&routes.counters.publish_failed);
                return Err(RequestError::Publish(e));
            }
            // Perhaps written: a reply may yet come (and be counted late), or be here already.
            Err(_) if routes.give_up(id) => return Err(timed_out()),
            Err(_) => {}
        }
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(reply)) => routes.answered(reply),
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) if routes.give_up(id) => Err(timed_out()),
            // Delivered while the timeout fired: the reply is in the receiver.
            Err(_) => match rx.try_recv() {
                Ok(reply) => routes.answered(reply),
                Err(_) => Err(RequestError::Closed),
            },
        }
    }

    /// Requests waiting for their reply now.
    pub fn pending(&self) -> usize {
        self.shared.routes.lock().pending.len()
    }

    /// The metrics, now.
    pub fn stats(&self) -> RequestStats {
        self.shared.routes.stats()
    }

    /// This requester instance's id: replies carrying another are not for it.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Stops the reply reader; pending requests end with [`RequestError::Closed`], new ones are
    /// refused. Also happens when the last clone is dropped.
    pub async fn close(&self) {
        self.reader.stop.send_replace(true);
        let task = self.reader.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.await.ok();
        }
        self.shared.routes.close();
    }
}

impl RequesterBuilder {
    /// At most `requests` pending at once (default 10,000); more fail with
    /// [`RequestError::Overloaded`].
    pub fn max_pending(mut self, requests: usize) -> Self {
        self.max_pending = requests.max(1);
        self
    }

    /// The event type of requests (default [`DEFAULT_REQUEST_TYPE`]).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets a librdkafka property of the reply reader (`fetch.wait.max.ms` …).
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.client.set(key, value);
        self
    }

    /// Assigns the reply reader every partition of the reply topic at its current end, and returns
    /// once it is in place: every reply to a request sent afterwards is seen. The reply topic must
    /// exist (its owner, the responder service, provisions it at start-up).
    pub async fn start(self) -> Result<Requester, ConsumeError> {
        let topic = self.replies.name().to_owned();
        let failed = |reason: String| ConsumeError::Client { topic: topic.clone(), reason };
        let instance = Uuid::new_v4().simple().to_string();
        // Replies are per instance: there is nothing to share or resume, so no group to join.
        let group = format!("{}.replies.{instance}", self.publisher.service());
        let consumer: StreamConsumer =
            reader::settings(self.client.clone(), group, Isolation::Committed, false)
                .create()
                .map_err(|e| failed(e.to_string()))?;
        let consumer = tokio::task::spawn_blocking({
            let topic = topic.clone();
            let owner = self.replies.owner().to_owned();
            move || -> Result<StreamConsumer, String> {
                match reader::assign_all(&consumer, &topic, Start::End, METADATA_TIMEOUT) {
                    Ok(()) => Ok(consumer),
                    Err(AssignError::Missing) => Err(format!(
                        "the reply topic does not exist (yet): its owner `{owner}` provisions it when it starts"
                    )),
                    Err(AssignError::Kafka(e)) => Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;

        let shared = Arc::new(Shared {
            routes: Routes::new(self.max_pending),
            publisher: self.publisher,
            requests: self.requests,
            reply_to: topic,
            instance,
            event_type: self.event_type,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise_replies(shared.clone(), Arc::new(consumer), stopped, read_replies));
        Ok(Requester { shared, reader: Arc::new(Reader { stop, task: Mutex::new(Some(task)) }) })
    }
}

/// Runs the reply reader until stopped, starting it again should it end otherwise (a panic): a
/// requester's callers must never wait on a reader that is gone. When it stops, pending requests
/// end with [`RequestError::Closed`].
pub(super) async fn supervise_replies<R, F>(
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer>,
    stop: watch::Receiver<bool>,
    read: R,
) where
    R: Fn(Arc<Shared>, Arc<StreamConsumer>, watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let reader = tokio::spawn(read(shared.clone(), consumer.clone(), stop.clone()));
        match reader.await {
            Ok(()) => break,
            Err(e) if *stop.borrow() => {
                tracing::warn!(topic = shared.reply_to, error = %e, "reply reader ended while stopping");
                break;
            }
            Err(e) => {
                // The reply it was reading is lost (its caller times out); the others still come.
                bump(&shared.routes.counters.reader_restarts);
                tracing::error!(topic = shared.reply_to, error = %e, "reply reader failed; starting it again");
            }
        }
    }
    shared.routes.close();
    tokio::task::spawn_blocking(move || drop(consumer)).await.ok();
}

/// The reply reader: routes the replies addressed to this instance until stopped.
pub(super) async fn read_replies(
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer>,
    mut stop: watch::Receiver<bool>,
) {
    use crate::handler::MessageHeaders as _;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(topic = shared.reply_to, error = %e, "reply reader error");
                continue;
            }
        };
        // Names read as bytes: one that is not UTF-8 is merely not ours.
        let (mut requester, mut id) = (None, None);
        if let Some(h) = message.headers() {
            for (name, value) in (0..h.count()).filter_map(|i| h.name_and_value(i)) {
                if name == headers::REQUESTER.as_bytes() {
                    requester = Some(value);
                } else if name == headers::REQUEST_ID.as_bytes() {
                    id = Some(value);
                }
            }
        }
        if requester != Some(shared.instance.as_bytes()) {
            bump(&shared.routes.counters.foreign_replies);
            continue;
        }
        let Some(id) = id.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| Uuid::try_parse(v).ok())
        else {
            tracing::warn!(offset = message.offset(), "a reply without a valid request id; dropped");
            bump(&shared.routes.counters.late_replies);
            continue;
        };
        shared.routes.deliver(Reply { id, event: IncomingEvent::from_message(&message) });
    }
}
