//! Turns Engine API payloads (inspect and stats) into the [`crate::model`] types.
//!
//! The stats payload differs between cgroup v1 and v2 hosts: the memory breakdown keys, the
//! block I/O op names and the presence of `percpu_usage` all change. Field meanings follow the
//! Engine API reference (`ContainerStatsResponse`) and the kernel's cgroup documentation
//! (`Documentation/admin-guide/cgroup-v1/memory.rst`, `cgroup-v2.rst`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::models::{ContainerInspectResponse, ContainerStatsResponse};

use crate::model::{
    BlkioUsage, ContainerMeta, ContainerState, ContainerUsage, CpuUsage, HealthStatus,
    MemoryUsage, NetworkUsage, UsageSource, parse_docker_time,
};

/// Limits at or above this are "unlimited" as far as exporting goes (cgroup v1 reports
/// `PAGE_COUNTER_MAX`, around 2^63, for no limit).
pub const UNLIMITED: u64 = 1 << 62;

/// Builds the cached metadata of a container from its inspect payload.
pub fn meta_from_inspect(inspect: ContainerInspectResponse) -> ContainerMeta {
    let id = inspect.id.clone().unwrap_or_default();
    let name = inspect
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let config = inspect.config.as_ref();
    let image = config
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| inspect.image.clone().unwrap_or_default());
    let labels: BTreeMap<String, String> = config
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let state = inspect.state.as_ref();
    let status = state
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let health = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| HealthStatus::parse(&s.to_string()))
        .unwrap_or(HealthStatus::None);
    let pid = state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok());
    let host = inspect.host_config.as_ref();
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    let memory_limit_bytes = positive(host.and_then(|h| h.memory));
    let cpu_limit_cores = host.and_then(|h| {
        if let Some(nano) = h.nano_cpus.filter(|n| *n > 0) {
            return Some(nano as f64 / 1e9);
        }
        let quota = h.cpu_quota.filter(|q| *q > 0)?;
        let period = h.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
        Some(quota as f64 / period as f64)
    });
    ContainerMeta {
        name,
        image,
        image_id: inspect.image.clone().unwrap_or_default(),
        labels,
        state: ContainerState::parse(&status),
        health,
        restart_count: inspect.restart_count.unwrap_or(0).max(0) as u64,
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        started_at: state
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_docker_time),
        pid,
        memory_limit_bytes,
        cpu_limit_cores,
        pids_limit: positive(host.and_then(|h| h.pids_limit)),
        network_mode: host
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_else(|| "bridge".into()),
        id,
        inspect: Arc::new(inspect),
    }
}

/// Builds a usage sample from one stats payload.
///
/// Returns `None` when the payload carries Docker's zero read time, which the engine sends
/// for a container that stopped between the listing and the stats call.
pub fn usage_from_stats(stats: &ContainerStatsResponse, meta: &ContainerMeta) -> Option<ContainerUsage> {
    let read_at = stats.read.as_deref().and_then(parse_docker_time)?;
    let cpu_stats = stats.cpu_stats.as_ref();
    let cpu_usage = cpu_stats.and_then(|c| c.cpu_usage.as_ref());
    let throttling = cpu_stats.and_then(|c| c.throttling_data.as_ref());
    let cpu = CpuUsage {
        total_ns: cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
        user_ns: cpu_usage.and_then(|u| u.usage_in_usermode).unwrap_or(0),
        system_ns: cpu_usage.and_then(|u| u.usage_in_kernelmode).unwrap_or(0),
        // `online_cpus` is the engine's own count; `percpu_usage` is absent on cgroup v2 and
        // may list offline CPUs on v1, so it is only the fallback.
        online_cpus: cpu_stats
            .and_then(|c| c.online_cpus)
            .filter(|n| *n > 0)
            .or_else(|| {
                cpu_usage
                    .and_then(|u| u.percpu_usage.as_ref())
                    .map(|p| p.iter().filter(|v| **v > 0).count() as u32)
                    .filter(|n| *n > 0)
            }),
        periods: throttling.and_then(|t| t.periods).unwrap_or(0),
        throttled_periods: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
        throttled_ns: throttling.and_then(|t| t.throttled_time).unwrap_or(0),
    };

    let memory = stats
        .memory_stats
        .as_ref()
        .map(|m| {
            let empty = HashMap::new();
            let s = m.stats.as_ref().unwrap_or(&empty);
            memory_from_stat(m.usage.unwrap_or(0), s, m.failcnt, m.limit, meta)
        })
        .unwrap_or_default();

    let networks = if meta.has_own_network() {
        let mut nets: Vec<NetworkUsage> = stats
            .networks
            .iter()
            .flatten()
            .map(|(name, n)| NetworkUsage {
                interface: name.clone(),
                rx_bytes: n.rx_bytes.unwrap_or(0),
                rx_packets: n.rx_packets.unwrap_or(0),
                rx_errors: n.rx_errors.unwrap_or(0),
                rx_dropped: n.rx_dropped.unwrap_or(0),
                tx_bytes: n.tx_bytes.unwrap_or(0),
                tx_packets: n.tx_packets.unwrap_or(0),
                tx_errors: n.tx_errors.unwrap_or(0),
                tx_dropped: n.tx_dropped.unwrap_or(0),
            })
            .collect();
        nets.sort_by(|a, b| a.interface.cmp(&b.interface));
        nets
    } else {
        Vec::new()
    };

    let mut blkio = BlkioUsage::default();
    if let Some(b) = &stats.blkio_stats {
        // v1 names ops `Read`/`Write`/`Sync`/`Async`/`Total`; v2 uses `read`/`write` only.
        for e in b.io_service_bytes_recursive.iter().flatten() {
            match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => blkio.read_bytes += e.value.unwrap_or(0),
                Some("write") => blkio.write_bytes += e.value.unwrap_or(0),
                _ => {}
            }
        }
        for e in b.io_serviced_recursive.iter().flatten() {
            match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => blkio.read_ops += e.value.unwrap_or(0),
                Some("write") => blkio.write_ops += e.value.unwrap_or(0),
                _ => {}
            }
        }
    }

    let pids = stats.pids_stats.as_ref();
    Some(ContainerUsage {
        read_at,
        cpu,
        memory,
        networks,
        blkio,
        pids_current: pids.and_then(|p| p.current),
        pids_limit: pids
            .and_then(|p| p.limit)
            .filter(|l| *l > 0 && *l < UNLIMITED)
            .or(meta.pids_limit),
        source: Some(UsageSource::Api),
        rates: Default::default(),
    })
}

/// Derives the memory figures from a cgroup `memory.stat` map (v1 or v2 keys) and the usage.
///
/// Shared by the API reader (the engine forwards `memory.stat` as `memory_stats.stats`) and the
/// cgroup reader. v1 keys are recognised by their `total_` hierarchy prefix.
pub fn memory_from_stat(
    usage: u64,
    stat: &HashMap<String, u64>,
    failcnt: Option<u64>,
    kernel_limit: Option<u64>,
    meta: &ContainerMeta,
) -> MemoryUsage {
    let get = |k: &str| stat.get(k).copied();
    let v1 = stat.contains_key("total_inactive_file") || stat.contains_key("total_cache");
    let (inactive_file, cache, rss) = if v1 {
        (
            get("total_inactive_file"),
            get("total_cache").or(get("cache")).unwrap_or(0),
            get("total_rss").or(get("rss")).unwrap_or(0),
        )
    } else {
        (
            get("inactive_file"),
            get("file").or(get("cache")).unwrap_or(0),
            get("anon").or(get("rss")).unwrap_or(0),
        )
    };
    let working_set = match inactive_file {
        Some(inactive) if inactive < usage => usage - inactive,
        _ => usage,
    };
    // Only a limit the user set counts: without one the kernel reports a huge sentinel (v1)
    // or `max` (v2), and the engine may substitute host memory.
    let limit_bytes = meta.memory_limit_bytes.map(|configured| match kernel_limit {
        Some(k) if k > 0 && k < UNLIMITED => k.min(configured),
        _ => configured,
    });
    MemoryUsage {
        usage_bytes: usage,
        working_set_bytes: working_set,
        cache_bytes: cache,
        rss_bytes: rss,
        failcnt,
        oom_kills: get("oom_kill"),
        limit_bytes,
    }
}

