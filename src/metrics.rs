//! Encoding of snapshots into Prometheus metric families.
//!
//! Each component that exports metrics implements `prometheus_client`'s `Collector` over its
//! own latest state; nothing here calls Docker. [`Family`] is the small builder they share for
//! families whose series come and go with containers.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::collector::{SelfStats, Stage};
use crate::model::{ContainerMeta, ContainerSnapshot, ContainerState, HealthStatus, Snapshot};

/// A label pair; values are owned only when they must be formatted.
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Whether a family is a gauge or a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A cumulative value; the encoder appends `_total` to the name.
    Counter,
}

/// A metric family built per scrape from a snapshot.
#[derive(Debug)]
pub struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: Kind,
    samples: Vec<(Vec<Label<'a>>, f64)>,
}

impl<'a> Family<'a> {
    /// A family with no samples yet. Counter names are given without `_total`.
    pub fn new(name: &'a str, help: &'a str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds one series. Non-finite values are dropped: a NaN on `/metrics` helps nobody.
    pub fn sample(mut self, labels: &[Label<'a>], value: f64) -> Self {
        self.push(labels.to_vec(), value);
        self
    }

    /// Adds one series in place.
    pub fn push(&mut self, labels: Vec<Label<'a>>, value: f64) {
        if value.is_finite() {
            self.samples.push((labels, value));
        }
    }

    /// Whether no series were added.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Writes the family; an empty family writes nothing.
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        if self.samples.is_empty() {
            return Ok(());
        }
        let metric_type = match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
        };
        let mut metric = enc.encode_descriptor(self.name, self.help, None, metric_type)?;
        for (labels, value) in &self.samples {
            let mut series = metric.encode_family(labels)?;
            match self.kind {
                Kind::Gauge => series.encode_gauge(value)?,
                Kind::Counter => series.encode_counter::<NoLabelSet, _, f64>(value, None)?,
            }
        }
        Ok(())
    }
}

/// A label pair borrowing both sides.
pub fn label<'a>(key: &'a str, value: &'a str) -> Label<'a> {
    (Cow::Borrowed(key), Cow::Borrowed(value))
}

/// The join labels every per-container series carries: short `id`, `name`, `image`.
pub fn container_labels(meta: &ContainerMeta) -> Vec<Label<'_>> {
    vec![
        label("id", meta.short_id()),
        label("name", &meta.name),
        label("image", &meta.image),
    ]
}

/// Turns a Docker label key into a Prometheus label name: `label_` plus the key with every
/// character outside `[a-zA-Z0-9_]` replaced by `_`.
pub fn sanitize_label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 6);
    out.push_str("label_");
    out.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

/// Exports the latest snapshot: per-container series, host series and the exporter's health.
#[derive(Debug)]
pub struct SnapshotCollector {
    rx: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<SelfStats>,
    label_allowlist: Vec<String>,
}

impl SnapshotCollector {
    /// `label_allowlist` names the Docker labels copied onto `dockwatch_container_info`.
    pub fn new(
        rx: watch::Receiver<Arc<Snapshot>>,
        stats: Arc<SelfStats>,
        label_allowlist: Vec<String>,
    ) -> Self {
        Self {
            rx,
            stats,
            label_allowlist,
        }
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let snapshot = self.rx.borrow().clone();
        encode_self(&snapshot, &self.stats, &mut enc)?;
        encode_containers(&snapshot, &self.label_allowlist, &mut enc)?;
        if let Some(host) = &snapshot.host {
            host.encode(&mut enc)?;
        }
        Ok(())
    }
}

fn encode_self(
    snapshot: &Snapshot,
    stats: &SelfStats,
    enc: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    Family::new(
        "dockwatch_build_info",
        "Build metadata of the running dockwatch; the value is always 1",
        Kind::Gauge,
    )
    .sample(
        &[
            label("version", env!("CARGO_PKG_VERSION")),
            label(
                "revision",
                option_env!("DOCKWATCH_REVISION").unwrap_or("unknown"),
            ),
        ],
        1.0,
    )
    .encode(enc)?;
    Family::new(
        "dockwatch_docker_up",
        "Whether the Docker Engine answered the last collection cycle (1) or not (0)",
        Kind::Gauge,
    )
    .sample(&[], if snapshot.docker_up { 1.0 } else { 0.0 })
    .encode(enc)?;
    if let Some(engine) = stats.engine() {
        Family::new(
            "dockwatch_docker_engine_info",
            "Docker Engine version and negotiated API version; the value is always 1",
            Kind::Gauge,
        )
        .sample(
            &[
                label("version", &engine.version),
                label("api_version", &engine.api_version),
            ],
            1.0,
        )
        .encode(enc)?;
    }
    if snapshot.taken_at.is_some() {
        Family::new(
            "dockwatch_collection_duration_seconds",
            "Wall time of the last collection cycle",
            Kind::Gauge,
        )
        .sample(&[], snapshot.duration.as_secs_f64())
        .encode(enc)?;
    }
    if let Some(t) = stats.last_success() {
        Family::new(
            "dockwatch_last_collection_timestamp_seconds",
            "Unix time at which the last cycle that reached the Docker Engine finished",
            Kind::Gauge,
        )
        .sample(
            &[],
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        )
        .encode(enc)?;
    }
    Family::new(
        "dockwatch_collection_cycles",
        "Collection cycles completed since start",
        Kind::Counter,
    )
    .sample(&[], stats.cycles() as f64)
    .encode(enc)?;
    let mut errors = Family::new(
        "dockwatch_collection_errors",
        "Collection errors by stage (version, list, inspect, stats, host, events); a container removed mid-cycle counts under inspect or stats",
        Kind::Counter,
    );
    for stage in Stage::ALL {
        errors.push(
            vec![label("stage", stage.as_str())],
            stats.errors(stage) as f64,
        );
    }
    errors.encode(enc)?;
    let mut containers = Family::new(
        "dockwatch_containers",
        "Containers seen in the last cycle by state",
        Kind::Gauge,
    );
    if snapshot.docker_up {
        for state in ContainerState::ALL {
            let n = snapshot
                .containers
                .iter()
                .filter(|c| c.meta.state == state)
                .count();
            containers.push(vec![label("state", state.as_str())], n as f64);
        }
    }
    containers.encode(enc)
}

/// One family per container metric, filled in one pass over the containers.
struct ContainerFamilies<'a> {
    info: Family<'a>,
    state: Family<'a>,
    health: Family<'a>,
    restarts: Family<'a>,
    start_time: Family<'a>,
    oom_killed: Family<'a>,
    source: Family<'a>,
    cpu_total: Family<'a>,
    cpu_user: Family<'a>,
    cpu_system: Family<'a>,
    cpu_usage: Family<'a>,
    cpu_online: Family<'a>,
    cpu_limit: Family<'a>,
    cfs_periods: Family<'a>,
    cfs_throttled_periods: Family<'a>,
    cfs_throttled_seconds: Family<'a>,
    mem_usage: Family<'a>,
    mem_working_set: Family<'a>,
    mem_limit: Family<'a>,
    mem_cache: Family<'a>,
    mem_rss: Family<'a>,
    mem_failcnt: Family<'a>,
    mem_oom_kills: Family<'a>,
    mem_ratio: Family<'a>,
    net: [Family<'a>; 8],
    blk_read_bytes: Family<'a>,
    blk_write_bytes: Family<'a>,
    blk_read_ops: Family<'a>,
    blk_write_ops: Family<'a>,
    pids: Family<'a>,
    pids_limit: Family<'a>,
}

impl<'a> ContainerFamilies<'a> {
    fn new() -> Self {
        use Kind::{Counter, Gauge};
        Self {
            info: Family::new(
                "dockwatch_container_info",
                "Container metadata (image id, compose project and service, allowlisted Docker labels); the value is always 1. Join on name",
                Gauge,
            ),
            state: Family::new(
                "dockwatch_container_state",
                "1 for the container's current state, 0 for the others",
                Gauge,
            ),
            health: Family::new(
                "dockwatch_container_health_status",
                "1 for the container's current health-check status (none when it has no health check), 0 for the others",
                Gauge,
            ),
            restarts: Family::new(
                "dockwatch_container_restarts",
                "Restarts performed by the container's restart policy (Docker RestartCount)",
                Counter,
            ),
            start_time: Family::new(
                "dockwatch_container_start_time_seconds",
                "Unix time the container last started",
                Gauge,
            ),
            oom_killed: Family::new(
                "dockwatch_container_oom_killed",
                "1 when the container's last exit was an OOM kill",
                Gauge,
            ),
            source: Family::new(
                "dockwatch_container_stats_source",
                "Where the usage figures came from this cycle (api or cgroup); the value is always 1",
                Gauge,
            ),
            cpu_total: Family::new(
                "dockwatch_container_cpu_usage_seconds",
                "CPU time consumed, all CPUs and modes",
                Counter,
            ),
            cpu_user: Family::new(
                "dockwatch_container_cpu_user_seconds",
                "CPU time consumed in user mode",
                Counter,
            ),
            cpu_system: Family::new(
                "dockwatch_container_cpu_system_seconds",
                "CPU time consumed in kernel mode",
                Counter,
            ),
            cpu_usage: Family::new(
                "dockwatch_container_cpu_usage_ratio",
                "CPU used over the last collection interval in cores: 1.0 is one full core, as docker stats shows 100%",
                Gauge,
            ),
            cpu_online: Family::new(
                "dockwatch_container_cpus_online",
                "CPUs the container may run on (online_cpus)",
                Gauge,
            ),
            cpu_limit: Family::new(
                "dockwatch_container_spec_cpus",
                "CPU limit in cores (--cpus, or quota/period); absent when unlimited",
                Gauge,
            ),
            cfs_periods: Family::new(
                "dockwatch_container_cpu_cfs_periods",
                "CFS enforcement periods elapsed",
                Counter,
            ),
            cfs_throttled_periods: Family::new(
                "dockwatch_container_cpu_cfs_throttled_periods",
                "CFS periods in which the container was throttled",
                Counter,
            ),
            cfs_throttled_seconds: Family::new(
                "dockwatch_container_cpu_cfs_throttled_seconds",
                "Time the container spent throttled",
                Counter,
            ),
            mem_usage: Family::new(
                "dockwatch_container_memory_usage_bytes",
                "Memory usage including page cache, as the cgroup reports it",
                Gauge,
            ),
            mem_working_set: Family::new(
                "dockwatch_container_memory_working_set_bytes",
                "Memory usage minus inactive file pages: the figure docker stats shows",
                Gauge,
            ),
            mem_limit: Family::new(
                "dockwatch_container_memory_limit_bytes",
                "Memory limit; absent when the container has none",
                Gauge,
            ),
            mem_cache: Family::new(
                "dockwatch_container_memory_cache_bytes",
                "Page cache charged to the container (v1 total_cache, v2 file)",
                Gauge,
            ),
            mem_rss: Family::new(
                "dockwatch_container_memory_rss_bytes",
                "Anonymous memory (v1 total_rss, v2 anon)",
                Gauge,
            ),
            mem_failcnt: Family::new(
                "dockwatch_container_memory_failures",
                "Times memory usage hit the limit (cgroup failcnt or v2 max events); absent when the source does not report it",
                Counter,
            ),
            mem_oom_kills: Family::new(
                "dockwatch_container_memory_oom_kills",
                "Processes OOM-killed inside the container's cgroup; absent when the source does not report it",
                Counter,
            ),
            mem_ratio: Family::new(
                "dockwatch_container_memory_usage_ratio",
                "Working set as a fraction of the memory limit, or of host memory when unlimited: docker stats MEM % divided by 100",
                Gauge,
            ),
            net: [
                Family::new(
                    "dockwatch_container_network_receive_bytes",
                    "Bytes received per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_receive_packets",
                    "Packets received per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_receive_errors",
                    "Receive errors per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_receive_dropped",
                    "Received packets dropped per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_transmit_bytes",
                    "Bytes sent per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_transmit_packets",
                    "Packets sent per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_transmit_errors",
                    "Transmit errors per interface",
                    Counter,
                ),
                Family::new(
                    "dockwatch_container_network_transmit_dropped",
                    "Outgoing packets dropped per interface",
                    Counter,
                ),
            ],
            blk_read_bytes: Family::new(
                "dockwatch_container_blkio_read_bytes",
                "Bytes read from block devices",
                Counter,
            ),
            blk_write_bytes: Family::new(
                "dockwatch_container_blkio_write_bytes",
                "Bytes written to block devices",
                Counter,
            ),
            blk_read_ops: Family::new(
                "dockwatch_container_blkio_read_operations",
                "Read operations on block devices",
                Counter,
            ),
            blk_write_ops: Family::new(
                "dockwatch_container_blkio_write_operations",
                "Write operations on block devices",
                Counter,
            ),
            pids: Family::new(
                "dockwatch_container_pids",
                "Processes and threads in the container",
                Gauge,
            ),
            pids_limit: Family::new(
                "dockwatch_container_pids_limit",
                "PID limit; absent when unlimited",
                Gauge,
            ),
        }
    }

    fn add(&mut self, c: &'a ContainerSnapshot, allowlist: &[String], host_memory: Option<u64>) {
        let meta = &*c.meta;
        let base = container_labels(meta);
        let with = |extra: Label<'a>| {
            let mut l = base.clone();
            l.push(extra);
            l
        };

        let mut info = base.clone();
        info.push(label("image_id", &meta.image_id));
        info.push(label(
            "compose_project",
            meta.compose_project().unwrap_or(""),
        ));
        info.push(label(
            "compose_service",
            meta.compose_service().unwrap_or(""),
        ));
        for key in allowlist {
            let value = meta.labels.get(key).map(String::as_str).unwrap_or("");
            info.push((Cow::Owned(sanitize_label_name(key)), Cow::Borrowed(value)));
        }
        self.info.push(info, 1.0);
        for state in ContainerState::ALL {
            let v = if meta.state == state { 1.0 } else { 0.0 };
            self.state.push(with(label("state", state.as_str())), v);
        }
        for status in HealthStatus::ALL {
            let v = if meta.health == status { 1.0 } else { 0.0 };
            self.health.push(with(label("status", status.as_str())), v);
        }
        self.restarts.push(base.clone(), meta.restart_count as f64);
        if let Some(t) = meta.started_at {
            self.start_time.push(base.clone(), t);
        }
        self.oom_killed
            .push(base.clone(), if meta.oom_killed { 1.0 } else { 0.0 });
        if let Some(cores) = meta.cpu_limit_cores {
            self.cpu_limit.push(base.clone(), cores);
        }

        let Some(u) = &c.usage else { return };
        if let Some(source) = u.source {
            self.source
                .push(with(label("source", source.as_str())), 1.0);
        }
        let secs = |ns: u64| ns as f64 / 1e9;
        self.cpu_total.push(base.clone(), secs(u.cpu.total_ns));
        self.cpu_user.push(base.clone(), secs(u.cpu.user_ns));
        self.cpu_system.push(base.clone(), secs(u.cpu.system_ns));
        if let Some(cores) = u.rates.cpu_cores {
            self.cpu_usage.push(base.clone(), cores);
        }
        if let Some(n) = u.cpu.online_cpus {
            self.cpu_online.push(base.clone(), f64::from(n));
        }
        self.cfs_periods.push(base.clone(), u.cpu.periods as f64);
        self.cfs_throttled_periods
            .push(base.clone(), u.cpu.throttled_periods as f64);
        self.cfs_throttled_seconds
            .push(base.clone(), secs(u.cpu.throttled_ns));

        let m = &u.memory;
        self.mem_usage.push(base.clone(), m.usage_bytes as f64);
        self.mem_working_set
            .push(base.clone(), m.working_set_bytes as f64);
        if let Some(limit) = m.limit_bytes {
            self.mem_limit.push(base.clone(), limit as f64);
        }
        self.mem_cache.push(base.clone(), m.cache_bytes as f64);
        self.mem_rss.push(base.clone(), m.rss_bytes as f64);
        if let Some(f) = m.failcnt {
            self.mem_failcnt.push(base.clone(), f as f64);
        }
        if let Some(k) = m.oom_kills {
            self.mem_oom_kills.push(base.clone(), k as f64);
        }
        if let Some(r) = u.memory_usage_ratio(host_memory) {
            self.mem_ratio.push(base.clone(), r);
        }

        for n in &u.networks {
            let l = with(label("interface", &n.interface));
            let values = [
                n.rx_bytes,
                n.rx_packets,
                n.rx_errors,
                n.rx_dropped,
                n.tx_bytes,
                n.tx_packets,
                n.tx_errors,
                n.tx_dropped,
            ];
            for (family, v) in self.net.iter_mut().zip(values) {
                family.push(l.clone(), v as f64);
            }
        }

        self.blk_read_bytes
            .push(base.clone(), u.blkio.read_bytes as f64);
        self.blk_write_bytes
            .push(base.clone(), u.blkio.write_bytes as f64);
        self.blk_read_ops
            .push(base.clone(), u.blkio.read_ops as f64);
        self.blk_write_ops
            .push(base.clone(), u.blkio.write_ops as f64);
        if let Some(p) = u.pids_current {
            self.pids.push(base.clone(), p as f64);
        }
        if let Some(l) = u.pids_limit {
            self.pids_limit.push(base, l as f64);
        }
    }

    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let families = [
            &self.info,
            &self.state,
            &self.health,
            &self.restarts,
            &self.start_time,
            &self.oom_killed,
            &self.source,
            &self.cpu_total,
            &self.cpu_user,
            &self.cpu_system,
            &self.cpu_usage,
            &self.cpu_online,
            &self.cpu_limit,
            &self.cfs_periods,
            &self.cfs_throttled_periods,
            &self.cfs_throttled_seconds,
            &self.mem_usage,
            &self.mem_working_set,
            &self.mem_limit,
            &self.mem_cache,
            &self.mem_rss,
            &self.mem_failcnt,
            &self.mem_oom_kills,
            &self.mem_ratio,
        ];
        for f in families.into_iter().chain(self.net.iter()).chain([
            &self.blk_read_bytes,
            &self.blk_write_bytes,
            &self.blk_read_ops,
            &self.blk_write_ops,
            &self.pids,
            &self.pids_limit,
        ]) {
            f.encode(enc)?;
        }
        Ok(())
    }
}

fn encode_containers(
    snapshot: &Snapshot,
    allowlist: &[String],
    enc: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let host_memory = snapshot.host.as_ref().map(|h| h.memory_total_bytes);
    let mut families = ContainerFamilies::new();
    for c in &snapshot.containers {
        families.add(c, allowlist, host_memory);
    }
    families.encode(enc)
}

/// Renders a registry in the Prometheus text format (0.0.4), which every Prometheus and
/// `promtool check metrics` read.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(size_hint());
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    LAST_RENDER_LEN.store(out.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// Length of the last rendering: the next one is allocated at about that size at once,
/// instead of doubling its way up (on 200 containers, five reallocations and a buffer
/// almost twice the body, kept alive while responses are in flight).
static LAST_RENDER_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn size_hint() -> usize {
    let last = LAST_RENDER_LEN.load(std::sync::atomic::Ordering::Relaxed);
    (last + last / 16).max(64 * 1024)
}

/// Renders a registry in the OpenMetrics text format.
pub fn render_openmetrics(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(size_hint());
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_docker_label_keys() {
        assert_eq!(
            sanitize_label_name("com.example.team"),
            "label_com_example_team"
        );
        assert_eq!(sanitize_label_name("a-b/c"), "label_a_b_c");
    }

    #[test]
    fn counters_get_total_and_nan_is_dropped() {
        #[derive(Debug)]
        struct C;
        impl Collector for C {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
                Family::new("x_seconds", "help", Kind::Counter)
                    .sample(&[label("a", "b")], 1.5)
                    .sample(&[label("a", "c")], f64::NAN)
                    .encode(&mut enc)?;
                Family::new("empty", "help", Kind::Gauge).encode(&mut enc)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(C));
        let text = render(&registry).unwrap();
        assert_eq!(
            text,
            "# HELP x_seconds_total help\n# TYPE x_seconds_total counter\nx_seconds_total{a=\"b\"} 1.5\n"
        );
    }
}
