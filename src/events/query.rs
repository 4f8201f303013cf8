//! `GET /violations`: recent events from the ring buffer, newest first, with filters.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{EventHub, EventKind, Severity, ViolationEvent};

/// A parsed `/violations` query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this severity or worse.
    pub min_severity: Option<Severity>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Container name (exact) or id prefix.
    pub container: Option<String>,
    /// Policy name (exact).
    pub policy: Option<String>,
    /// Rule id (exact).
    pub rule: Option<String>,
    /// Only the start events of episodes still open.
    pub active: bool,
    /// Only events at or after this Unix time.
    pub since: Option<f64>,
    /// At most this many events.
    pub limit: Option<usize>,
}

/// A query parameter that could not be used; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query parameter {param:?}: {reason}")]
pub struct FilterError {
    /// The parameter.
    pub param: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Filter {
    /// Parses query pairs; unknown and repeated parameters are errors.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, FilterError> {
        let mut f = Filter::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            let err = |reason: String| FilterError {
                param: key.clone(),
                reason,
            };
            if seen.contains(&key.as_str()) {
                return Err(err("given more than once".into()));
            }
            seen.push(key);
            let non_empty = || {
                if value.is_empty() {
                    Err(err("must not be empty".into()))
                } else {
                    Ok(value.clone())
                }
            };
            let severity = || {
                Severity::parse(value).ok_or_else(|| {
                    err(format!(
                        "{value:?} is not a severity (LOW, MEDIUM, HIGH, CRITICAL)"
                    ))
                })
            };
            match key.as_str() {
                "severity" => f.severity = Some(severity()?),
                "min_severity" => f.min_severity = Some(severity()?),
                "kind" => {
                    f.kind = Some(EventKind::parse(value).ok_or_else(|| {
                        err(format!(
                            "{value:?} is not an event kind (violation_started, violation_ended, enforcement)"
                        ))
                    })?)
                }
                "container" => f.container = Some(non_empty()?),
                "policy" => f.policy = Some(non_empty()?),
                "rule" => f.rule = Some(non_empty()?),
                "active" => {
                    f.active = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(err(format!("{value:?} is not true or false"))),
                    }
                }
                "since" => f.since = Some(parse_since(value).map_err(err)?),
                "limit" => {
                    f.limit = match value.parse::<usize>() {
                        Ok(0) => return Err(err("must be at least 1".into())),
                        Ok(n) => Some(n),
                        Err(_) => return Err(err(format!("{value:?} is not a whole number"))),
                    }
                }
                _ => {
                    return Err(err(
                        "unknown; use severity, min_severity, kind, container, policy, rule, active, since or limit"
                            .into(),
                    ));
                }
            }
        }
        Ok(f)
    }

    /// Whether `e` passes every filter but `active` and `limit`.
    pub fn matches(&self, e: &ViolationEvent) -> bool {
        self.severity.is_none_or(|s| e.severity == s)
            && self.min_severity.is_none_or(|s| e.severity >= s)
            && self.kind.is_none_or(|k| e.kind == k)
            && self
                .container
                .as_deref()
                .is_none_or(|c| e.container == c || e.container_id.starts_with(c))
            && self.policy.as_deref().is_none_or(|p| e.policy == p)
            && self.rule.as_deref().is_none_or(|r| e.rule == r)
            && self.since.is_none_or(|t| e.timestamp >= t)
    }
}

/// Unix seconds, or RFC 3339 with `Z` or a numeric offset.
fn parse_since(value: &str) -> Result<f64, String> {
    let bad = || format!("{value:?} is neither RFC 3339 nor Unix seconds");
    if let Ok(secs) = value.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(secs)
        } else {
            Err(bad())
        };
    }
    if !value.is_ascii() || value.len() < 20 {
        return Err(bad());
    }
    // humantime reads UTC only: take a `+hh:mm`/`-hh:mm` offset off and apply it here.
    let (utc, offset) = match value.len().checked_sub(6).map(|i| value.split_at(i)) {
        Some((rest, off))
            if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' =>
        {
            let hours: f64 = off[1..3].parse().map_err(|_| bad())?;
            let minutes: f64 = off[4..6].parse().map_err(|_| bad())?;
            let sign = if off.starts_with('-') { -1.0 } else { 1.0 };
            (rest, sign * (hours * 3600.0 + minutes * 60.0))
        }
        _ if value.ends_with('Z') || value.ends_with('z') => (&value[..value.len() - 1], 0.0),
        _ => return Err(bad()),
    };
    let t = humantime::parse_rfc3339_weak(utc).map_err(|_| bad())?;
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_secs_f64();
    Ok(secs - offset)
}

#[derive(Serialize)]
struct Body<'a> {
    events: Vec<&'a ViolationEvent>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

pub(super) async fn violations(
    State(hub): State<EventHub>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    match Filter::parse(&pairs) {
        Ok(filter) => {
            let events = hub.query(&filter);
            Json(Body {
                events: events.iter().map(|e| &**e).collect(),
            })
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody {
                error: e.to_string(),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body as AxumBody;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::super::tests::event;
    use super::super::{EventsArgs, Mode};
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn ev(
        kind: EventKind,
        container: &str,
        ts: f64,
        severity: Severity,
        rule: &str,
    ) -> ViolationEvent {
        ViolationEvent {
            severity,
            rule: rule.into(),
            ..event(kind, container, ts)
        }
    }

    /// a: CRITICAL image_tag started at 10 and ended at 20; b: HIGH runtime_process started at
    /// 30 and still open; c (policy "dev"): LOW started at 40; an enforcement on b at 31.
    fn hub() -> EventHub {
        let hub = EventHub::default();
        hub.publish(ev(
            EventKind::ViolationStarted,
            "a",
            10.0,
            Severity::Critical,
            "image_tag",
        ));
        hub.publish(ev(
            EventKind::ViolationEnded,
            "a",
            20.0,
            Severity::Critical,
            "image_tag",
        ));
        hub.publish(ev(
            EventKind::ViolationStarted,
            "b",
            30.0,
            Severity::High,
            "runtime_process",
        ));
        hub.publish(ViolationEvent {
            action: Some("stop".into()),
            result: Some("dry_run".into()),
            ..ev(
                EventKind::Enforcement,
                "b",
                31.0,
                Severity::High,
                "runtime_process",
            )
        });
        hub.publish(ViolationEvent {
            policy: "dev".into(),
            mode: Mode::DryRun,
            ..ev(
                EventKind::ViolationStarted,
                "c",
                40.0,
                Severity::Low,
                "image_tag",
            )
        });
        hub
    }

    fn ts(hub: &EventHub, q: &str) -> Vec<f64> {
        let filter = Filter::parse(&pairs(q)).unwrap();
        hub.query(&filter).iter().map(|e| e.timestamp).collect()
    }

    #[test]
    fn every_filter() {
        let hub = hub();
        assert_eq!(ts(&hub, ""), vec![40.0, 31.0, 30.0, 20.0, 10.0]);
        assert_eq!(ts(&hub, "severity=HIGH"), vec![31.0, 30.0]);
        assert_eq!(ts(&hub, "severity=critical"), vec![20.0, 10.0]);
        assert_eq!(ts(&hub, "min_severity=HIGH"), vec![31.0, 30.0, 20.0, 10.0]);
        assert_eq!(ts(&hub, "kind=enforcement"), vec![31.0]);
        assert_eq!(ts(&hub, "container=b"), vec![31.0, 30.0]);
        // Ids in the fixture are the name repeated: "bbbb…".
        assert_eq!(ts(&hub, "container=bbbbbb"), vec![31.0, 30.0]);
        assert_eq!(ts(&hub, "container=zz"), Vec::<f64>::new());
        assert_eq!(ts(&hub, "policy=dev"), vec![40.0]);
        assert_eq!(ts(&hub, "rule=image_tag"), vec![40.0, 20.0, 10.0]);
        assert_eq!(ts(&hub, "active=true"), vec![40.0, 30.0]);
        assert_eq!(ts(&hub, "active=false"), vec![40.0, 31.0, 30.0, 20.0, 10.0]);
        assert_eq!(ts(&hub, "active=true&min_severity=HIGH"), vec![30.0]);
        assert_eq!(ts(&hub, "since=30"), vec![40.0, 31.0, 30.0]);
        assert_eq!(ts(&hub, "since=30.5"), vec![40.0, 31.0]);
        assert_eq!(
            ts(&hub, "since=1970-01-01T00:00:30Z"),
            vec![40.0, 31.0, 30.0]
        );
        assert_eq!(
            ts(&hub, "since=1970-01-01T01:00:31+01:00"),
            vec![40.0, 31.0]
        );
        assert_eq!(ts(&hub, "limit=2"), vec![40.0, 31.0]);
        assert_eq!(ts(&hub, "rule=image_tag&limit=1"), vec![40.0]);
    }

    #[test]
    fn parses_rfc3339_with_offsets() {
        assert_eq!(parse_since("1970-01-01T01:00:31+01:00"), Ok(31.0));
        assert_eq!(parse_since("1970-01-01T00:00:31-00:30"), Ok(31.0 + 1800.0));
        assert_eq!(parse_since("2026-12-03T13:00:00.5Z"), Ok(1_796_302_800.5));
        assert!(
            parse_since("2026-12-03T13:00:00").is_err(),
            "a zone is required"
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("-5").is_err());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let cases = [
            ("severity=urgent", "severity"),
            ("min_severity=", "min_severity"),
            ("kind=started", "kind"),
            ("container=", "container"),
            ("policy=", "policy"),
            ("rule=", "rule"),
            ("active=yes", "active"),
            ("since=last-week", "since"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("severity=LOW&severity=HIGH", "severity"),
            ("sevrity=HIGH", "sevrity"),
        ];
        for (q, param) in cases {
            let err = Filter::parse(&pairs(q)).unwrap_err();
            assert_eq!(err.param, param, "{q}");
        }
        let err = Filter::parse(&pairs("severity=urgent")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid query parameter \"severity\": \"urgent\" is not a severity (LOW, MEDIUM, HIGH, CRITICAL)"
        );
    }

    #[test]
    fn ring_buffer_keeps_the_newest_and_tracks_open_episodes_beyond_it() {
        let hub = EventHub::new(&EventsArgs {
            buffer_size: 3,
            ..Default::default()
        })
        .unwrap();
        hub.publish(event(EventKind::ViolationStarted, "old", 1.0));
        for i in 2..=6 {
            hub.publish(event(
                EventKind::ViolationStarted,
                &format!("c{i}"),
                f64::from(i),
            ));
            hub.publish(event(
                EventKind::ViolationEnded,
                &format!("c{i}"),
                f64::from(i) + 0.5,
            ));
        }
        let all: Vec<f64> = hub.recent_events().iter().map(|e| e.timestamp).collect();
        assert_eq!(all, vec![5.5, 6.0, 6.5]);
        // "old" fell out of the buffer but its episode is still open.
        assert_eq!(ts(&hub, "active=true"), vec![1.0]);
        let key = event(EventKind::ViolationStarted, "old", 1.0).episode_key();
        assert_eq!(hub.open_episode(&key).map(|e| e.timestamp), Some(1.0));
        hub.publish(event(EventKind::ViolationEnded, "old", 7.0));
        assert_eq!(ts(&hub, "active=true"), Vec::<f64>::new());
        assert!(hub.open_episode(&key).is_none());
    }

    async fn get(hub: &EventHub, uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = hub
            .routes()
            .oneshot(Request::get(uri).body(AxumBody::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn serves_json_newest_first_and_400_on_bad_input() {
        let hub = hub();
        let (status, body) = get(&hub, "/violations?container=b&limit=5").await;
        assert_eq!(status, StatusCode::OK);
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["kind"], "enforcement");
        assert_eq!(events[0]["action"], "stop");
        assert_eq!(events[0]["result"], "dry_run");
        assert_eq!(events[1]["kind"], "violation_started");
        assert_eq!(events[1]["severity"], "HIGH");
        assert!(events[1].get("action").is_none());

        let (status, body) = get(&hub, "/violations?since=soon").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"],
            "invalid query parameter \"since\": \"soon\" is neither RFC 3339 nor Unix seconds"
        );
    }
}
