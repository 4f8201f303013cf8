//! The SIEM webhook: events are queued (bounded) and a tokio task POSTs them as JSON arrays
//! of up to `--events.webhook-batch-size` events.
//!
//! A batch is retried with exponential backoff (500ms doubling up to
//! `--events.webhook-max-backoff`, with jitter) for as long as the endpoint answers 408, 429,
//! 5xx, times out or cannot be reached; meanwhile new events wait in the queue, and once it is
//! full they are dropped and counted. Any other non-2xx answer drops the batch as `rejected`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Counters, DropReason, EventsArgs, EventsError, Sink, ViolationEvent};
use crate::error_chain;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The queue the hub pushes to and the sender drains.
#[derive(Debug)]
struct Queue {
    events: Mutex<VecDeque<Arc<ViolationEvent>>>,
    capacity: usize,
    notify: Notify,
    /// Events taken from the queue and not yet delivered or dropped.
    in_flight: AtomicUsize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<ViolationEvent>>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, max: usize) -> Vec<Arc<ViolationEvent>> {
        let mut q = self.lock();
        let n = q.len().min(max);
        let batch: Vec<_> = q.drain(..n).collect();
        self.in_flight.store(batch.len(), Ordering::Relaxed);
        batch
    }
}

/// Handle of the webhook sender.
#[derive(Debug)]
pub(super) struct Webhook {
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    closing: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Webhook {
    /// Validates the flags and spawns the sender on the current runtime.
    pub(super) fn start(
        url: &str,
        args: &EventsArgs,
        counters: Arc<Counters>,
    ) -> Result<Self, EventsError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| EventsError::WebhookUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EventsError::WebhookUrl {
                url: url.into(),
                reason: format!("scheme {:?} is not http or https", parsed.scheme()),
            });
        }
        let headers = headers(args)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("dockwatch/", env!("CARGO_PKG_VERSION")))
            .timeout(args.webhook_timeout)
            .connect_timeout(args.webhook_timeout)
            .default_headers(headers)
            .build()
            .map_err(EventsError::Client)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EventsError::NoRuntime)?;
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            capacity: args.webhook_queue_size,
            notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
        });
        let closing = CancellationToken::new();
        let sender = Sender {
            client,
            endpoint: redact(&parsed),
            url: parsed,
            batch_size: args.webhook_batch_size,
            max_backoff: args.webhook_max_backoff.max(FIRST_BACKOFF),
            queue: queue.clone(),
            counters: counters.clone(),
            closing: closing.clone(),
        };
        tracing::info!(endpoint = %sender.endpoint, batch_size = sender.batch_size, queue_size = args.webhook_queue_size, "sending violation events to a webhook");
        let task = runtime.spawn(sender.run());
        Ok(Self {
            queue,
            counters,
            closing,
            task: Mutex::new(Some(task)),
        })
    }

    /// Queues `event`, or drops and counts it when the queue is full or the sender stopped.
    pub(super) fn push(&self, event: Arc<ViolationEvent>) {
        let mut q = self.queue.lock();
        if self.closing.is_cancelled() {
            drop(q);
            self.counters
                .dropped(Sink::Webhook, DropReason::Shutdown, 1);
        } else if q.len() >= self.queue.capacity {
            drop(q);
            self.counters
                .dropped(Sink::Webhook, DropReason::QueueFull, 1);
        } else {
            q.push_back(event);
            drop(q);
            self.queue.notify.notify_one();
        }
    }

    /// Events waiting in the queue.
    pub(super) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Lets the sender deliver what is queued for up to `grace`, then stops it and counts what
    /// is left as dropped.
    pub(super) async fn close(&self, grace: Duration) {
        self.closing.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
            let left = self.queue.lock().drain(..).count()
                + self.queue.in_flight.swap(0, Ordering::Relaxed);
            if left > 0 {
                tracing::warn!(events = left, "webhook events left undelivered at shutdown");
                self.counters
                    .dropped(Sink::Webhook, DropReason::Shutdown, left as u64);
            }
        }
    }
}

fn headers(args: &EventsArgs) -> Result<HeaderMap, EventsError> {
    let mut map = HeaderMap::new();
    for raw in &args.webhook_headers {
        let bad = || EventsError::WebhookHeader {
            header: raw.clone(),
        };
        let (name, value) = raw.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    if let Some(path) = &args.webhook_bearer_token_file {
        let fail = |reason: String| EventsError::TokenFile {
            path: path.clone(),
            reason,
        };
        let token = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| fail("the token holds characters not allowed in a header".into()))?;
        value.set_sensitive(true);
        map.insert(AUTHORIZATION, value);
    }
    Ok(map)
}

/// The URL without credentials, query or path beyond the host, for logs.
fn redact(url: &reqwest::Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    endpoint: String,
    batch_size: usize,
    max_backoff: Duration,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    closing: CancellationToken,
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Retry(String),
    Rejected(String),
}

impl Sender {
    async fn run(self) {
        loop {
            let batch = self.queue.take(self.batch_size);
            if batch.is_empty() {
                if self.closing.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = self.queue.notify.notified() => {}
                    _ = self.closing.cancelled() => {}
                }
                continue;
            }
            self.deliver(&batch).await;
            self.queue.in_flight.store(0, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, batch: &[Arc<ViolationEvent>]) {
        let events: Vec<&ViolationEvent> = batch.iter().map(|e| &**e).collect();
        let body = match serde_json::to_vec(&events) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "encoding events for the webhook failed");
                self.counters
                    .dropped(Sink::Webhook, DropReason::Rejected, batch.len() as u64);
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        loop {
            match self.attempt(body.clone()).await {
                Attempt::Delivered => {
                    if attempt > 1 {
                        tracing::info!(endpoint = %self.endpoint, attempts = attempt, "webhook delivery recovered");
                    }
                    tracing::debug!(events = batch.len(), "delivered events to the webhook");
                    for e in batch {
                        self.counters.delivered(Sink::Webhook, e.kind);
                    }
                    return;
                }
                Attempt::Rejected(why) => {
                    tracing::warn!(endpoint = %self.endpoint, events = batch.len(), error = %why, "webhook rejected events; dropping them");
                    self.counters
                        .dropped(Sink::Webhook, DropReason::Rejected, batch.len() as u64);
                    return;
                }
                Attempt::Retry(why) => {
                    if self.closing.is_cancelled() {
                        tracing::warn!(endpoint = %self.endpoint, events = batch.len(), error = %why, "webhook unavailable at shutdown; dropping events");
                        self.counters.dropped(
                            Sink::Webhook,
                            DropReason::Shutdown,
                            batch.len() as u64,
                        );
                        return;
                    }
                    let wait = jitter(backoff);
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(endpoint = %self.endpoint, attempt, retry_in = ?wait, error = %why, "webhook delivery failed; retrying");
                    } else {
                        tracing::debug!(endpoint = %self.endpoint, attempt, retry_in = ?wait, error = %why, "webhook delivery failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.closing.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, body: Vec<u8>) -> Attempt {
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Attempt::Delivered
                } else if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Attempt::Retry(format!("status {status}"))
                } else {
                    Attempt::Rejected(format!("status {status}"))
                }
            }
            Err(e) => Attempt::Retry(error_chain(&e)),
        }
    }
}

/// Adds up to a quarter of `d`, so that many hosts do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let quarter = (d.as_millis() / 4).max(1) as u32;
    d + Duration::from_millis(u64::from(nanos % quarter))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU16;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::routing::post;

    use super::super::tests::event;
    use super::super::{EventHub, EventKind};
    use super::*;

    /// A webhook receiver on loopback that answers with the status in `status` and records
    /// every batch it accepted.
    #[derive(Clone, Default)]
    struct Receiver {
        status: Arc<AtomicU16>,
        accepted: Arc<Mutex<Vec<Vec<ViolationEvent>>>>,
        requests: Arc<AtomicUsize>,
        authorization: Arc<Mutex<Vec<String>>>,
    }

    impl Receiver {
        async fn start() -> (Self, String) {
            let receiver = Receiver::default();
            receiver.status.store(200, Ordering::SeqCst);
            let app = Router::new()
                .route("/hook", post(accept))
                .with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (receiver, url)
        }

        fn delivered(&self) -> Vec<f64> {
            let batches = self.accepted.lock().unwrap();
            batches.iter().flatten().map(|e| e.timestamp).collect()
        }
    }

    async fn accept(State(r): State<Receiver>, headers: AxumHeaders, body: String) -> StatusCode {
        r.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(v) = headers.get("authorization") {
            r.authorization
                .lock()
                .unwrap()
                .push(v.to_str().unwrap().to_string());
        }
        let status = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap();
        if status.is_success() {
            let batch: Vec<ViolationEvent> = serde_json::from_str(&body).unwrap();
            r.accepted.lock().unwrap().push(batch);
        }
        status
    }

    fn args(url: &str) -> EventsArgs {
        EventsArgs {
            webhook_url: Some(url.into()),
            webhook_max_backoff: Duration::from_millis(500),
            webhook_timeout: Duration::from_secs(2),
            ..Default::default()
        }
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn posts_json_array_batches() {
        let (receiver, url) = Receiver::start().await;
        // Hold the receiver back so the events pile up into batches of at most 3.
        receiver.status.store(503, Ordering::SeqCst);
        let hub = EventHub::new(&EventsArgs {
            webhook_batch_size: 3,
            ..args(&url)
        })
        .unwrap();
        for i in 0..7 {
            hub.publish(event(EventKind::ViolationStarted, "a", f64::from(i)));
        }
        wait_for("a first failed attempt", || {
            receiver.requests.load(Ordering::SeqCst) >= 1
        })
        .await;
        receiver.status.store(200, Ordering::SeqCst);
        wait_for("all events", || receiver.delivered().len() == 7).await;

        let sizes: Vec<usize> = receiver
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        // The first batch was taken when only the first event was queued.
        assert!(sizes.iter().all(|&n| (1..=3).contains(&n)), "{sizes:?}");
        assert_eq!(
            receiver.delivered(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let first = &receiver.accepted.lock().unwrap()[0][0];
        assert_eq!(first, &event(EventKind::ViolationStarted, "a", 0.0));
        assert_eq!(
            hub.inner
                .counters
                .get_delivered(Sink::Webhook, EventKind::ViolationStarted),
            7
        );
        assert_eq!(hub.webhook_queue_length(), 0);
    }

    #[tokio::test]
    async fn retries_after_a_server_error() {
        let (receiver, url) = Receiver::start().await;
        receiver.status.store(500, Ordering::SeqCst);
        let hub = EventHub::new(&args(&url)).unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 1.0));
        wait_for("two failed attempts", || {
            receiver.requests.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert!(receiver.delivered().is_empty());
        receiver.status.store(202, Ordering::SeqCst);
        wait_for("the retried event", || receiver.delivered() == vec![1.0]).await;
        assert_eq!(
            hub.inner
                .counters
                .get_dropped(Sink::Webhook, DropReason::Rejected),
            0
        );
    }

    #[tokio::test]
    async fn retries_while_the_endpoint_is_down() {
        // A port nobody listens on yet.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let hub = EventHub::new(&args(&format!("http://{addr}/hook"))).unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 1.0));
        tokio::time::sleep(Duration::from_millis(700)).await;

        let receiver = Receiver::default();
        receiver.status.store(200, Ordering::SeqCst);
        let app = Router::new()
            .route("/hook", post(accept))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        wait_for("delivery after the endpoint came up", || {
            receiver.delivered() == vec![1.0]
        })
        .await;
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_and_the_rest_arrives() {
        let (receiver, url) = Receiver::start().await;
        receiver.status.store(500, Ordering::SeqCst);
        let hub = EventHub::new(&EventsArgs {
            webhook_queue_size: 5,
            webhook_batch_size: 100,
            ..args(&url)
        })
        .unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 0.0));
        // Event 0 is now the batch being retried; 1..=5 fill the queue, 6..=9 are dropped.
        wait_for("the first attempt", || {
            receiver.requests.load(Ordering::SeqCst) >= 1
        })
        .await;
        for i in 1..10 {
            hub.publish(event(EventKind::ViolationStarted, "a", f64::from(i)));
        }
        assert_eq!(hub.webhook_queue_length(), 5);
        assert_eq!(
            hub.inner
                .counters
                .get_dropped(Sink::Webhook, DropReason::QueueFull),
            4
        );
        let text = super::super::tests::render(&hub);
        assert!(
            text.contains("dockwatch_events_webhook_queue_length 5.0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "dockwatch_events_dropped_total{sink=\"webhook\",reason=\"queue_full\"} 4.0\n"
            ),
            "{text}"
        );

        receiver.status.store(200, Ordering::SeqCst);
        wait_for("everything that was queued", || {
            receiver.delivered().len() == 6
        })
        .await;
        assert_eq!(receiver.delivered(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(hub.webhook_queue_length(), 0);
        let text = super::super::tests::render(&hub);
        assert!(
            text.contains(
                "dockwatch_events_total{sink=\"webhook\",kind=\"violation_started\"} 6.0\n"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn client_errors_drop_the_batch_as_rejected() {
        let (receiver, url) = Receiver::start().await;
        receiver.status.store(400, Ordering::SeqCst);
        let hub = EventHub::new(&args(&url)).unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 1.0));
        wait_for("the rejection", || {
            hub.inner
                .counters
                .get_dropped(Sink::Webhook, DropReason::Rejected)
                == 1
        })
        .await;
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn sends_configured_headers_and_bearer_token() {
        let (receiver, url) = Receiver::start().await;
        let dir = std::env::temp_dir().join(format!("dockwatch-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let hub = EventHub::new(&EventsArgs {
            webhook_bearer_token_file: Some(token),
            ..args(&url)
        })
        .unwrap();
        hub.publish(event(EventKind::Enforcement, "a", 1.0));
        wait_for("delivery", || receiver.delivered().len() == 1).await;
        assert_eq!(
            *receiver.authorization.lock().unwrap(),
            vec!["Bearer s3cret"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn shutdown_counts_what_could_not_be_sent() {
        let (receiver, url) = Receiver::start().await;
        receiver.status.store(503, Ordering::SeqCst);
        let hub = EventHub::new(&args(&url)).unwrap();
        for i in 0..3 {
            hub.publish(event(EventKind::ViolationStarted, "a", f64::from(i)));
        }
        wait_for("a first attempt", || {
            receiver.requests.load(Ordering::SeqCst) >= 1
        })
        .await;
        hub.close(Duration::from_secs(3)).await;
        hub.publish(event(EventKind::ViolationStarted, "a", 9.0));
        assert_eq!(
            hub.inner
                .counters
                .get_dropped(Sink::Webhook, DropReason::Shutdown),
            4
        );
    }

    #[tokio::test]
    async fn bad_flags_are_errors() {
        let bad_url = EventHub::new(&args("ftp://127.0.0.1/x")).unwrap_err();
        assert_eq!(
            bad_url.to_string(),
            "invalid webhook url \"ftp://127.0.0.1/x\": scheme \"ftp\" is not http or https"
        );
        let bad_header = EventHub::new(&EventsArgs {
            webhook_headers: vec!["no colon".into()],
            ..args("http://127.0.0.1:1/")
        })
        .unwrap_err();
        assert_eq!(
            bad_header.to_string(),
            "invalid webhook header \"no colon\": expected `Name: value`"
        );
    }

    #[test]
    fn redacts_credentials_and_path() {
        let url =
            reqwest::Url::parse("https://user:pw@siem.example:8088/services?token=x").unwrap();
        assert_eq!(redact(&url), "https://siem.example:8088");
    }
}
