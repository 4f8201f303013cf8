//! Violation events: the record every policy episode start and end becomes, and the hub that
//! fans them out.
//!
//! [`EventHub::publish`] never blocks: the event is logged through tracing (target
//! `dockwatch::events`), kept in a bounded ring buffer behind `GET /violations`, and handed to
//! the optional file writer (its own thread) and webhook sender (a tokio task) through bounded
//! queues. A full queue drops the event and counts it in `dockwatch_events_dropped_total`.

mod file;
mod query;
mod webhook;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use clap::Args;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};

use crate::cli::parse_duration;
use crate::metrics::{Family, Kind, label};

pub use query::{Filter, FilterError};

/// The tracing target every event is logged under.
pub const TARGET: &str = "dockwatch::events";

/// How bad a violation is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Informational.
    Low,
    /// Opens a ticket.
    Medium,
    /// Alerts.
    High,
    /// Pages; the only severity that can trigger quarantine.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// Parses a severity name, ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// Label value on `/metrics` (upper case, as in policy files).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        }
    }
}

/// Whether a policy's violations may lead to action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Violations may quarantine the container when dockwatch runs with `--enforce`.
    #[default]
    Enforce,
    /// Violations are reported only; any action is logged as what would have happened.
    DryRun,
}

impl Mode {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A condition started to hold for (container, policy, rule, subject).
    ViolationStarted,
    /// It stopped holding, or the container went away.
    ViolationEnded,
    /// A quarantine action was taken, failed, or would have been taken.
    Enforcement,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 3] = [
        Self::ViolationStarted,
        Self::ViolationEnded,
        Self::Enforcement,
    ];

    /// The name used in JSON and as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ViolationStarted => "violation_started",
            Self::ViolationEnded => "violation_ended",
            Self::Enforcement => "enforcement",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One structured event, as logged, written to the events file, sent to the webhook and
/// returned by `GET /violations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViolationEvent {
    /// RFC 3339 time of the event.
    pub time: String,
    /// Unix seconds of the event (for filtering with `since`).
    pub timestamp: f64,
    /// Event kind.
    pub kind: EventKind,
    /// Policy name from the policy file.
    pub policy: String,
    /// Stable rule id, e.g. `image_tag`, `runtime_process`.
    pub rule: String,
    /// `image`, `runtime` or `network`.
    pub category: String,
    /// Severity of the rule.
    pub severity: Severity,
    /// Mode of the policy.
    pub mode: Mode,
    /// Full container id.
    pub container_id: String,
    /// Container name.
    pub container: String,
    /// Image reference.
    pub image: String,
    /// What violated: a tag, CVE id, process name, syscall, port, address…
    pub subject: String,
    /// Human-readable explanation.
    pub message: String,
    /// For enforcement events: `stop`, `pause` or `disconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For enforcement events: `success`, `failure` or `dry_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// For ended events: how long the episode lasted, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl ViolationEvent {
    /// What identifies a violation episode: the same condition on the same container.
    pub fn episode_key(&self) -> EpisodeKey {
        EpisodeKey {
            container_id: self.container_id.clone(),
            policy: self.policy.clone(),
            rule: self.rule.clone(),
            subject: self.subject.clone(),
        }
    }
}

/// The current time as the pair of `time` (RFC 3339, milliseconds, UTC) and `timestamp`
/// (Unix seconds) every event carries.
pub fn timestamp_now() -> (String, f64) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (humantime::format_rfc3339_millis(now).to_string(), secs)
}

/// Identity of a violation episode: (container, policy, rule, subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpisodeKey {
    /// Full container id.
    pub container_id: String,
    /// Policy name.
    pub policy: String,
    /// Rule id.
    pub rule: String,
    /// What violated.
    pub subject: String,
}

/// Flags of the event sinks.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Violation events")]
pub struct EventsArgs {
    /// Recent events kept in memory for GET /violations.
    #[arg(id = "events.buffer-size", long = "events.buffer-size", value_name = "N", default_value = "1000", value_parser = parse_positive)]
    pub buffer_size: usize,

    /// Append every event as one JSON line to this file.
    #[arg(id = "events.file", long = "events.file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Rotate the events file before it grows past this size (e.g. 100MiB, 512KiB, 1GB),
    /// keeping one old file PATH.1; 0 never rotates (leave it to logrotate).
    #[arg(id = "events.file-max-size", long = "events.file-max-size", value_name = "BYTES", default_value = "100MiB", value_parser = parse_size)]
    pub file_max_size: u64,

    /// POST events to this http(s) URL as JSON arrays.
    #[arg(
        id = "events.webhook-url",
        long = "events.webhook-url",
        value_name = "URL"
    )]
    pub webhook_url: Option<String>,

    /// Events waiting for the webhook; when full, new events are dropped and counted.
    #[arg(id = "events.webhook-queue-size", long = "events.webhook-queue-size", value_name = "N", default_value = "10000", value_parser = parse_positive)]
    pub webhook_queue_size: usize,

    /// Most events in one webhook request.
    #[arg(id = "events.webhook-batch-size", long = "events.webhook-batch-size", value_name = "N", default_value = "100", value_parser = parse_positive)]
    pub webhook_batch_size: usize,

    /// Timeout of one webhook request.
    #[arg(id = "events.webhook-timeout", long = "events.webhook-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Longest wait between two delivery attempts of a batch (the wait doubles from 500ms).
    #[arg(id = "events.webhook-max-backoff", long = "events.webhook-max-backoff", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub webhook_max_backoff: Duration,

    /// Extra header of every webhook request, as `Name: value` (repeatable).
    #[arg(
        id = "events.webhook-header",
        long = "events.webhook-header",
        value_name = "HEADER"
    )]
    pub webhook_headers: Vec<String>,

    /// File holding a token sent as `Authorization: Bearer <token>`, read at start.
    #[arg(
        id = "events.webhook-bearer-token-file",
        long = "events.webhook-bearer-token-file",
        value_name = "PATH"
    )]
    pub webhook_bearer_token_file: Option<PathBuf>,
}

impl Default for EventsArgs {
    fn default() -> Self {
        Self {
            buffer_size: 1000,
            file: None,
            file_max_size: 100 << 20,
            webhook_url: None,
            webhook_queue_size: 10_000,
            webhook_batch_size: 100,
            webhook_timeout: Duration::from_secs(10),
            webhook_max_backoff: Duration::from_secs(30),
            webhook_headers: Vec::new(),
            webhook_bearer_token_file: None,
        }
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{s:?} must be at least 1")),
        Err(e) => Err(format!("invalid number {s:?}: {e}")),
    }
}

/// Parses a byte size: a plain number of bytes or one with a unit (`KB`, `MB`, `GB` are powers
/// of 1000; `KiB`, `MiB`, `GiB` of 1024; `K`, `M`, `G` are read as binary units too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional unit"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as u64)
}

/// Errors setting up the sinks.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The events file could not be opened for appending.
    #[error("opening events file {path}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("starting the events file writer")]
    Thread(#[source] std::io::Error),
    /// `--events.webhook-url` is not an http(s) URL.
    #[error("invalid webhook url {url:?}: {reason}")]
    WebhookUrl {
        /// The flag value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--events.webhook-header` value is not `Name: value`.
    #[error("invalid webhook header {header:?}: expected `Name: value`")]
    WebhookHeader {
        /// The flag value.
        header: String,
    },
    /// The bearer token file could not be read or is empty.
    #[error("reading bearer token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the webhook client")]
    Client(#[source] reqwest::Error),
    /// The webhook sender is a tokio task and needs a runtime.
    #[error("the webhook sender must be started inside a tokio runtime")]
    NoRuntime,
}

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    Log,
    File,
    Webhook,
}

impl Sink {
    const ALL: [Sink; 3] = [Self::Log, Self::File, Self::Webhook];

    fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::File => "file",
            Self::Webhook => "webhook",
        }
    }
}

/// Why an event did not reach a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The sink's queue was full.
    QueueFull,
    /// Writing the file failed.
    WriteError,
    /// The webhook answered with a status that retrying will not fix (4xx).
    Rejected,
    /// dockwatch stopped before the event could be delivered.
    Shutdown,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        Self::QueueFull,
        Self::WriteError,
        Self::Rejected,
        Self::Shutdown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::WriteError => "write_error",
            Self::Rejected => "rejected",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reasons that can happen at `sink`.
    fn applies_to(self, sink: Sink) -> bool {
        match sink {
            Sink::Log => false,
            Sink::File => matches!(self, Self::QueueFull | Self::WriteError | Self::Shutdown),
            Sink::Webhook => !matches!(self, Self::WriteError),
        }
    }
}

/// Quarantine actions and results, as label values of `dockwatch_enforcement_actions_total`.
pub const ENFORCEMENT_ACTIONS: [&str; 3] = ["stop", "pause", "disconnect"];
/// Results of an enforcement event.
pub const ENFORCEMENT_RESULTS: [&str; 4] = ["success", "failure", "dry_run", "excluded"];

/// Counters shared by the hub, the file writer and the webhook sender.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    delivered: [[AtomicU64; 3]; 3],
    dropped: [[AtomicU64; 4]; 3],
    enforcement: [[AtomicU64; 4]; 3],
}

impl Counters {
    pub(crate) fn delivered(&self, sink: Sink, kind: EventKind) {
        self.delivered[sink as usize][kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, sink: Sink, reason: DropReason, n: u64) {
        self.dropped[sink as usize][reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn enforcement(&self, event: &ViolationEvent) {
        let (Some(action), Some(result)) = (&event.action, &event.result) else {
            return;
        };
        let a = ENFORCEMENT_ACTIONS.iter().position(|x| x == action);
        let r = ENFORCEMENT_RESULTS.iter().position(|x| x == result);
        if let (Some(a), Some(r)) = (a, r) {
            self.enforcement[a][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get_delivered(&self, sink: Sink, kind: EventKind) -> u64 {
        self.delivered[sink as usize][kind.index()].load(Ordering::Relaxed)
    }

    fn get_dropped(&self, sink: Sink, reason: DropReason) -> u64 {
        self.dropped[sink as usize][reason as usize].load(Ordering::Relaxed)
    }
}

/// The ring buffer of recent events and the episodes still open.
#[derive(Debug)]
struct Recent {
    capacity: usize,
    events: VecDeque<Arc<ViolationEvent>>,
    open: HashMap<EpisodeKey, Arc<ViolationEvent>>,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            events: VecDeque::with_capacity(capacity.clamp(1, 4096)),
            open: HashMap::new(),
        }
    }

    fn push(&mut self, event: Arc<ViolationEvent>) {
        match event.kind {
            EventKind::ViolationStarted => {
                self.open.insert(event.episode_key(), event.clone());
            }
            EventKind::ViolationEnded => {
                self.open.remove(&event.episode_key());
            }
            EventKind::Enforcement => {}
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

#[derive(Debug)]
struct Inner {
    recent: Mutex<Recent>,
    counters: Arc<Counters>,
    file: Option<file::FileSink>,
    webhook: Option<webhook::Webhook>,
}

/// Fans events out to every sink. Publishing never blocks the caller. Clones share the sinks.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl Default for EventHub {
    /// A hub with the default ring buffer and only the log sink.
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                recent: Mutex::new(Recent::new(EventsArgs::default().buffer_size)),
                counters: Arc::new(Counters::default()),
                file: None,
                webhook: None,
            }),
        }
    }
}

impl EventHub {
    /// Starts the sinks `args` configure: opens the events file (so a bad path fails at
    /// start) and, with a webhook, spawns its sender on the current tokio runtime.
    pub fn new(args: &EventsArgs) -> Result<Self, EventsError> {
        let counters = Arc::new(Counters::default());
        let file = match &args.file {
            Some(path) => Some(file::FileSink::start(
                path.clone(),
                args.file_max_size,
                counters.clone(),
            )?),
            None => None,
        };
        let webhook = match &args.webhook_url {
            Some(url) => Some(webhook::Webhook::start(url, args, counters.clone())?),
            None => None,
        };
        let hub = Self {
            inner: Arc::new(Inner {
                recent: Mutex::new(Recent::new(args.buffer_size)),
                counters,
                file,
                webhook,
            }),
        };
        Ok(hub)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes one event to every sink. Never blocks on I/O.
    pub fn publish(&self, event: ViolationEvent) {
        let event = Arc::new(event);
        if log(&event) {
            self.inner.counters.delivered(Sink::Log, event.kind);
        }
        self.inner.counters.enforcement(&event);
        self.recent().push(event.clone());
        if let Some(file) = &self.inner.file {
            file.send(&event);
        }
        if let Some(webhook) = &self.inner.webhook {
            webhook.push(event);
        }
    }

    /// Recent events matching `filter`, newest first.
    pub fn query(&self, filter: &Filter) -> Vec<Arc<ViolationEvent>> {
        let recent = self.recent();
        let limit = filter.limit.unwrap_or(usize::MAX);
        if filter.active {
            let mut open: Vec<_> = recent
                .open
                .values()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect();
            open.sort_by(|a, b| b.timestamp.total_cmp(&a.timestamp));
            open.truncate(limit);
            open
        } else {
            recent
                .events
                .iter()
                .rev()
                .filter(|e| filter.matches(e))
                .take(limit)
                .cloned()
                .collect()
        }
    }

    /// Every event in the ring buffer, oldest first.
    pub fn recent_events(&self) -> Vec<Arc<ViolationEvent>> {
        self.recent().events.iter().cloned().collect()
    }

    /// The start event of the episode `key`, while it is open.
    pub fn open_episode(&self, key: &EpisodeKey) -> Option<Arc<ViolationEvent>> {
        self.recent().open.get(key).cloned()
    }

    /// Events waiting for the webhook (not counting the batch being sent).
    pub fn webhook_queue_length(&self) -> usize {
        self.inner.webhook.as_ref().map_or(0, |w| w.len())
    }

    /// Waits until the file writer has written everything published so far.
    pub async fn flush(&self) {
        if let Some(file) = &self.inner.file {
            file.flush().await;
        }
    }

    /// Flushes the file and gives the webhook up to `grace` to deliver what is queued; what is
    /// still undelivered then is counted as dropped (`reason="shutdown"`).
    pub async fn close(&self, grace: Duration) {
        self.flush().await;
        if let Some(webhook) = &self.inner.webhook {
            webhook.close(grace).await;
        }
    }

    /// `GET /violations`, to merge into the HTTP router.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/violations", get(query::violations))
            .with_state(self.clone())
    }

    fn sinks(&self) -> impl Iterator<Item = Sink> + '_ {
        Sink::ALL.into_iter().filter(|s| match s {
            Sink::Log => true,
            Sink::File => self.inner.file.is_some(),
            Sink::Webhook => self.inner.webhook.is_some(),
        })
    }
}

/// Logs `event` as one structured line; returns whether the line was enabled at all.
///
/// Every event field is a tracing field except `timestamp`: the log line has its own
/// `timestamp` key, and `time` says when the event happened.
fn log(e: &ViolationEvent) -> bool {
    macro_rules! emit {
        ($level:expr) => {{
            if !tracing::enabled!(target: "dockwatch::events", $level) {
                return false;
            }
            tracing::event!(
                target: "dockwatch::events",
                $level,
                time = %e.time,
                kind = e.kind.as_str(),
                policy = %e.policy,
                rule = %e.rule,
                category = %e.category,
                severity = e.severity.as_str(),
                mode = e.mode.as_str(),
                container_id = %e.container_id,
                container = %e.container,
                image = %e.image,
                subject = %e.subject,
                action = e.action.as_deref(),
                result = e.result.as_deref(),
                duration_seconds = e.duration_seconds,
                "{}",
                e.message
            );
            true
        }};
    }
    match e.kind {
        EventKind::ViolationEnded => emit!(tracing::Level::INFO),
        EventKind::ViolationStarted | EventKind::Enforcement => emit!(tracing::Level::WARN),
    }
}

impl Collector for EventHub {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let counters = &self.inner.counters;
        let mut delivered = Family::new(
            "dockwatch_events",
            "Violation events delivered per sink (log, file, webhook) and kind",
            Kind::Counter,
        );
        let mut dropped = Family::new(
            "dockwatch_events_dropped",
            "Violation events a sink did not deliver, by reason (queue_full, write_error, rejected, shutdown)",
            Kind::Counter,
        );
        for sink in self.sinks() {
            for kind in EventKind::ALL {
                delivered.push(
                    vec![label("sink", sink.as_str()), label("kind", kind.as_str())],
                    counters.get_delivered(sink, kind) as f64,
                );
            }
            for reason in DropReason::ALL.into_iter().filter(|r| r.applies_to(sink)) {
                dropped.push(
                    vec![
                        label("sink", sink.as_str()),
                        label("reason", reason.as_str()),
                    ],
                    counters.get_dropped(sink, reason) as f64,
                );
            }
        }
        delivered.encode(&mut enc)?;
        dropped.encode(&mut enc)?;
        if let Some(webhook) = &self.inner.webhook {
            Family::new(
                "dockwatch_events_webhook_queue_length",
                "Violation events waiting to be sent to the webhook",
                Kind::Gauge,
            )
            .sample(&[], webhook.len() as f64)
            .encode(&mut enc)?;
        }
        let mut actions = Family::new(
            "dockwatch_enforcement_actions",
            "Quarantine actions by action and result (success, failure, dry_run, excluded)",
            Kind::Counter,
        );
        for (a, action) in ENFORCEMENT_ACTIONS.iter().enumerate() {
            for (r, result) in ENFORCEMENT_RESULTS.iter().enumerate() {
                actions.push(
                    vec![label("action", action), label("result", result)],
                    counters.enforcement[a][r].load(Ordering::Relaxed) as f64,
                );
            }
        }
        actions.encode(&mut enc)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    /// A CRITICAL `enforce` event of policy `prod` for `container`, whose id is the name
    /// repeated to 64 characters.
    pub(crate) fn event(kind: EventKind, container: &str, timestamp: f64) -> ViolationEvent {
        let id: String = container.chars().cycle().take(64).collect();
        ViolationEvent {
            time: "2026-12-03T13:00:00.000Z".into(),
            timestamp,
            kind,
            policy: "prod".into(),
            rule: "runtime_process".into(),
            category: "runtime".into(),
            severity: Severity::Critical,
            mode: Mode::Enforce,
            container_id: id,
            container: container.into(),
            image: "busybox:latest".into(),
            subject: "xmrig".into(),
            message: format!("process xmrig runs in {container}"),
            action: None,
            result: None,
            duration_seconds: (kind == EventKind::ViolationEnded).then_some(4.5),
        }
    }

    /// The hub's metrics in the Prometheus text format.
    pub(crate) fn render(hub: &EventHub) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(hub.clone()));
        crate::metrics::render(&registry).unwrap()
    }

    #[test]
    fn flags_reach_the_args() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "dockwatch",
            "--events.file",
            "/var/log/dockwatch/events.jsonl",
            "--events.file-max-size",
            "10MiB",
            "--events.webhook-header",
            "X-Token: a",
            "--events.webhook-header",
            "X-Env: prod",
            "--enforce",
            "--enforce.action",
            "pause",
            "--enforce.exclude",
            "traefik,db-*",
        ])
        .unwrap();
        let events = &cli.run.events;
        assert_eq!(
            events.file.as_deref(),
            Some(std::path::Path::new("/var/log/dockwatch/events.jsonl"))
        );
        assert_eq!(events.file_max_size, 10 << 20);
        assert_eq!(events.webhook_headers, vec!["X-Token: a", "X-Env: prod"]);
        assert_eq!(events.buffer_size, 1000);
        assert!(cli.run.enforce.enabled);
        assert_eq!(
            cli.run.enforce.action,
            crate::docker::ContainerAction::Pause
        );
        assert_eq!(cli.run.enforce.exclude, vec!["traefik", "db-*"]);
        let bad = crate::cli::Cli::try_parse_from(["dockwatch", "--events.buffer-size", "0"]);
        assert!(bad.unwrap_err().to_string().contains("must be at least 1"));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(
            parse_size("10 parsecs")
                .unwrap_err()
                .contains("unknown unit \"parsecs\"")
        );
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn event_json_round_trips_and_omits_empty_fields() {
        let e = event(EventKind::ViolationStarted, "web", 1.5);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "violation_started");
        assert_eq!(json["severity"], "CRITICAL");
        assert_eq!(json["mode"], "enforce");
        assert!(json.get("action").is_none());
        assert!(json.get("duration_seconds").is_none());
        let back: ViolationEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(Severity::parse("medium"), Some(Severity::Medium));
        assert_eq!(
            EventKind::parse("enforcement"),
            Some(EventKind::Enforcement)
        );
    }

    #[test]
    fn metrics_start_at_zero_and_count_per_sink_and_kind() {
        let hub = EventHub::default();
        let text = render(&hub);
        assert!(
            text.contains("dockwatch_events_total{sink=\"log\",kind=\"violation_started\"} 0.0\n"),
            "{text}"
        );
        assert!(
            !text.contains("sink=\"file\""),
            "no file sink configured: {text}"
        );
        assert!(
            !text.contains("dockwatch_events_webhook_queue_length"),
            "{text}"
        );
        assert!(
            text.contains(
                "dockwatch_enforcement_actions_total{action=\"pause\",result=\"failure\"} 0.0\n"
            ),
            "{text}"
        );

        hub.publish(ViolationEvent {
            action: Some("pause".into()),
            result: Some("failure".into()),
            ..event(EventKind::Enforcement, "a", 1.0)
        });
        let text = render(&hub);
        assert!(
            text.contains(
                "dockwatch_enforcement_actions_total{action=\"pause\",result=\"failure\"} 1.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "dockwatch_enforcement_actions_total{action=\"stop\",result=\"failure\"} 0.0\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn log_line_carries_every_field_in_json() {
        use std::io::Write;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let hub = EventHub::default();
        let e = ViolationEvent {
            action: Some("stop".into()),
            result: Some("success".into()),
            ..event(EventKind::Enforcement, "web", 2.5)
        };
        tracing::subscriber::with_default(subscriber, || hub.publish(e.clone()));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["target"], "dockwatch::events");
        assert_eq!(line["level"], "WARN");
        let expected = serde_json::to_value(&e).unwrap();
        assert_eq!(
            text.matches("\"timestamp\"").count(),
            1,
            "one timestamp key: {text}"
        );
        for (key, value) in expected.as_object().unwrap() {
            if key == "timestamp" {
                continue;
            }
            assert_eq!(&line[key], value, "field {key} in {text}");
        }
        assert_eq!(
            hub.inner
                .counters
                .get_delivered(Sink::Log, EventKind::Enforcement),
            1
        );
    }
}
