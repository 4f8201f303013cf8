//! How the windows leave the process: metric families on `/metrics` and the JSON document on
//! `GET /api/v1/windows`, which `dockwatch report` reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};

use super::recommend::Recommendation;
use super::window::Stats;
use super::{ContainerTrack, Detector, HostSignal, Severity, Signal, Track};
use crate::metrics::{Family, Kind, Label, container_labels, label};

fn lock(detector: &Mutex<Detector>) -> MutexGuard<'_, Detector> {
    detector.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exports z-scores, window statistics, anomaly counters and recommendations.
#[derive(Debug)]
pub struct AnomalyCollector {
    detector: Arc<Mutex<Detector>>,
}

impl AnomalyCollector {
    /// A collector over the shared detector.
    pub fn new(detector: Arc<Mutex<Detector>>) -> Self {
        Self { detector }
    }
}

/// Metric families for one scope (containers or host), named `{prefix}_…`.
struct Families<'a> {
    zscore: Family<'a>,
    stats: [Family<'a>; 7],
    anomalies: Family<'a>,
}

/// Statistic families in order, by name suffix and what the help says it is.
const STATISTICS: [(&str, &str); 7] = [
    ("mean", "Mean"),
    ("stddev", "Population standard deviation"),
    ("min", "Smallest value"),
    ("max", "Largest value"),
    (
        "p95",
        "95th percentile (linear interpolation between closest ranks)",
    ),
    (
        "p99",
        "99th percentile (linear interpolation between closest ranks)",
    ),
    ("samples", "Samples"),
];

fn stat_values(s: &Stats) -> [f64; 7] {
    [
        s.mean,
        s.stddev,
        s.min,
        s.max,
        s.p95,
        s.p99,
        s.samples as f64,
    ]
}

/// Help texts and names, built once per scrape because they quote the window length.
struct Texts {
    zscore_name: String,
    zscore_help: String,
    stat_names: Vec<String>,
    stat_helps: Vec<String>,
    anomalies_name: String,
    anomalies_help: String,
}

impl Texts {
    fn new(prefix: &str, what: &str, units: &str, d: &Detector) -> Self {
        let c = d.config();
        let window = format!(
            "rolling window of the last {} at the collection interval, at most {} samples",
            c.window_text(),
            c.capacity()
        );
        let stat_names = STATISTICS
            .iter()
            .map(|(suffix, _)| format!("{prefix}_anomaly_window_{suffix}"))
            .collect();
        let stat_helps = STATISTICS
            .iter()
            .map(|(suffix, label)| {
                if *suffix == "samples" {
                    format!("Samples in the {window} of {what}")
                } else {
                    format!("{label} of {what} over the {window}; {units}")
                }
            })
            .collect();
        Self {
            zscore_name: format!("{prefix}_anomaly_zscore"),
            zscore_help: format!(
                "Z-score of the latest sample of {what} against the samples before it in the {window}; 0 when they have no spread, absent until {} samples; {units}",
                c.min_samples
            ),
            stat_names,
            stat_helps,
            anomalies_name: format!("{prefix}_anomalies"),
            anomalies_help: format!(
                "Samples of {what} scoring above {} (medium) or above {} (high) standard deviations over the previous samples in the {window}; each sample counts once, under its highest severity",
                c.medium, c.high
            ),
        }
    }

    fn families(&self) -> Families<'_> {
        Families {
            zscore: Family::new(&self.zscore_name, &self.zscore_help, Kind::Gauge),
            stats: std::array::from_fn(|i| {
                Family::new(&self.stat_names[i], &self.stat_helps[i], Kind::Gauge)
            }),
            anomalies: Family::new(&self.anomalies_name, &self.anomalies_help, Kind::Counter),
        }
    }
}

impl<'a> Families<'a> {
    fn add(&mut self, base: Vec<Label<'a>>, signal: &'a str, track: &'a Track) {
        let mut labels = base;
        labels.push(label("signal", signal));
        if let Some(z) = track.zscore() {
            self.zscore.push(labels.clone(), z);
        }
        if let Some(s) = track.stats() {
            for (family, v) in self.stats.iter_mut().zip(stat_values(s)) {
                family.push(labels.clone(), v);
            }
        }
        for severity in Severity::ALL {
            let mut l = labels.clone();
            l.push(label("severity", severity.as_str()));
            self.anomalies.push(l, track.anomalies(severity) as f64);
        }
    }

    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        self.zscore.encode(enc)?;
        for f in &self.stats {
            f.encode(enc)?;
        }
        self.anomalies.encode(enc)
    }
}

const CONTAINER_UNITS: &str = "cpu in cores, memory (working set) in bytes, network_receive, network_transmit, blkio_read and blkio_write in bytes per second";
const HOST_UNITS: &str = "cpu as the busy ratio of all host CPUs (0-1), memory (used) in bytes";

impl Collector for AnomalyCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let d = lock(&self.detector);

        let texts = Texts::new("dockwatch", "a container signal", CONTAINER_UNITS, &d);
        let mut families = texts.families();
        let recommendation_help = format!(
            "1 when the tuning recommendation applies to the container over the rolling window of the last {}, else 0; absent until {} samples",
            d.config().window_text(),
            d.config().min_samples
        );
        let mut recommendations = Family::new(
            "dockwatch_recommendation",
            &recommendation_help,
            Kind::Gauge,
        );
        for c in d.containers() {
            let base = container_labels(&c.meta);
            for (signal, track) in Signal::ALL.iter().zip(&c.signals) {
                families.add(base.clone(), signal.as_str(), track);
            }
            if c.has_enough_samples(d.config()) {
                let applying = c.recommendations(d.config());
                for r in Recommendation::ALL {
                    let mut l = base.clone();
                    l.push(label("recommendation", r.as_str()));
                    recommendations.push(l, if applying.contains(&r) { 1.0 } else { 0.0 });
                }
            }
        }
        families.encode(&mut enc)?;
        recommendations.encode(&mut enc)?;

        let host_texts = Texts::new("dockwatch_host", "a host signal", HOST_UNITS, &d);
        let mut host = host_texts.families();
        if let Some(tracks) = d.host() {
            for (signal, track) in HostSignal::ALL.iter().zip(tracks) {
                host.add(Vec::new(), signal.as_str(), track);
            }
        }
        host.encode(&mut enc)
    }
}

/// The `GET /api/v1/windows` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowsDocument {
    /// `--anomaly.window` in seconds.
    pub window_seconds: f64,
    /// `--collect.interval` in seconds.
    pub interval_seconds: f64,
    /// Samples a window holds.
    pub capacity: usize,
    /// `--anomaly.min-samples`.
    pub min_samples: usize,
    /// `--anomaly.medium-threshold`.
    pub medium_threshold: f64,
    /// `--anomaly.high-threshold`.
    pub high_threshold: f64,
    /// One entry per container, sorted by name.
    pub containers: Vec<ContainerWindows>,
    /// Host windows, when the host collector runs (absent with `?container=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<BTreeMap<String, SignalWindow>>,
}

/// One container's windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerWindows {
    /// Short id, as on `/metrics`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Time of the oldest and newest sample; absent before the first sample.
    pub period: Option<Period>,
    /// Samples in the window.
    pub samples: usize,
    /// CPU limit in cores, if any.
    pub cpu_limit_cores: Option<f64>,
    /// Memory limit in bytes, if any.
    pub memory_limit_bytes: Option<f64>,
    /// Per signal; signals without a sample yet are left out.
    pub signals: BTreeMap<String, SignalWindow>,
    /// Anomaly counts.
    pub anomalies: AnomalyCounts,
    /// The recommendations that apply now.
    pub recommendations: Vec<RecommendationEntry>,
}

/// Time span a window covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// Oldest sample, RFC 3339 UTC.
    pub start: String,
    /// Newest sample, RFC 3339 UTC.
    pub end: String,
    /// Oldest sample, Unix seconds.
    pub start_unix: f64,
    /// Newest sample, Unix seconds.
    pub end_unix: f64,
}

impl Period {
    /// A period from Unix seconds.
    pub fn from_unix(start: f64, end: f64) -> Self {
        Self {
            start: rfc3339(start),
            end: rfc3339(end),
            start_unix: start,
            end_unix: end,
        }
    }
}

/// Formats Unix seconds as RFC 3339 UTC to the second.
pub fn rfc3339(t: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Statistics of one signal's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalWindow {
    /// `cores`, `bytes`, `bytes_per_second` or `ratio`.
    pub unit: String,
    /// Samples in the window.
    pub samples: usize,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Latest value, when the last cycle had one.
    pub current: Option<f64>,
    /// Z-score of the latest value against the samples before it.
    pub zscore: Option<f64>,
    /// Anomalies of this signal among the samples in the window.
    pub anomalies: SignalAnomalies,
}

/// Anomalies of one signal in its window, by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalAnomalies {
    /// Above the medium threshold, at most the high one.
    pub medium: u64,
    /// Above the high threshold.
    pub high: u64,
}

impl SignalWindow {
    fn new(unit: &str, track: &Track) -> Option<Self> {
        let s = track.stats()?;
        Some(Self {
            unit: unit.to_string(),
            samples: s.samples,
            mean: s.mean,
            stddev: s.stddev,
            min: s.min,
            max: s.max,
            p95: s.p95,
            p99: s.p99,
            current: track.current(),
            zscore: track.zscore(),
            anomalies: SignalAnomalies {
                medium: track.anomalies_in_window(Severity::Medium),
                high: track.anomalies_in_window(Severity::High),
            },
        })
    }
}

/// Anomaly counts of a container, all signals together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyCounts {
    /// Medium anomalies among the samples still in the windows.
    pub medium: u64,
    /// High anomalies among the samples still in the windows.
    pub high: u64,
    /// Medium anomalies since dockwatch first saw the container (the counter's value).
    pub medium_total: u64,
    /// High anomalies since dockwatch first saw the container (the counter's value).
    pub high_total: u64,
}

/// A recommendation with its advice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationEntry {
    /// The label value of `dockwatch_recommendation`.
    pub id: Recommendation,
    /// What to do.
    pub text: String,
}

impl From<Recommendation> for RecommendationEntry {
    fn from(r: Recommendation) -> Self {
        Self {
            id: r,
            text: r.text().to_string(),
        }
    }
}

fn container_windows(c: &ContainerTrack, d: &Detector) -> ContainerWindows {
    let memory = c.signal(Signal::Memory).window();
    let period = memory
        .first()
        .zip(memory.last())
        .map(|(a, b)| Period::from_unix(a.at, b.at));
    let signals = Signal::ALL
        .iter()
        .zip(&c.signals)
        .filter_map(|(s, t)| Some((s.as_str().to_string(), SignalWindow::new(s.unit(), t)?)))
        .collect();
    let inputs = c.inputs();
    ContainerWindows {
        id: c.meta.short_id().to_string(),
        name: c.meta.name.clone(),
        image: c.meta.image.clone(),
        period,
        samples: c.samples(),
        cpu_limit_cores: inputs.cpu_limit_cores,
        memory_limit_bytes: inputs.memory_limit_bytes,
        signals,
        anomalies: AnomalyCounts {
            medium: c.anomalies_in_window(Severity::Medium),
            high: c.anomalies_in_window(Severity::High),
            medium_total: c.anomalies(Severity::Medium),
            high_total: c.anomalies(Severity::High),
        },
        recommendations: c
            .recommendations(d.config())
            .into_iter()
            .map(Into::into)
            .collect(),
    }
}

/// Builds the document; `container` keeps only the container with that name or (short) id.
pub fn document(d: &Detector, container: Option<&str>) -> WindowsDocument {
    let c = d.config();
    let mut containers: Vec<ContainerWindows> = d
        .containers()
        .filter(|t| {
            container.is_none_or(|q| {
                t.meta.name == q || t.meta.id == q || (q.len() >= 4 && t.meta.id.starts_with(q))
            })
        })
        .map(|t| container_windows(t, d))
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let host = match (container, d.host()) {
        (None, Some(tracks)) => Some(
            HostSignal::ALL
                .iter()
                .zip(tracks)
                .filter_map(|(s, t)| {
                    Some((s.as_str().to_string(), SignalWindow::new(s.unit(), t)?))
                })
                .collect(),
        ),
        _ => None,
    };
    WindowsDocument {
        window_seconds: c.window.as_secs_f64(),
        interval_seconds: c.interval.as_secs_f64(),
        capacity: c.capacity(),
        min_samples: c.min_samples,
        medium_threshold: c.medium,
        high_threshold: c.high,
        containers,
        host,
    }
}

#[derive(Debug, Deserialize)]
struct WindowsQuery {
    container: Option<String>,
}

/// `GET /api/v1/windows[?container=NAME_OR_ID]`; 404 when the container is not tracked.
pub fn routes(detector: Arc<Mutex<Detector>>) -> Router {
    Router::new()
        .route("/api/v1/windows", get(windows))
        .with_state(detector)
}

async fn windows(
    State(detector): State<Arc<Mutex<Detector>>>,
    Query(q): Query<WindowsQuery>,
) -> Response {
    let container = q.container.filter(|c| !c.is_empty());
    let doc = document(&lock(&detector), container.as_deref());
    if let Some(name) = container
        && doc.containers.is_empty()
    {
        let error = format!("no container named or with id {name:?} is tracked");
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response();
    }
    Json(doc).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{meta, one, snapshot, usage};
    use super::super::{Anomaly, Config};
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::registry::Registry;
    use std::time::Duration;
    use tower_http::timeout::TimeoutLayer;

    fn fed() -> Anomaly {
        let a = Anomaly::new(Config {
            interval: Duration::from_secs(1),
            min_samples: 10,
            ..Config::default()
        });
        let web = meta(&"a".repeat(64), "web");
        for i in 0..12 {
            let at = 1_800_000_000.0 + f64::from(i);
            let cpu = match i {
                11 => 2.0,
                _ if i % 2 == 0 => 0.1,
                _ => 0.3,
            };
            a.observe(&snapshot(at, vec![one(&web, usage(at, cpu, 1 << 20))]));
        }
        a
    }

    #[test]
    fn metrics_carry_scores_statistics_and_counters() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(fed().collector()));
        let text = crate::metrics::render(&registry).unwrap();
        let l = r#"{id="aaaaaaaaaaaa",name="web",image="busybox:1",signal="cpu"}"#;
        // Window before the spike: eleven samples 0.1/0.3 (six 0.1): mean 0.19091, σ 0.099587.
        assert!(
            text.contains(&format!("dockwatch_anomaly_zscore{l} 18.")),
            "{text}"
        );
        assert!(
            text.contains(&format!("dockwatch_anomaly_window_samples{l} 12.0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("dockwatch_anomaly_window_max{l} 2.0\n")),
            "{text}"
        );
        assert!(text.contains(
            r#"dockwatch_anomalies_total{id="aaaaaaaaaaaa",name="web",image="busybox:1",signal="cpu",severity="high"} 1"#
        ));
        assert!(text.contains(
            r#"dockwatch_anomalies_total{id="aaaaaaaaaaaa",name="web",image="busybox:1",signal="memory",severity="medium"} 0"#
        ));
        assert!(text.contains(
            r#"dockwatch_recommendation{id="aaaaaaaaaaaa",name="web",image="busybox:1",recommendation="raise_cpu_limit"} 1"#
        ));
        assert!(text.contains(r#"dockwatch_host_anomaly_window_mean{signal="cpu"} 0.25"#));
        assert!(
            text.contains(r#"dockwatch_host_anomalies_total{signal="memory",severity="high"} 0"#)
        );
        assert!(text.contains("# HELP dockwatch_anomaly_window_p95 95th percentile (linear interpolation between closest ranks) of a container signal over the rolling window of the last 1h"));
        assert!(!text.contains("NaN") && !text.contains("Inf"));
    }

    #[tokio::test]
    async fn windows_endpoint_serves_json_and_404() {
        use tower::ServiceExt;
        let app = fed().routes().layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(5),
        ));
        let resp = app
            .clone()
            .oneshot(
                Request::get("/api/v1/windows?container=web")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let doc: WindowsDocument = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc.containers.len(), 1);
        let web = &doc.containers[0];
        assert_eq!(web.samples, 12);
        assert_eq!(
            web.anomalies,
            AnomalyCounts {
                medium: 0,
                high: 1,
                medium_total: 0,
                high_total: 1
            }
        );
        let cpu = &web.signals["cpu"];
        assert_eq!(cpu.unit, "cores");
        assert_eq!(cpu.current, Some(2.0));
        assert!(cpu.zscore.unwrap() > 18.0);
        assert_eq!(cpu.anomalies, SignalAnomalies { medium: 0, high: 1 });
        assert_eq!(web.signals["memory"].anomalies, SignalAnomalies::default());
        // Twelve samples: six 0.1, five 0.3, one 2.0. p95 rank 10.45 -> 0.3 + 0.45 * 1.7.
        assert!((cpu.p95 - 1.065).abs() < 1e-9, "{}", cpu.p95);
        assert_eq!(web.period.as_ref().unwrap().start, "2027-01-15T08:00:00Z");
        assert!(doc.host.is_none());

        let resp = app
            .oneshot(
                Request::get("/api/v1/windows?container=nope")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
