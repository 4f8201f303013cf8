//! `dockwatch report`: a performance report per container, read either from a running
//! dockwatch's live windows (`/api/v1/windows`) or from Prometheus's history over the last
//! hours through its HTTP query API.
//!
//! Both paths fill the same [`ContainerReport`] and run the same recommendation rules, so a
//! report from Prometheus over a day reads like one from the live hour.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::export::{ContainerWindows, Period, RecommendationEntry, WindowsDocument};
use super::recommend::{self, Inputs};
use crate::cli::parse_duration;

/// Flags of `dockwatch report`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// Report on this container only (name, or id with the live source).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,

    /// A running dockwatch to read the live windows from.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9487")]
    pub url: String,

    /// Read history from this Prometheus server instead of a running dockwatch.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// Hours of Prometheus history to summarise (with --prometheus).
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub hours: u32,

    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub format: ReportFormat,

    /// Timeout of each HTTP request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The server could not be reached or the answer not read.
    #[error("requesting {url}: {cause}")]
    Http {
        /// What was requested.
        url: String,
        /// The cause (in the message, not a chained source).
        cause: Box<ureq::Error>,
    },
    /// The server answered with an error status.
    #[error("requesting {url}: status {status}: {body}")]
    Status {
        /// What was requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the answer.
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("decoding the answer of {url}: {cause}")]
    Decode {
        /// What was requested.
        url: String,
        /// The cause (in the message, not a chained source).
        cause: serde_json::Error,
    },
    /// Prometheus rejected a query.
    #[error("prometheus query {query:?} failed: {error}")]
    Query {
        /// The PromQL.
        query: String,
        /// Prometheus's error text.
        error: String,
    },
    /// The requested container has no data.
    #[error("no data for container {0:?}")]
    NoContainer(String),
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Where the figures came from, e.g. `dockwatch http://…` or `prometheus http://… (24h)`.
    pub source: String,
    /// One entry per container, sorted by name.
    pub containers: Vec<ContainerReport>,
}

/// Average, p95, peak and spread of one signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Mean.
    pub average: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Standard deviation.
    pub stddev: Option<f64>,
}

/// Anomalies in the reported period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Anomalies {
    /// Medium and high together.
    pub total: u64,
    /// Above the medium threshold.
    pub medium: u64,
    /// Above the high threshold.
    pub high: u64,
}

/// The report of one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerReport {
    /// Name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// Image reference.
    pub image: String,
    /// The Prometheus `instance` label (which dockwatch), when read from Prometheus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Time covered.
    pub period: Option<Period>,
    /// Samples (live windows) or scraped points (Prometheus) in the period.
    pub samples: u64,
    /// CPU in percent of one core, as `docker stats` shows it.
    pub cpu_percent: Summary,
    /// Memory working set in bytes.
    pub memory_bytes: Summary,
    /// CPU limit in cores, if any.
    pub cpu_limit_cores: Option<f64>,
    /// Memory limit in bytes, if any.
    pub memory_limit_bytes: Option<f64>,
    /// Anomalies in the period.
    pub anomalies: Anomalies,
    /// Recommendations that apply, numbered in the text output.
    pub recommendations: Vec<RecommendationEntry>,
}

impl ContainerReport {
    fn inputs(&self) -> Inputs {
        let cores = |p: Option<f64>| p.map(|v| v / 100.0);
        Inputs {
            cpu_p95_cores: cores(self.cpu_percent.p95),
            cpu_stddev_cores: cores(self.cpu_percent.stddev),
            cpu_limit_cores: self.cpu_limit_cores,
            memory_p95_bytes: self.memory_bytes.p95,
            memory_max_bytes: self.memory_bytes.max,
            memory_limit_bytes: self.memory_limit_bytes,
            anomalies: self.anomalies.total,
        }
    }

    fn from_windows(c: &ContainerWindows) -> Self {
        let summary = |signal: &str, scale: f64| {
            c.signals
                .get(signal)
                .map_or(Summary::default(), |s| Summary {
                    average: Some(s.mean * scale),
                    p95: Some(s.p95 * scale),
                    max: Some(s.max * scale),
                    stddev: Some(s.stddev * scale),
                })
        };
        Self {
            name: c.name.clone(),
            id: c.id.clone(),
            image: c.image.clone(),
            instance: None,
            period: c.period.clone(),
            samples: c.samples as u64,
            cpu_percent: summary("cpu", 100.0),
            memory_bytes: summary("memory", 1.0),
            cpu_limit_cores: c.cpu_limit_cores,
            memory_limit_bytes: c.memory_limit_bytes,
            anomalies: Anomalies {
                total: c.anomalies.medium + c.anomalies.high,
                medium: c.anomalies.medium,
                high: c.anomalies.high,
            },
            // dockwatch already evaluated them, and holds back until enough samples.
            recommendations: c.recommendations.clone(),
        }
    }
}

/// Builds the report `args` ask for.
pub fn build(args: &ReportArgs) -> Result<Report, ReportError> {
    let agent = agent(args.timeout);
    match &args.prometheus {
        Some(prometheus) => from_prometheus(&agent, prometheus, args, unix_now()),
        None => from_dockwatch(&agent, &args.url, args.container.as_deref()),
    }
}

/// Builds and renders the report in the requested format.
pub fn run(args: &ReportArgs) -> Result<String, ReportError> {
    let report = build(args)?;
    Ok(match args.format {
        ReportFormat::Text => render_text(&report),
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
            s.push('\n');
            s
        }
    })
}

/// An HTTP client that hands error statuses back as answers, so Prometheus's error text
/// (sent with a 4xx status) can be shown.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn get_json<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    url: &str,
    query: &[(&str, &str)],
) -> Result<(u16, Result<T, serde_json::Error>, String), ReportError> {
    let http = |cause| ReportError::Http {
        url: url.to_string(),
        cause: Box::new(cause),
    };
    let mut request = agent.get(url);
    for (k, v) in query {
        request = request.query(*k, *v);
    }
    let mut resp = request.call().map_err(http)?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(http)?;
    Ok((status, serde_json::from_str(&body), body))
}

fn from_dockwatch(
    agent: &ureq::Agent,
    base: &str,
    container: Option<&str>,
) -> Result<Report, ReportError> {
    let url = format!("{}/api/v1/windows", base.trim_end_matches('/'));
    let query: Vec<(&str, &str)> = container.map(|c| ("container", c)).into_iter().collect();
    let (status, doc, body) = get_json::<WindowsDocument>(agent, &url, &query)?;
    if status == 404
        && let Some(c) = container
    {
        return Err(ReportError::NoContainer(c.to_string()));
    }
    if !(200..300).contains(&status) {
        return Err(ReportError::Status {
            url,
            status,
            body: body.chars().take(200).collect(),
        });
    }
    let doc = doc.map_err(|cause| ReportError::Decode { url, cause })?;
    Ok(Report {
        source: format!(
            "live windows of dockwatch at {base} (last {}, at most {} samples)",
            humantime::format_duration(Duration::from_secs_f64(doc.window_seconds.max(0.0))),
            doc.capacity
        ),
        containers: doc
            .containers
            .iter()
            .map(ContainerReport::from_windows)
            .collect(),
    })
}

/// The part of a Prometheus instant-query answer the report reads.
#[derive(Debug, Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    #[serde(default)]
    result: Vec<VectorSample>,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// The labels of one series in a query answer.
type Labels = BTreeMap<String, String>;

/// Runs one instant query and returns `(labels, value)` pairs with finite values.
fn instant(
    agent: &ureq::Agent,
    base: &str,
    query: &str,
    at: f64,
) -> Result<Vec<(Labels, f64)>, ReportError> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let time = format!("{at:.3}");
    let (status, parsed, body) =
        get_json::<QueryResponse>(agent, &url, &[("query", query), ("time", &time)])?;
    let parsed = match parsed {
        Ok(p) => p,
        Err(source) if (200..300).contains(&status) => {
            return Err(ReportError::Decode { url, cause: source });
        }
        Err(_) => {
            return Err(ReportError::Status {
                url,
                status,
                body: body.chars().take(200).collect(),
            });
        }
    };
    if parsed.status != "success" {
        return Err(ReportError::Query {
            query: query.to_string(),
            error: parsed.error.unwrap_or_else(|| format!("status {status}")),
        });
    }
    Ok(parsed
        .data
        .map(|d| d.result)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            let v: f64 = s.value.1.parse().ok()?;
            v.is_finite().then_some((s.metric, v))
        })
        .collect())
}

/// The labels that tell containers apart: everything but the metric name and severity.
fn series_key(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__" && k.as_str() != "severity")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn from_prometheus(
    agent: &ureq::Agent,
    base: &str,
    args: &ReportArgs,
    now: f64,
) -> Result<Report, ReportError> {
    let selector = match &args.container {
        Some(name) => format!("{{name=\"{}\"}}", escape_label_value(name)),
        None => String::new(),
    };
    let range = format!("[{}h]", args.hours);
    let cpu = format!("dockwatch_container_cpu_usage_ratio{selector}{range}");
    let memory = format!("dockwatch_container_memory_working_set_bytes{selector}{range}");

    // Every container with a memory reading in the range gets an entry.
    let mut reports: BTreeMap<BTreeMap<String, String>, ContainerReport> = BTreeMap::new();
    let start = now - f64::from(args.hours) * 3600.0;
    for (labels, n) in instant(agent, base, &format!("count_over_time({memory})"), now)? {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        reports.insert(
            series_key(&labels),
            ContainerReport {
                name: get("name"),
                id: get("id"),
                image: get("image"),
                instance: labels.get("instance").cloned(),
                period: Some(Period::from_unix(start, now)),
                samples: n.round() as u64,
                cpu_percent: Summary::default(),
                memory_bytes: Summary::default(),
                cpu_limit_cores: None,
                memory_limit_bytes: None,
                anomalies: Anomalies::default(),
                recommendations: Vec::new(),
            },
        );
    }
    if reports.is_empty()
        && let Some(name) = &args.container
    {
        return Err(ReportError::NoContainer(name.clone()));
    }

    type Setter = fn(&mut ContainerReport, f64);
    let queries: [(String, Setter); 10] = [
        (format!("avg_over_time({cpu})"), |r, v| {
            r.cpu_percent.average = Some(v * 100.0)
        }),
        (format!("quantile_over_time(0.95, {cpu})"), |r, v| {
            r.cpu_percent.p95 = Some(v * 100.0)
        }),
        (format!("max_over_time({cpu})"), |r, v| {
            r.cpu_percent.max = Some(v * 100.0)
        }),
        (format!("stddev_over_time({cpu})"), |r, v| {
            r.cpu_percent.stddev = Some(v * 100.0)
        }),
        (format!("avg_over_time({memory})"), |r, v| {
            r.memory_bytes.average = Some(v)
        }),
        (format!("quantile_over_time(0.95, {memory})"), |r, v| {
            r.memory_bytes.p95 = Some(v)
        }),
        (format!("max_over_time({memory})"), |r, v| {
            r.memory_bytes.max = Some(v)
        }),
        (format!("stddev_over_time({memory})"), |r, v| {
            r.memory_bytes.stddev = Some(v)
        }),
        (
            format!("max_over_time(dockwatch_container_spec_cpus{selector}{range})"),
            |r, v| r.cpu_limit_cores = Some(v),
        ),
        (
            format!("max_over_time(dockwatch_container_memory_limit_bytes{selector}{range})"),
            |r, v| r.memory_limit_bytes = Some(v),
        ),
    ];
    for (query, set) in &queries {
        for (labels, v) in instant(agent, base, query, now)? {
            if let Some(r) = reports.get_mut(&series_key(&labels)) {
                set(r, v);
            }
        }
    }
    let anomalies =
        format!("sum without (signal) (increase(dockwatch_anomalies_total{selector}{range}))");
    for (labels, v) in instant(agent, base, &anomalies, now)? {
        if let Some(r) = reports.get_mut(&series_key(&labels)) {
            let n = v.max(0.0).round() as u64;
            match labels.get("severity").map(String::as_str) {
                Some("medium") => r.anomalies.medium += n,
                Some("high") => r.anomalies.high += n,
                _ => continue,
            }
            r.anomalies.total += n;
        }
    }

    let mut containers: Vec<ContainerReport> = reports.into_values().collect();
    for r in &mut containers {
        r.recommendations = recommend::evaluate(&r.inputs())
            .into_iter()
            .map(Into::into)
            .collect();
    }
    containers.sort_by(|a, b| (&a.name, &a.instance).cmp(&(&b.name, &b.instance)));
    Ok(Report {
        source: format!("prometheus at {base} over the last {}h", args.hours),
        containers,
    })
}

/// Bytes in binary units with one decimal, e.g. `120.5 MiB`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn or_dash(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

/// The text report: one block per container.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "dockwatch performance report: {}", report.source);
    if report.containers.is_empty() {
        let _ = writeln!(out, "\nNo containers.");
    }
    for c in &report.containers {
        let _ = writeln!(out);
        let _ = write!(out, "Container {} (id {}, image {}", c.name, c.id, c.image);
        if let Some(instance) = &c.instance {
            let _ = write!(out, ", instance {instance}");
        }
        let _ = writeln!(out, ")");
        let period = c
            .period
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| format!("{} to {}", p.start, p.end));
        let _ = writeln!(out, "  Period:     {period} ({} samples)", c.samples);
        let pct = |v: f64| format!("{v:.1}%");
        let cpu = &c.cpu_percent;
        let _ = write!(
            out,
            "  CPU:        average {}  p95 {}  max {}  std dev {}",
            or_dash(cpu.average, pct),
            or_dash(cpu.p95, pct),
            or_dash(cpu.max, pct),
            or_dash(cpu.stddev, pct),
        );
        match c.cpu_limit_cores {
            Some(l) => {
                let _ = writeln!(out, "  (100% = one core; limit {l:.2} cores)");
            }
            None => {
                let _ = writeln!(out, "  (100% = one core; no limit)");
            }
        }
        let m = &c.memory_bytes;
        let _ = write!(
            out,
            "  Memory:     average {}  p95 {}  max {}  std dev {}",
            or_dash(m.average, human_bytes),
            or_dash(m.p95, human_bytes),
            or_dash(m.max, human_bytes),
            or_dash(m.stddev, human_bytes),
        );
        match c.memory_limit_bytes {
            Some(l) => {
                let _ = writeln!(out, "  (limit {})", human_bytes(l));
            }
            None => {
                let _ = writeln!(out, "  (no limit)");
            }
        }
        let a = &c.anomalies;
        let _ = writeln!(
            out,
            "  Anomalies:  {} ({} medium, {} high)",
            a.total, a.medium, a.high
        );
        if c.recommendations.is_empty() {
            let _ = writeln!(out, "  Recommendations: none");
        } else {
            let _ = writeln!(out, "  Recommendations:");
            for (i, r) in c.recommendations.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "    {}. {} [{}]",
                    i + 1,
                    capitalize(&r.text),
                    r.id.as_str()
                );
            }
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::recommend::Recommendation;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// Answers in the shape of Prometheus's instant-query API (`/api/v1/query`), keyed by the
    /// start of the query; one NaN series shows that non-finite values are skipped.
    fn recorded(query: &str) -> String {
        const WEB: &str = r#""id":"3f2a9c1b7d10","image":"nginx:1.25","instance":"node1:9487","job":"dockwatch","name":"web""#;
        const DB: &str = r#""id":"8b1e22c0a4f3","image":"postgres:16","instance":"node1:9487","job":"dockwatch","name":"db""#;
        let vector = |series: &[(&str, &str)]| {
            let mut result: Vec<String> = series
                .iter()
                .map(|(labels, v)| {
                    format!(r#"{{"metric":{{{labels}}},"value":[1796302094.5,"{v}"]}}"#)
                })
                .collect();
            result.push(r#"{"metric":{"name":"ignored-nan"},"value":[1796302094.5,"NaN"]}"#.into());
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                result.join(",")
            )
        };
        let web_sev = |sev: &str| format!(r#"{WEB},"severity":"{sev}""#);
        let db_high = format!(r#"{DB},"severity":"high""#);
        let table: Vec<(&str, String)> = vec![
            (
                "count_over_time(dockwatch_container_memory",
                vector(&[(WEB, "5760"), (DB, "5755")]),
            ),
            (
                "avg_over_time(dockwatch_container_cpu",
                vector(&[(WEB, "0.41"), (DB, "0.05")]),
            ),
            (
                "quantile_over_time(0.95, dockwatch_container_cpu",
                vector(&[(WEB, "0.47"), (DB, "0.12")]),
            ),
            (
                "max_over_time(dockwatch_container_cpu",
                vector(&[(WEB, "0.5"), (DB, "0.9")]),
            ),
            (
                "stddev_over_time(dockwatch_container_cpu",
                vector(&[(WEB, "0.08"), (DB, "0.25")]),
            ),
            (
                "avg_over_time(dockwatch_container_memory",
                vector(&[(WEB, "104857600"), (DB, "900000000")]),
            ),
            (
                "quantile_over_time(0.95, dockwatch_container_memory",
                vector(&[(WEB, "115343360"), (DB, "950000000")]),
            ),
            (
                "max_over_time(dockwatch_container_memory_working",
                vector(&[(WEB, "125829120"), (DB, "1010000000")]),
            ),
            (
                "stddev_over_time(dockwatch_container_memory",
                vector(&[(WEB, "5242880"), (DB, "1000000")]),
            ),
            (
                "max_over_time(dockwatch_container_spec_cpus",
                vector(&[(WEB, "0.5")]),
            ),
            (
                "max_over_time(dockwatch_container_memory_limit",
                vector(&[(DB, "1073741824")]),
            ),
            (
                "sum without (signal) (increase(dockwatch_anomalies_total",
                vector(&[
                    (&web_sev("medium"), "2.0004"),
                    (&web_sev("high"), "1"),
                    (&db_high, "11.98"),
                ]),
            ),
        ];
        table
            .into_iter()
            .find(|(prefix, _)| query.starts_with(prefix))
            .map_or_else(
                || r#"{"status":"error","errorType":"bad_data","error":"unexpected query"}"#.into(),
                |(_, body)| body,
            )
    }

    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    /// A one-thread HTTP server answering `/api/v1/query` from [`recorded`]; returns its
    /// base URL and the queries it saw.
    fn fake_prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                }
                let target = request_line.split(' ').nth(1).unwrap_or("");
                let query = target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("query="))
                    .map(decode)
                    .unwrap_or_default();
                let body = recorded(&query);
                let status = if body.contains("\"error\"") {
                    "400 Bad Request"
                } else {
                    "200 OK"
                };
                log.lock().unwrap().push(query);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (base, seen)
    }

    fn args(prometheus: &str, container: Option<&str>) -> ReportArgs {
        ReportArgs {
            container: container.map(String::from),
            url: String::new(),
            prometheus: Some(prometheus.to_string()),
            hours: 6,
            format: ReportFormat::Text,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn report_from_prometheus_history() {
        let (base, seen) = fake_prometheus();
        let agent = agent(Duration::from_secs(5));
        let report = from_prometheus(&agent, &base, &args(&base, None), 1_796_302_094.5).unwrap();
        let queries = seen.lock().unwrap().clone();
        assert_eq!(queries.len(), 12, "{queries:#?}");
        assert!(queries.contains(
            &"quantile_over_time(0.95, dockwatch_container_cpu_usage_ratio[6h])".to_string()
        ));
        assert!(queries.contains(
            &"sum without (signal) (increase(dockwatch_anomalies_total[6h]))".to_string()
        ));

        let names: Vec<&str> = report.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = &report.containers[1];
        assert_eq!(web.samples, 5760);
        assert_eq!(web.instance.as_deref(), Some("node1:9487"));
        assert_eq!(web.cpu_percent.average, Some(41.0));
        assert_eq!(web.cpu_percent.p95, Some(47.0));
        assert_eq!(web.cpu_limit_cores, Some(0.5));
        assert_eq!(web.memory_bytes.max, Some(125_829_120.0));
        assert_eq!(
            web.anomalies,
            Anomalies {
                total: 3,
                medium: 2,
                high: 1
            }
        );
        // p95 0.47 of a 0.5-core limit is 94 %.
        let ids: Vec<Recommendation> = web.recommendations.iter().map(|r| r.id).collect();
        assert_eq!(ids, [Recommendation::RaiseCpuLimit]);
        let p = web.period.as_ref().unwrap();
        assert_eq!(p.end_unix - p.start_unix, 6.0 * 3600.0);

        let db = &report.containers[0];
        // No CPU limit: p95 0.12 cores is under 80 % of a core; σ 0.25 cores is over 0.2.
        // Memory p95 950 MB is over 85 % of 1 GiB (912.7 MB); max 1010 MB is under 95 %
        // (1020.1 MB), so no OOM risk; 12 anomalies are more than 10.
        let ids: Vec<Recommendation> = db.recommendations.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [
                Recommendation::InvestigateCpuPattern,
                Recommendation::RaiseMemoryLimit,
                Recommendation::ReviewApplication
            ]
        );
        assert_eq!(db.anomalies.total, 12);

        let text = render_text(&report);
        assert!(
            text.contains("Container web (id 3f2a9c1b7d10, image nginx:1.25, instance node1:9487)"),
            "{text}"
        );
        assert!(text.contains("CPU:        average 41.0%  p95 47.0%  max 50.0%  std dev 8.0%  (100% = one core; limit 0.50 cores)"), "{text}");
        assert!(text.contains("Memory:     average 100.0 MiB  p95 110.0 MiB  max 120.0 MiB  std dev 5.0 MiB  (no limit)"), "{text}");
        assert!(
            text.contains("    1. CPU use sits near its ceiling most of the time"),
            "{text}"
        );
    }

    #[test]
    fn container_selector_and_missing_container() {
        let (base, seen) = fake_prometheus();
        let agent = agent(Duration::from_secs(5));
        let report = from_prometheus(&agent, &base, &args(&base, Some("web")), 1e9).unwrap();
        assert!(seen.lock().unwrap()[0].contains(r#"{name="web"}[6h]"#));
        // The fake ignores the selector; the report keeps what Prometheus returned.
        assert_eq!(report.containers.len(), 2);

        let err = instant(&agent, &base, "up", 1e9).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"prometheus query "up" failed: unexpected query"#
        );
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(1_073_741_824.0), "1.0 GiB");
    }
}
