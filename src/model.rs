//! The data model every other part of dockwatch reads: one [`Snapshot`] per collection cycle.
//!
//! A snapshot is built from scratch each cycle and replaces the previous one as a whole, so a
//! container that is gone from Docker is gone from the next snapshot and from `/metrics`.
//! Policies and anomaly scoring subscribe to snapshots; `/metrics` encodes the latest one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::models::ContainerInspectResponse;

use crate::collector::host::HostSnapshot;

/// Everything dockwatch knows after one collection cycle.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Wall-clock time at which the cycle started.
    pub taken_at: Option<SystemTime>,
    /// False for cycles triggered early by a Docker event rather than by the interval timer.
    /// Consumers that need an even cadence (anomaly windows) skip unscheduled snapshots.
    pub scheduled: bool,
    /// Whether the Docker Engine answered the container listing of this cycle.
    pub docker_up: bool,
    /// Every container Docker listed, running or not, sorted by name.
    pub containers: Vec<ContainerSnapshot>,
    /// Host figures; `None` when the host collector is disabled or failed this cycle.
    pub host: Option<HostSnapshot>,
    /// How long the cycle took.
    pub duration: Duration,
}

impl Snapshot {
    /// Looks a container up by its full or short id.
    pub fn container(&self, id: &str) -> Option<&ContainerSnapshot> {
        self.containers
            .iter()
            .find(|c| c.meta.id == id || c.meta.short_id() == id)
    }
}

/// One container in one cycle: cached metadata plus this cycle's usage.
#[derive(Debug, Clone)]
pub struct ContainerSnapshot {
    /// Metadata from `inspect`, shared with the cache so cycles do not copy it.
    pub meta: Arc<ContainerMeta>,
    /// Resource usage; `None` for containers that are not running or whose stats failed.
    pub usage: Option<ContainerUsage>,
}

/// Container lifecycle state as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Running.
    Running,
    /// Frozen by `docker pause`.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Failed to stop or be removed.
    Dead,
}

impl ContainerState {
    /// Every state, in the order they are exported.
    pub const ALL: [ContainerState; 7] = [
        Self::Created,
        Self::Running,
        Self::Paused,
        Self::Restarting,
        Self::Removing,
        Self::Exited,
        Self::Dead,
    ];

    /// Parses Docker's lowercase state name; unknown names count as `exited`.
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "dead" => Self::Dead,
            _ => Self::Exited,
        }
    }

    /// The label value used on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }

    /// Whether the container has live processes whose usage can be read.
    pub fn has_usage(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// Health-check status; `None` when the image defines no health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// No health check configured.
    None,
    /// Within the start period.
    Starting,
    /// Last checks passed.
    Healthy,
    /// Failing streak reached the retry count.
    Unhealthy,
}

impl HealthStatus {
    /// Every status, in the order they are exported.
    pub const ALL: [HealthStatus; 4] = [Self::None, Self::Starting, Self::Healthy, Self::Unhealthy];

    /// The label value used on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Parses Docker's health status string.
    pub fn parse(s: &str) -> Self {
        match s {
            "starting" => Self::Starting,
            "healthy" => Self::Healthy,
            "unhealthy" => Self::Unhealthy,
            _ => Self::None,
        }
    }
}

/// Container metadata from `inspect`, cached and refreshed by Docker events.
#[derive(Debug, Clone)]
pub struct ContainerMeta {
    /// Full 64-hex container id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// Image reference the container was created from (`Config.Image`), e.g. `nginx:1.25`.
    pub image: String,
    /// Content-addressed image id (`sha256:…`).
    pub image_id: String,
    /// Docker labels.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Health-check status.
    pub health: HealthStatus,
    /// Restarts performed by the restart policy.
    pub restart_count: u64,
    /// Whether the last exit was an OOM kill.
    pub oom_killed: bool,
    /// Start time in Unix seconds, when the container has ever started.
    pub started_at: Option<f64>,
    /// Host PID of the container's init process while it runs.
    pub pid: Option<u32>,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// CPU limit in cores (from `--cpus` or quota/period); `None` when unlimited.
    pub cpu_limit_cores: Option<f64>,
    /// PID limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// `HostConfig.NetworkMode`: `bridge`, `host`, `none`, `container:<id>` or a network name.
    pub network_mode: String,
    /// The full inspect payload, for policy rules that need more than the fields above.
    pub inspect: Arc<ContainerInspectResponse>,
}

impl ContainerMeta {
    /// A running `busybox:1` container on the bridge network with no limits, labels or
    /// inspect data, for tests to adjust field by field.
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, name: &str) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            image: "busybox:1".into(),
            image_id: "sha256:00".into(),
            labels: BTreeMap::new(),
            state: ContainerState::Running,
            health: HealthStatus::None,
            restart_count: 0,
            oom_killed: false,
            started_at: None,
            pid: None,
            memory_limit_bytes: None,
            cpu_limit_cores: None,
            pids_limit: None,
            network_mode: "bridge".into(),
            inspect: Arc::new(ContainerInspectResponse::default()),
        }
    }

    /// The 12-character id `docker ps` shows.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// Whether the container has its own network namespace with interfaces to count.
    pub fn has_own_network(&self) -> bool {
        !(self.network_mode == "host"
            || self.network_mode == "none"
            || self.network_mode.starts_with("container:"))
    }

    /// Compose project label, if any.
    pub fn compose_project(&self) -> Option<&str> {
        self.labels
            .get("com.docker.compose.project")
            .map(String::as_str)
    }

    /// Compose service label, if any.
    pub fn compose_service(&self) -> Option<&str> {
        self.labels
            .get("com.docker.compose.service")
            .map(String::as_str)
    }
}

/// Where a container's usage figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageSource {
    /// The Engine API stats endpoint.
    Api,
    /// The cgroup filesystem and `/proc/<pid>/net/dev`.
    Cgroup,
}

impl UsageSource {
    /// The label value used on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Cgroup => "cgroup",
        }
    }
}

/// CPU counters, cumulative since the container started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsage {
    /// Total CPU time in nanoseconds.
    pub total_ns: u64,
    /// User-mode CPU time in nanoseconds.
    pub user_ns: u64,
    /// Kernel-mode CPU time in nanoseconds.
    pub system_ns: u64,
    /// CPUs the container may run on (`online_cpus`), when known.
    pub online_cpus: Option<u32>,
    /// CFS enforcement periods elapsed.
    pub periods: u64,
    /// CFS periods in which the container was throttled.
    pub throttled_periods: u64,
    /// Time spent throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// Memory figures at the time of the sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemoryUsage {
    /// Memory usage as the cgroup reports it (includes page cache).
    pub usage_bytes: u64,
    /// Usage minus inactive file pages: what `docker stats` shows and what the OOM killer weighs.
    pub working_set_bytes: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Times the limit was hit (v1 `failcnt`, v2 `max` events), when known.
    pub failcnt: Option<u64>,
    /// OOM kills inside the cgroup (v2 `oom_kill` events), when known.
    pub oom_kills: Option<u64>,
    /// Limit the kernel enforces, `None` when unlimited (never 2^63).
    pub limit_bytes: Option<u64>,
}

/// Counters for one network interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkUsage {
    /// Interface name inside the container, e.g. `eth0`.
    pub interface: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Outgoing packets dropped.
    pub tx_dropped: u64,
}

/// Block I/O counters summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlkioUsage {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ops: u64,
    /// Write operations.
    pub write_ops: u64,
}

/// Per-second rates and the CPU gauge derived from this sample and the previous one.
///
/// Every field is `None` on the first sample and after a counter went backwards (the
/// container restarted under the same id), so a reset never shows as a spike or a negative
/// rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageRates {
    /// CPU used over the interval in cores: 1.0 is one full core (`docker stats` 100 %).
    pub cpu_cores: Option<f64>,
    /// Bytes per second received over all interfaces.
    pub net_rx_bytes_per_second: Option<f64>,
    /// Bytes per second sent over all interfaces.
    pub net_tx_bytes_per_second: Option<f64>,
    /// Bytes per second read from block devices.
    pub blkio_read_bytes_per_second: Option<f64>,
    /// Bytes per second written to block devices.
    pub blkio_write_bytes_per_second: Option<f64>,
}

/// One usage sample of one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUsage {
    /// When the figures were read, Unix seconds.
    pub read_at: f64,
    /// CPU counters.
    pub cpu: CpuUsage,
    /// Memory figures.
    pub memory: MemoryUsage,
    /// Per-interface counters; empty for `host`/`none` networking.
    pub networks: Vec<NetworkUsage>,
    /// Block I/O counters.
    pub blkio: BlkioUsage,
    /// Processes and threads in the container.
    pub pids_current: Option<u64>,
    /// PID limit the kernel enforces, `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Which reader produced the figures.
    pub source: Option<UsageSource>,
    /// Rates against the previous sample.
    pub rates: UsageRates,
}

impl ContainerUsage {
    /// Total bytes received over all interfaces.
    pub fn net_rx_bytes(&self) -> u64 {
        self.networks.iter().map(|n| n.rx_bytes).sum()
    }

    /// Total bytes sent over all interfaces.
    pub fn net_tx_bytes(&self) -> u64 {
        self.networks.iter().map(|n| n.tx_bytes).sum()
    }

    /// Fills [`ContainerUsage::rates`] from the previous sample of the same container.
    pub fn derive_rates(&mut self, prev: Option<&ContainerUsage>) {
        let Some(prev) = prev else {
            self.rates = UsageRates::default();
            return;
        };
        let dt = self.read_at - prev.read_at;
        if dt <= 0.0 || !dt.is_finite() {
            self.rates = UsageRates::default();
            return;
        }
        let rate = |now: u64, before: u64| now.checked_sub(before).map(|d| d as f64 / dt);
        self.rates = UsageRates {
            cpu_cores: rate(self.cpu.total_ns, prev.cpu.total_ns).map(|ns| ns / 1e9),
            net_rx_bytes_per_second: rate(self.net_rx_bytes(), prev.net_rx_bytes()),
            net_tx_bytes_per_second: rate(self.net_tx_bytes(), prev.net_tx_bytes()),
            blkio_read_bytes_per_second: rate(self.blkio.read_bytes, prev.blkio.read_bytes),
            blkio_write_bytes_per_second: rate(self.blkio.write_bytes, prev.blkio.write_bytes),
        };
    }

    /// Memory use as a fraction of the limit, or of `host_total` when the container has none:
    /// the figure `docker stats` prints as MEM %.
    pub fn memory_usage_ratio(&self, host_total: Option<u64>) -> Option<f64> {
        let denom = self.memory.limit_bytes.or(host_total)?;
        (denom > 0).then(|| self.memory.working_set_bytes as f64 / denom as f64)
    }
}

/// Parses a Docker RFC 3339 timestamp into Unix seconds; Docker's zero time gives `None`.
pub fn parse_docker_time(s: &str) -> Option<f64> {
    if s.is_empty() || s.starts_with("0001-") {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, cpu_ns: u64, rx: u64) -> ContainerUsage {
        ContainerUsage {
            read_at: at,
            cpu: CpuUsage {
                total_ns: cpu_ns,
                ..Default::default()
            },
            networks: vec![NetworkUsage {
                interface: "eth0".into(),
                rx_bytes: rx,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rates_from_previous_sample() {
        let prev = sample(100.0, 1_000_000_000, 1000);
        let mut now = sample(102.0, 2_000_000_000, 5000);
        now.derive_rates(Some(&prev));
        assert_eq!(now.rates.cpu_cores, Some(0.5));
        assert_eq!(now.rates.net_rx_bytes_per_second, Some(2000.0));
    }

    #[test]
    fn counter_reset_gives_no_rate() {
        let prev = sample(100.0, 9_000_000_000, 9000);
        let mut now = sample(110.0, 1_000_000, 10);
        now.derive_rates(Some(&prev));
        assert_eq!(now.rates.cpu_cores, None);
        assert_eq!(now.rates.net_rx_bytes_per_second, None);
    }

    #[test]
    fn parses_docker_times() {
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        let t = parse_docker_time("2026-12-03T12:48:14.293376875Z").unwrap();
        assert!((t - 1_796_302_094.293_377).abs() < 1e-3, "{t}");
    }

    #[test]
    fn memory_ratio_against_limit_or_host() {
        let mut u = ContainerUsage::default();
        u.memory.working_set_bytes = 50;
        assert_eq!(u.memory_usage_ratio(Some(1000)), Some(0.05));
        u.memory.limit_bytes = Some(100);
        assert_eq!(u.memory_usage_ratio(Some(1000)), Some(0.5));
        u.memory.limit_bytes = None;
        assert_eq!(u.memory_usage_ratio(None), None);
    }
}
