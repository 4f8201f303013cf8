//! Live anomaly scoring: a rolling window per container and signal, the z-score of each new
//! sample against the samples before it, anomaly counters, and tuning recommendations.
//!
//! Only scheduled snapshots are read, so samples are evenly spaced at the collection interval
//! and an event-triggered cycle never shortens one. Each window is a fixed-capacity ring
//! ([`window::Window`]): memory per container is bounded by `--anomaly.max-samples` whatever
//! `--anomaly.window` says, and a container's windows are dropped with the container.
//!
//! The z-score of a sample is computed against the window as it was *before* that sample is
//! added, so a spike does not widen the deviation it is measured with. Only departures above
//! the mean count as anomalies (a CPU or memory drop is rarely a problem); each anomalous
//! sample counts once, under the highest severity it reaches.

pub mod export;
pub mod recommend;
pub mod report;
pub mod window;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::cli::parse_duration;
use crate::model::{ContainerMeta, ContainerUsage, Snapshot};
use recommend::{Inputs, Recommendation};
use window::{Point, Stats, Window};

/// Flags of anomaly scoring, flattened into the exporter's flags.
#[derive(Debug, Args, Clone)]
pub struct AnomalyArgs {
    /// How far back each rolling window reaches.
    #[arg(long = "anomaly.window", value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub window: Duration,

    /// Most samples a window keeps, whatever its length (bounds memory per container).
    #[arg(long = "anomaly.max-samples", value_name = "N", default_value_t = 1000)]
    pub max_samples: usize,

    /// Samples a window needs before z-scores are published and anomalies counted.
    #[arg(long = "anomaly.min-samples", value_name = "N", default_value_t = 10)]
    pub min_samples: usize,

    /// Z-score above which a sample counts as a medium anomaly.
    #[arg(
        long = "anomaly.medium-threshold",
        value_name = "SIGMA",
        default_value_t = 2.0
    )]
    pub medium_threshold: f64,

    /// Z-score above which a sample counts as a high anomaly.
    #[arg(
        long = "anomaly.high-threshold",
        value_name = "SIGMA",
        default_value_t = 3.0
    )]
    pub high_threshold: f64,
}

impl AnomalyArgs {
    /// Checks the flags against each other and the collection interval.
    pub fn config(&self, interval: Duration) -> Result<Config, ConfigError> {
        let config = Config {
            window: self.window,
            interval,
            max_samples: self.max_samples,
            min_samples: self.min_samples,
            medium: self.medium_threshold,
            high: self.high_threshold,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Bad anomaly flags.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A threshold is not a positive number or medium exceeds high.
    #[error(
        "invalid anomaly thresholds: medium {medium:?} and high {high:?} must be finite, positive and medium <= high"
    )]
    Thresholds {
        /// `--anomaly.medium-threshold`.
        medium: f64,
        /// `--anomaly.high-threshold`.
        high: f64,
    },
    /// The window can never hold `--anomaly.min-samples`.
    #[error(
        "--anomaly.min-samples {min} must be at least 2 and at most the {capacity} samples a window holds (--anomaly.window over --collect.interval, capped by --anomaly.max-samples)"
    )]
    MinSamples {
        /// `--anomaly.min-samples`.
        min: usize,
        /// Samples a window holds.
        capacity: usize,
    },
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Window length.
    pub window: Duration,
    /// Collection interval (one sample per interval).
    pub interval: Duration,
    /// Cap on samples per window.
    pub max_samples: usize,
    /// Samples needed before scoring.
    pub min_samples: usize,
    /// Medium threshold, in standard deviations.
    pub medium: f64,
    /// High threshold, in standard deviations.
    pub high: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            interval: Duration::from_secs(15),
            max_samples: 1000,
            min_samples: 10,
            medium: 2.0,
            high: 3.0,
        }
    }
}

impl Config {
    /// Samples a window holds: the window length at the collection interval, capped.
    pub fn capacity(&self) -> usize {
        let per_window = (self.window.as_secs_f64() / self.interval.as_secs_f64().max(1e-3)).ceil();
        (per_window as usize).clamp(1, self.max_samples.max(1))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ok = |t: f64| t.is_finite() && t > 0.0;
        if !ok(self.medium) || !ok(self.high) || self.medium > self.high {
            return Err(ConfigError::Thresholds {
                medium: self.medium,
                high: self.high,
            });
        }
        let capacity = self.capacity();
        if self.min_samples < 2 || self.min_samples > capacity {
            return Err(ConfigError::MinSamples {
                min: self.min_samples,
                capacity,
            });
        }
        Ok(())
    }

    /// The severity of a z-score, if it is an anomaly at all.
    pub fn classify(&self, z: f64) -> Option<Severity> {
        if z > self.high {
            Some(Severity::High)
        } else if z > self.medium {
            Some(Severity::Medium)
        } else {
            None
        }
    }

    /// The window length for help texts, e.g. `1h`.
    pub fn window_text(&self) -> String {
        humantime::format_duration(self.window).to_string()
    }
}

/// How far above the mean an anomalous sample was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Above the medium threshold, at most the high one.
    Medium,
    /// Above the high threshold.
    High,
}

impl Severity {
    /// Both severities, in export order.
    pub const ALL: [Severity; 2] = [Self::Medium, Self::High];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A per-container series scored for anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// CPU in cores (`usage.rates.cpu_cores`).
    Cpu,
    /// Memory working set in bytes.
    Memory,
    /// Bytes per second received.
    NetworkReceive,
    /// Bytes per second sent.
    NetworkTransmit,
    /// Bytes per second read from block devices.
    BlkioRead,
    /// Bytes per second written to block devices.
    BlkioWrite,
}

impl Signal {
    /// Every container signal, in export order.
    pub const ALL: [Signal; 6] = [
        Self::Cpu,
        Self::Memory,
        Self::NetworkReceive,
        Self::NetworkTransmit,
        Self::BlkioRead,
        Self::BlkioWrite,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::NetworkReceive => "network_receive",
            Self::NetworkTransmit => "network_transmit",
            Self::BlkioRead => "blkio_read",
            Self::BlkioWrite => "blkio_write",
        }
    }

    /// The unit of the signal's values.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "cores",
            Self::Memory => "bytes",
            _ => "bytes_per_second",
        }
    }

    /// This signal's value in a usage sample; rates are absent on a container's first sample.
    pub fn value(self, u: &ContainerUsage) -> Option<f64> {
        match self {
            Self::Cpu => u.rates.cpu_cores,
            Self::Memory => Some(u.memory.working_set_bytes as f64),
            Self::NetworkReceive => u.rates.net_rx_bytes_per_second,
            Self::NetworkTransmit => u.rates.net_tx_bytes_per_second,
            Self::BlkioRead => u.rates.blkio_read_bytes_per_second,
            Self::BlkioWrite => u.rates.blkio_write_bytes_per_second,
        }
    }
}

/// A host series scored for anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostSignal {
    /// Busy fraction of all host CPUs, 0–1.
    Cpu,
    /// Host memory in use, bytes.
    Memory,
}

impl HostSignal {
    /// Both host signals, in export order.
    pub const ALL: [HostSignal; 2] = [Self::Cpu, Self::Memory];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        }
    }

    /// The unit of the signal's values.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "ratio",
            Self::Memory => "bytes",
        }
    }
}

/// One signal's window, latest score and anomaly counts.
#[derive(Debug, Clone)]
pub struct Track {
    window: Window,
    current: Option<f64>,
    zscore: Option<f64>,
    anomalies: [u64; 2],
    stats: Option<Stats>,
}

impl Track {
    /// An empty track for `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            window: Window::new(config.capacity(), config.window.as_secs_f64()),
            current: None,
            zscore: None,
            anomalies: [0; 2],
            stats: None,
        }
    }

    /// Takes one scheduled sample taken at `at`; `value` is `None` when the signal has no
    /// reading this cycle. Returns the severity when the sample is an anomaly.
    pub fn observe(&mut self, config: &Config, at: f64, value: Option<f64>) -> Option<Severity> {
        self.window.evict(at);
        let mut severity = None;
        self.zscore = None;
        self.current = value.filter(|v| v.is_finite());
        if let Some(v) = self.current {
            let before = self
                .window
                .moments()
                .filter(|m| m.samples >= config.min_samples);
            if let Some(m) = before {
                let z = window::zscore(v, &m);
                self.zscore = Some(z);
                severity = config.classify(z);
            }
            if let Some(s) = severity {
                self.anomalies[s as usize] += 1;
            }
            self.window.push(Point {
                at,
                value: v,
                severity,
            });
        }
        self.stats = self.window.stats();
        severity
    }

    /// Statistics of the window including the latest sample.
    pub fn stats(&self) -> Option<&Stats> {
        self.stats.as_ref()
    }

    /// Z-score of the latest sample; `None` until the window had `min_samples` before it,
    /// and when this cycle had no reading.
    pub fn zscore(&self) -> Option<f64> {
        self.zscore
    }

    /// The latest value, when this cycle had one.
    pub fn current(&self) -> Option<f64> {
        self.current
    }

    /// Anomalies counted at `severity` since the track started.
    pub fn anomalies(&self, severity: Severity) -> u64 {
        self.anomalies[severity as usize]
    }

    /// Anomalous samples still in the window at `severity`.
    pub fn anomalies_in_window(&self, severity: Severity) -> u64 {
        self.window.anomalies()[severity as usize]
    }

    /// The window itself.
    pub fn window(&self) -> &Window {
        &self.window
    }
}

/// A container's tracks.
#[derive(Debug, Clone)]
pub struct ContainerTrack {
    /// Latest metadata.
    pub meta: Arc<ContainerMeta>,
    /// One track per [`Signal::ALL`] entry.
    pub signals: [Track; 6],
    /// Memory limit seen on the latest sample, bytes.
    pub memory_limit_bytes: Option<u64>,
}

impl ContainerTrack {
    /// The track of `signal`.
    pub fn signal(&self, signal: Signal) -> &Track {
        &self.signals[signal as usize]
    }

    /// Samples taken so far: the memory window, which has a reading on every sample.
    pub fn samples(&self) -> usize {
        self.signal(Signal::Memory).window().len()
    }

    /// Anomalous samples of any signal still in the windows at `severity`.
    pub fn anomalies_in_window(&self, severity: Severity) -> u64 {
        self.signals
            .iter()
            .map(|t| t.anomalies_in_window(severity))
            .sum()
    }

    /// Anomalies of any signal counted at `severity` since the container was first seen.
    pub fn anomalies(&self, severity: Severity) -> u64 {
        self.signals.iter().map(|t| t.anomalies(severity)).sum()
    }

    /// The figures recommendations read.
    pub fn inputs(&self) -> Inputs {
        let cpu = self.signal(Signal::Cpu).stats();
        let memory = self.signal(Signal::Memory).stats();
        Inputs {
            cpu_p95_cores: cpu.map(|s| s.p95),
            cpu_stddev_cores: cpu.map(|s| s.stddev),
            cpu_limit_cores: self.meta.cpu_limit_cores,
            memory_p95_bytes: memory.map(|s| s.p95),
            memory_max_bytes: memory.map(|s| s.max),
            memory_limit_bytes: self
                .memory_limit_bytes
                .or(self.meta.memory_limit_bytes)
                .map(|b| b as f64),
            anomalies: Severity::ALL
                .into_iter()
                .map(|s| self.anomalies_in_window(s))
                .sum(),
        }
    }

    /// Whether enough samples were seen for recommendations to mean anything.
    pub fn has_enough_samples(&self, config: &Config) -> bool {
        self.samples() >= config.min_samples
    }

    /// The recommendations that apply now, empty until `min_samples` were seen.
    pub fn recommendations(&self, config: &Config) -> Vec<Recommendation> {
        if !self.has_enough_samples(config) {
            return Vec::new();
        }
        recommend::evaluate(&self.inputs())
    }
}

/// All windows, fed one scheduled snapshot at a time. Pure: no clock, no I/O.
#[derive(Debug, Clone)]
pub struct Detector {
    config: Config,
    containers: BTreeMap<String, ContainerTrack>,
    host: Option<[Track; 2]>,
}

impl Detector {
    /// An empty detector.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            containers: BTreeMap::new(),
            host: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Tracked containers by full id, sorted by id.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerTrack> {
        self.containers.values()
    }

    /// Host tracks, once a snapshot carried host figures.
    pub fn host(&self) -> Option<&[Track; 2]> {
        self.host.as_ref()
    }

    /// Feeds one snapshot. Unscheduled snapshots are ignored; containers missing from the
    /// snapshot are forgotten with their windows.
    pub fn observe(&mut self, snapshot: &Snapshot) {
        if !snapshot.scheduled {
            return;
        }
        let Some(taken_at) = snapshot.taken_at.and_then(unix_seconds) else {
            return;
        };
        let config = &self.config;
        if snapshot.docker_up {
            self.containers
                .retain(|id, _| snapshot.containers.iter().any(|c| c.meta.id == *id));
        }
        for c in &snapshot.containers {
            let track =
                self.containers
                    .entry(c.meta.id.clone())
                    .or_insert_with(|| ContainerTrack {
                        meta: c.meta.clone(),
                        signals: std::array::from_fn(|_| Track::new(config)),
                        memory_limit_bytes: None,
                    });
            track.meta = c.meta.clone();
            let at = c
                .usage
                .as_ref()
                .map(|u| u.read_at)
                .filter(|t| *t > 0.0)
                .unwrap_or(taken_at);
            if let Some(u) = &c.usage {
                track.memory_limit_bytes = u.memory.limit_bytes;
            }
            for (signal, t) in Signal::ALL.into_iter().zip(track.signals.iter_mut()) {
                let value = c.usage.as_ref().and_then(|u| signal.value(u));
                if let Some(severity) = t.observe(config, at, value) {
                    debug!(
                        container = %c.meta.name,
                        signal = signal.as_str(),
                        severity = severity.as_str(),
                        value = t.current().unwrap_or(0.0),
                        zscore = t.zscore().unwrap_or(0.0),
                        "anomaly"
                    );
                }
            }
        }
        if let Some(h) = &snapshot.host {
            let tracks = self
                .host
                .get_or_insert_with(|| std::array::from_fn(|_| Track::new(config)));
            let values = [h.cpu_usage_ratio, h.memory_used_bytes as f64];
            for (t, v) in tracks.iter_mut().zip(values) {
                t.observe(config, taken_at, Some(v));
            }
        }
    }
}

fn unix_seconds(t: SystemTime) -> Option<f64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

/// The running scorer: a [`Detector`] shared by the snapshot loop, `/metrics` and the API.
#[derive(Debug, Clone)]
pub struct Anomaly {
    detector: Arc<Mutex<Detector>>,
}

impl Anomaly {
    /// A scorer with empty windows.
    pub fn new(config: Config) -> Self {
        Self {
            detector: Arc::new(Mutex::new(Detector::new(config))),
        }
    }

    /// Feeds one snapshot (what [`Anomaly::run`] does for each published one).
    pub fn observe(&self, snapshot: &Snapshot) {
        self.lock().observe(snapshot);
    }

    /// Scores every snapshot `rx` publishes until `shutdown`.
    pub async fn run(self, mut rx: watch::Receiver<Arc<Snapshot>>, shutdown: CancellationToken) {
        {
            let config = self.lock().config().clone();
            info!(
                window = %config.window_text(),
                samples = config.capacity(),
                min_samples = config.min_samples,
                medium = config.medium,
                high = config.high,
                "anomaly scoring started"
            );
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let snapshot = rx.borrow_and_update().clone();
            self.observe(&snapshot);
        }
    }

    /// The `prometheus_client` collector exporting the windows.
    pub fn collector(&self) -> export::AnomalyCollector {
        export::AnomalyCollector::new(self.detector.clone())
    }

    /// `GET /api/v1/windows`.
    pub fn routes(&self) -> axum::Router {
        export::routes(self.detector.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detector> {
        // A panic while scoring leaves plain numbers behind; keep serving them.
        self.detector.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collector::host::HostSnapshot;
    use crate::model::{ContainerSnapshot, UsageRates};

    pub(crate) fn meta(id: &str, name: &str) -> Arc<ContainerMeta> {
        Arc::new(ContainerMeta::for_tests(id, name))
    }

    pub(crate) fn usage(at: f64, cpu: f64, memory: u64) -> ContainerUsage {
        let mut u = ContainerUsage {
            read_at: at,
            rates: UsageRates {
                cpu_cores: Some(cpu),
                net_rx_bytes_per_second: Some(0.0),
                net_tx_bytes_per_second: Some(0.0),
                blkio_read_bytes_per_second: Some(0.0),
                blkio_write_bytes_per_second: Some(0.0),
            },
            ..Default::default()
        };
        u.memory.working_set_bytes = memory;
        u
    }

    pub(crate) fn snapshot(at: f64, containers: Vec<ContainerSnapshot>) -> Snapshot {
        Snapshot {
            taken_at: Some(UNIX_EPOCH + Duration::from_secs_f64(at)),
            scheduled: true,
            docker_up: true,
            containers,
            host: Some(HostSnapshot {
                cpu_usage_ratio: 0.25,
                cpus: 2,
                memory_total_bytes: 1000,
                memory_available_bytes: 600,
                memory_used_bytes: 400,
                ..Default::default()
            }),
            duration: Duration::from_millis(5),
        }
    }

    pub(crate) fn one(m: &Arc<ContainerMeta>, u: ContainerUsage) -> ContainerSnapshot {
        ContainerSnapshot {
            meta: m.clone(),
            usage: Some(u),
        }
    }

    fn config(min_samples: usize) -> Config {
        Config {
            window: Duration::from_secs(3600),
            interval: Duration::from_secs(1),
            max_samples: 1000,
            min_samples,
            ..Config::default()
        }
    }

    #[test]
    fn capacity_is_window_over_interval_capped() {
        let mut c = Config::default();
        assert_eq!(c.capacity(), 240);
        c.interval = Duration::from_secs(1);
        assert_eq!(c.capacity(), 1000);
        c.window = Duration::from_secs(90);
        assert_eq!(c.capacity(), 90);
    }

    #[test]
    fn flags_are_validated() {
        let args = AnomalyArgs {
            window: Duration::from_secs(60),
            max_samples: 1000,
            min_samples: 10,
            medium_threshold: 2.0,
            high_threshold: 3.0,
        };
        assert!(args.config(Duration::from_secs(1)).is_ok());
        assert_eq!(
            args.config(Duration::from_secs(15)),
            Err(ConfigError::MinSamples {
                min: 10,
                capacity: 4
            })
        );
        let swapped = AnomalyArgs {
            medium_threshold: 3.0,
            high_threshold: 2.0,
            ..args.clone()
        };
        assert!(matches!(
            swapped.config(Duration::from_secs(1)),
            Err(ConfigError::Thresholds { .. })
        ));
        let nan = AnomalyArgs {
            medium_threshold: f64::NAN,
            ..args
        };
        assert!(nan.config(Duration::from_secs(1)).is_err());
    }

    /// Ten samples alternating 1 and 3 (mean 2, σ 1), then a probe.
    fn primed(probe: f64) -> (Track, Option<Severity>) {
        let c = config(10);
        let mut t = Track::new(&c);
        for i in 0..10 {
            let v = if i % 2 == 0 { 1.0 } else { 3.0 };
            assert_eq!(t.observe(&c, f64::from(i), Some(v)), None);
            assert_eq!(t.zscore(), None, "no score before min-samples");
        }
        let s = t.observe(&c, 10.0, Some(probe));
        (t, s)
    }

    #[test]
    fn scores_against_the_previous_samples() {
        // Against the ten earlier samples (mean 2, σ 1) a 6 is exactly 4σ. Had it been
        // included, the window would be mean 2.3636, σ 1.4938 and the score 2.43.
        let (t, s) = primed(6.0);
        assert_eq!(t.zscore(), Some(4.0));
        assert_eq!(s, Some(Severity::High));
        let st = t.stats().unwrap();
        assert_eq!(st.samples, 11);
        assert_eq!(st.max, 6.0);
    }

    #[test]
    fn severity_thresholds_are_strict() {
        assert_eq!(primed(4.0).1, None, "exactly 2σ is not an anomaly");
        assert_eq!(primed(4.5).1, Some(Severity::Medium));
        assert_eq!(
            primed(5.0).1,
            Some(Severity::Medium),
            "exactly 3σ is medium"
        );
        assert_eq!(primed(5.01).1, Some(Severity::High));
        assert_eq!(primed(-10.0).1, None, "drops are not counted");
        assert_eq!(primed(-10.0).0.zscore(), Some(-12.0));
    }

    #[test]
    fn counts_once_per_anomalous_sample() {
        let (mut t, _) = primed(6.0);
        let c = config(10);
        // The window is now 1,3,…,1,3,6: mean 2.3636, σ 1.4938; 8 scores 3.77 (high).
        assert_eq!(t.observe(&c, 11.0, Some(8.0)), Some(Severity::High));
        assert_eq!(t.anomalies(Severity::High), 2);
        assert_eq!(t.anomalies(Severity::Medium), 0);
        assert_eq!(t.anomalies_in_window(Severity::High), 2);
        assert_eq!(t.anomalies_in_window(Severity::Medium), 0);
        t.observe(&c, 12.0, Some(2.0));
        assert_eq!(t.anomalies(Severity::High), 2);
    }

    #[test]
    fn missing_reading_clears_the_score_but_keeps_the_window() {
        let (mut t, _) = primed(6.0);
        t.observe(&config(10), 11.0, None);
        assert_eq!(t.zscore(), None);
        assert_eq!(t.current(), None);
        assert_eq!(t.stats().unwrap().samples, 11);
    }

    #[test]
    fn detector_tracks_containers_and_drops_removed_ones() {
        let a = meta(&"a".repeat(64), "web");
        let b = meta(&"b".repeat(64), "db");
        let mut d = Detector::new(config(3));
        for i in 0..5 {
            let at = 1000.0 + f64::from(i);
            d.observe(&snapshot(
                at,
                vec![one(&a, usage(at, 0.1, 100)), one(&b, usage(at, 0.2, 200))],
            ));
        }
        let mut unscheduled = snapshot(1005.0, vec![one(&a, usage(1005.0, 9.0, 100))]);
        unscheduled.scheduled = false;
        d.observe(&unscheduled);
        assert_eq!(
            d.containers().count(),
            2,
            "unscheduled snapshots are ignored"
        );
        let web = d.containers().next().unwrap();
        assert_eq!(web.samples(), 5);
        assert_eq!(
            web.signal(Signal::Cpu).zscore(),
            Some(0.0),
            "flat window scores 0"
        );
        assert_eq!(d.host().unwrap()[0].stats().unwrap().mean, 0.25);

        // A cycle in which Docker did not answer lists nothing but forgets nothing.
        let mut down = snapshot(1005.5, Vec::new());
        down.docker_up = false;
        d.observe(&down);
        assert_eq!(d.containers().count(), 2);

        d.observe(&snapshot(1006.0, vec![one(&b, usage(1006.0, 0.2, 200))]));
        let names: Vec<&str> = d.containers().map(|c| c.meta.name.as_str()).collect();
        assert_eq!(names, ["db"]);
    }

    #[test]
    fn recommendations_wait_for_min_samples() {
        let mut m = (*meta(&"c".repeat(64), "busy")).clone();
        m.cpu_limit_cores = Some(0.5);
        let m = Arc::new(m);
        let mut d = Detector::new(config(3));
        for i in 0..3 {
            let at = f64::from(i) + 1.0;
            d.observe(&snapshot(at, vec![one(&m, usage(at, 0.49, 100))]));
            let c = d.containers().next().unwrap();
            let expected = if i < 2 {
                vec![]
            } else {
                vec![Recommendation::RaiseCpuLimit]
            };
            assert_eq!(c.recommendations(d.config()), expected);
        }
    }
}
