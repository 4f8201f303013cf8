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
    BlkioUsage, ContainerMeta, ContainerState, ContainerUsage, CpuUsage, HealthStatus, MemoryUsage,
    NetworkUsage, UsageSource, parse_docker_time,
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
        .map(|s| HealthStatus::parse(s.as_ref()))
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
pub fn usage_from_stats(
    stats: &ContainerStatsResponse,
    meta: &ContainerMeta,
) -> Option<ContainerUsage> {
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
    let limit_bytes = meta
        .memory_limit_bytes
        .map(|configured| match kernel_limit {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::fixture;
    use crate::model::{ContainerUsage, UsageSource};

    fn meta(inspect: &str) -> ContainerMeta {
        meta_from_inspect(fixture(inspect))
    }

    fn usage(stats: &str, m: &ContainerMeta) -> ContainerUsage {
        usage_from_stats(&fixture(stats), m).unwrap()
    }

    #[test]
    fn inspect_of_a_limited_container() {
        let m = meta("inspect-s1.json");
        assert_eq!(m.short_id(), "7c5bee479196");
        assert_eq!(m.name, "s1");
        assert_eq!(m.image, "dwtest:v1");
        assert_eq!(m.state, ContainerState::Running);
        assert_eq!(m.health, HealthStatus::None);
        assert_eq!(m.pid, Some(5535));
        assert_eq!(m.memory_limit_bytes, Some(64 << 20));
        assert_eq!(m.cpu_limit_cores, Some(0.5));
        assert_eq!(m.pids_limit, None);
        assert!(m.has_own_network());
        assert!((m.started_at.unwrap() - 1_796_302_091.253_672_8).abs() < 1e-3);
    }

    #[test]
    fn cgroup_v1_cpu_memory_network_of_a_throttled_container() {
        let m = meta("inspect-s1.json");
        let u = usage("stats-v1-s1.json", &m);
        assert_eq!(u.source, Some(UsageSource::Api));
        assert_eq!(u.cpu.total_ns, 115_836_546_106);
        assert_eq!(u.cpu.user_ns, 115_150_000_000);
        assert_eq!(u.cpu.system_ns, 680_000_000);
        assert_eq!(u.cpu.online_cpus, Some(2));
        assert_eq!(u.cpu.periods, 2318);
        assert_eq!(u.cpu.throttled_periods, 2316);
        assert_eq!(u.cpu.throttled_ns, 115_594_294_920);
        assert_eq!(u.memory.usage_bytes, 327_680);
        // total_inactive_file is 0 here, so the working set equals usage.
        assert_eq!(u.memory.working_set_bytes, 327_680);
        assert_eq!(u.memory.rss_bytes, 57_344);
        assert_eq!(u.memory.cache_bytes, 0);
        assert_eq!(u.memory.limit_bytes, Some(67_108_864));
        assert_eq!(u.memory.failcnt, None);
        assert_eq!(u.networks.len(), 1);
        assert_eq!(u.networks[0].interface, "eth0");
        assert_eq!(u.networks[0].rx_bytes, 1392);
        assert_eq!(u.networks[0].rx_packets, 16);
        assert_eq!(u.pids_current, Some(1));
        assert_eq!(u.pids_limit, None);
        assert_eq!(u.memory_usage_ratio(None), Some(327_680.0 / 67_108_864.0));
    }

    #[test]
    fn cgroup_v1_unlimited_memory_reports_no_limit_and_subtracts_inactive_file() {
        let m = meta("inspect-fx-unlimited.json");
        let u = usage("stats-v1-fx-unlimited.json", &m);
        // The engine substitutes host memory (25276071936) for "no limit": not exported.
        assert_eq!(u.memory.limit_bytes, None);
        assert_eq!(u.memory.usage_bytes, 22_528_000);
        assert_eq!(u.memory.working_set_bytes, 22_528_000 - 21_307_392);
        assert_eq!(u.memory.cache_bytes, 21_323_776);
        // MEM % of an unlimited container is relative to host memory, as docker stats shows.
        let ratio = u.memory_usage_ratio(Some(25_276_071_936)).unwrap();
        assert!((ratio - 1_220_608.0 / 25_276_071_936.0).abs() < 1e-12);
    }

    #[test]
    fn host_and_none_networking_have_no_interfaces() {
        for (inspect, stats) in [
            ("inspect-fx-hostnet.json", "stats-v1-fx-hostnet.json"),
            ("inspect-fx-nonet.json", "stats-v1-fx-nonet.json"),
        ] {
            let m = meta(inspect);
            assert!(!m.has_own_network(), "{inspect}");
            let u = usage(stats, &m);
            assert!(u.networks.is_empty(), "{inspect}");
        }
        let m = meta("inspect-fx-nonet.json");
        assert_eq!(m.pids_limit, Some(50));
        assert_eq!(usage("stats-v1-fx-nonet.json", &m).pids_limit, Some(50));
    }

    #[test]
    fn cgroup_v1_block_io_sums_read_and_write_only() {
        let m = meta("inspect-fx-dd2.json");
        let u = usage("stats-v1-blkio.json", &m);
        assert_eq!(u.blkio.write_bytes, 20_971_520);
        assert_eq!(u.blkio.read_bytes, 0);
        assert_eq!(u.blkio.write_ops, 20);
        assert_eq!(u.blkio.read_ops, 0);
    }

    #[test]
    fn stopped_container_payload_is_no_sample() {
        let m = meta("inspect-fx-hostnet.json");
        let stats: ContainerStatsResponse = fixture("stats-v1-stopped.json");
        assert!(usage_from_stats(&stats, &m).is_none());
    }

    fn v2_meta(memory_limit: Option<u64>) -> ContainerMeta {
        let mut m = meta("inspect-s1.json");
        m.memory_limit_bytes = memory_limit;
        m
    }

    #[test]
    fn cgroup_v2_memory_block_io_and_cpu() {
        let m = v2_meta(Some(512 << 20));
        let u = usage("stats-v2-limited.json", &m);
        assert_eq!(u.cpu.total_ns, 8_500_000_000);
        assert_eq!(u.cpu.user_ns, 7_000_000_000);
        assert_eq!(u.cpu.system_ns, 1_500_000_000);
        // No percpu_usage on v2: online_cpus is the count.
        assert_eq!(u.cpu.online_cpus, Some(4));
        assert_eq!(u.cpu.throttled_periods, 300);
        assert_eq!(u.cpu.throttled_ns, 45_000_000_000);
        assert_eq!(u.memory.usage_bytes, 209_715_200);
        assert_eq!(u.memory.working_set_bytes, 209_715_200 - 41_943_040);
        assert_eq!(u.memory.rss_bytes, 125_829_120);
        assert_eq!(u.memory.cache_bytes, 83_886_080);
        assert_eq!(u.memory.limit_bytes, Some(536_870_912));
        assert_eq!(u.blkio.read_bytes, 4_096_000 + 1000);
        assert_eq!(u.blkio.write_bytes, 10_485_760 + 24);
        assert_eq!(u.pids_current, Some(7));
        assert_eq!(u.pids_limit, Some(100));
        assert_eq!(u.networks.len(), 2);
        assert_eq!(u.net_rx_bytes(), 124_456);
        assert_eq!(u.net_tx_bytes(), 656_321);
        assert_eq!(u.networks[0].rx_errors, 1);
        assert_eq!(u.networks[0].tx_dropped, 4);
    }

    #[test]
    fn cgroup_v2_unlimited_container() {
        let m = v2_meta(None);
        let u = usage("stats-v2-unlimited.json", &m);
        assert_eq!(u.memory.limit_bytes, None);
        assert_eq!(u.memory.working_set_bytes, 8_388_608 - 1_048_576);
        assert_eq!(u.memory.rss_bytes, 6_291_456);
        assert_eq!(u.memory.cache_bytes, 2_097_152);
        assert_eq!(u.cpu.online_cpus, Some(8));
        assert_eq!(u.pids_limit, None);
        assert_eq!(u.blkio, BlkioUsage::default());
    }

    #[test]
    fn restarted_container_under_same_id_gives_no_negative_rate() {
        let m = meta("inspect-s1.json");
        let before = usage("stats-v1-s1.json", &m);
        let mut after: ContainerStatsResponse = fixture("stats-v1-s1.json");
        after.read = Some("2026-12-03T12:52:17.844692206Z".into());
        if let Some(cpu) = after.cpu_stats.as_mut().and_then(|c| c.cpu_usage.as_mut()) {
            cpu.total_usage = Some(1_000_000);
        }
        let mut after = usage_from_stats(&after, &m).unwrap();
        after.derive_rates(Some(&before));
        assert_eq!(after.rates.cpu_cores, None);
        // Counters are exported as read; Prometheus's rate() treats the drop as a reset.
        assert_eq!(after.cpu.total_ns, 1_000_000);
    }

    #[test]
    fn limit_is_the_smaller_of_configured_and_kernel() {
        let m = v2_meta(Some(1 << 30));
        let stat = HashMap::from([("anon".to_string(), 10)]);
        let mem = memory_from_stat(100, &stat, None, Some(512 << 20), &m);
        assert_eq!(mem.limit_bytes, Some(512 << 20));
        let mem = memory_from_stat(100, &stat, None, Some(u64::MAX), &m);
        assert_eq!(mem.limit_bytes, Some(1 << 30));
        // No inactive_file key: the working set is the usage.
        assert_eq!(mem.working_set_bytes, 100);
    }
}
