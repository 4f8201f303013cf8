//! Host figures: CPU, memory, load, filesystems, disks, network, TCP connections.
//!
//! One long-lived `sysinfo::System` is kept across cycles for CPU usage, which is a delta
//! between two refreshes; it is primed at construction and refreshes nothing else. Every
//! other figure comes from files under `--path.procfs` (parsed in [`procfs`]) and from
//! `statvfs` on the mounts under `--path.rootfs` ([`filesystem`]).
//!
//! Network figures (`net/dev`, `net/tcp`, `net/tcp6`) are read from `<procfs>/1/net/`, the
//! network namespace of PID 1, falling back to `<procfs>/net/` (dockwatch's own namespace).
//! With the host's `/proc` that is the host's network namespace even when dockwatch runs in
//! a container with a network of its own.
//!
//! A missing or unreadable file leaves out the families it feeds and is logged at debug;
//! only when nothing at all can be read does [`HostCollector::collect`] fail.

pub mod filesystem;
pub mod procfs;

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prometheus_client::encoding::DescriptorEncoder;
use sysinfo::{CpuRefreshKind, MINIMUM_CPU_UPDATE_INTERVAL, RefreshKind, System};
use tracing::debug;

use crate::error_chain;
use crate::metrics::{Family, Kind, Label, label};
use filesystem::{Filesystem, StatFs};
use procfs::{CpuTicks, DiskStats, LoadAvg, MemInfo, NetDev, ParseError, TCP_STATES};

/// How long one `statvfs` may take before its mount is skipped.
const STATFS_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors reading the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// sysinfo could not start.
    #[error("initialising host reader: {0}")]
    Init(String),
    /// A `/proc` file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file was read but a field did not parse.
    #[error("parsing {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line, field and value.
        error: ParseError,
    },
    /// Not one host file could be read: `--path.procfs` is probably wrong.
    #[error("no host figures readable under {}: {}", procfs.display(), error_chain(first))]
    Unreadable {
        /// `--path.procfs`.
        procfs: PathBuf,
        /// The first failure.
        first: Box<HostError>,
    },
}

/// CPU usage of one core over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreUsage {
    /// CPU number, as in `/proc/stat`.
    pub cpu: u32,
    /// Busy fraction, 0–1.
    pub usage_ratio: f64,
}

/// Kernel activity counters from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Boot time, Unix seconds.
    pub boot_time_seconds: Option<u64>,
    /// Context switches since boot.
    pub context_switches: Option<u64>,
    /// Forks since boot.
    pub forks: Option<u64>,
    /// Runnable tasks.
    pub procs_running: Option<u64>,
    /// Tasks blocked on I/O.
    pub procs_blocked: Option<u64>,
}

/// One reading of the host. Families whose source could not be read are empty or `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSnapshot {
    /// Whole-host CPU busy fraction over the last interval, 0–1.
    pub cpu_usage_ratio: f64,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory; 0 when `/proc/meminfo` could not be read.
    pub memory_total_bytes: u64,
    /// Memory available for new work without swapping.
    pub memory_available_bytes: u64,
    /// Total minus available.
    pub memory_used_bytes: u64,
    /// The rest of `/proc/meminfo` (free, buffers, cached, swap).
    pub memory: Option<MemInfo>,
    /// Per-CPU mode times from `/proc/stat`.
    pub cpu_ticks: Vec<CpuTicks>,
    /// Per-core usage over the last interval.
    pub core_usage: Vec<CoreUsage>,
    /// Current frequency per CPU in hertz, `(cpu, hertz)`.
    pub cpu_frequency_hertz: Vec<(u32, u64)>,
    /// Load averages.
    pub load: Option<LoadAvg>,
    /// Boot time, context switches, forks, process counts.
    pub kernel: KernelCounters,
    /// Real filesystems, one per device.
    pub filesystems: Vec<Filesystem>,
    /// Whole disks (no partitions, RAM, loop or zram devices).
    pub disks: Vec<DiskStats>,
    /// Network interfaces of PID 1's network namespace (the host's, given the host's /proc).
    pub network: Vec<NetDev>,
    /// TCP sockets (IPv4 and IPv6) per state, indexed like [`procfs::TCP_STATES`].
    pub tcp_connections: Option<[u64; 11]>,
}

fn owned<'a>(key: &'a str, value: String) -> Label<'a> {
    (Cow::Borrowed(key), Cow::Owned(value))
}

impl HostSnapshot {
    /// Writes the host metric families.
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        use Kind::{Counter, Gauge};

        let mut seconds = Family::new(
            "dockwatch_host_cpu_seconds",
            "Time each host CPU spent in each mode (from /proc/stat)",
            Counter,
        );
        for t in &self.cpu_ticks {
            for (mode, ticks) in CpuTicks::MODES.iter().zip(t.modes()) {
                seconds.push(
                    vec![owned("cpu", t.cpu.to_string()), label("mode", mode)],
                    ticks as f64 / procfs::USER_HZ,
                );
            }
        }
        seconds.encode(enc)?;
        Family::new(
            "dockwatch_host_cpu_usage_ratio",
            "Busy fraction of all host CPUs over the last collection interval (0-1)",
            Gauge,
        )
        .sample(&[], self.cpu_usage_ratio)
        .encode(enc)?;
        let mut cores = Family::new(
            "dockwatch_host_cpu_core_usage_ratio",
            "Busy fraction of each host CPU over the last collection interval (0-1)",
            Gauge,
        );
        for c in &self.core_usage {
            cores.push(vec![owned("cpu", c.cpu.to_string())], c.usage_ratio);
        }
        cores.encode(enc)?;
        Family::new("dockwatch_host_cpus", "Logical CPUs on the host", Gauge)
            .sample(&[], self.cpus as f64)
            .encode(enc)?;
        let mut freq = Family::new(
            "dockwatch_host_cpu_frequency_hertz",
            "Current frequency of each host CPU (cpufreq, else /proc/cpuinfo)",
            Gauge,
        );
        for (cpu, hz) in &self.cpu_frequency_hertz {
            freq.push(vec![owned("cpu", cpu.to_string())], *hz as f64);
        }
        freq.encode(enc)?;

        if let Some(load) = &self.load {
            for (name, help, v) in [
                (
                    "dockwatch_host_load1",
                    "Host load average over 1 minute",
                    load.load1,
                ),
                (
                    "dockwatch_host_load5",
                    "Host load average over 5 minutes",
                    load.load5,
                ),
                (
                    "dockwatch_host_load15",
                    "Host load average over 15 minutes",
                    load.load15,
                ),
            ] {
                Family::new(name, help, Gauge).sample(&[], v).encode(enc)?;
            }
        }

        if self.memory_total_bytes > 0 {
            Family::new(
                "dockwatch_host_memory_total_bytes",
                "Total host memory",
                Gauge,
            )
            .sample(&[], self.memory_total_bytes as f64)
            .encode(enc)?;
            Family::new(
                "dockwatch_host_memory_available_bytes",
                "Host memory available without swapping (MemAvailable)",
                Gauge,
            )
            .sample(&[], self.memory_available_bytes as f64)
            .encode(enc)?;
            Family::new(
                "dockwatch_host_memory_used_bytes",
                "Host memory in use: total minus available",
                Gauge,
            )
            .sample(&[], self.memory_used_bytes as f64)
            .encode(enc)?;
        }
        if let Some(m) = &self.memory {
            for (name, help, v) in [
                (
                    "dockwatch_host_memory_free_bytes",
                    "Unused host memory (MemFree)",
                    m.free,
                ),
                (
                    "dockwatch_host_memory_buffers_bytes",
                    "Host memory in block device buffers (Buffers)",
                    m.buffers,
                ),
                (
                    "dockwatch_host_memory_cached_bytes",
                    "Host page cache (Cached)",
                    m.cached,
                ),
                (
                    "dockwatch_host_swap_total_bytes",
                    "Total host swap space",
                    m.swap_total,
                ),
                (
                    "dockwatch_host_swap_free_bytes",
                    "Unused host swap space",
                    m.swap_free,
                ),
                (
                    "dockwatch_host_swap_used_bytes",
                    "Host swap space in use: total minus free",
                    m.swap_total.saturating_sub(m.swap_free),
                ),
            ] {
                Family::new(name, help, Gauge)
                    .sample(&[], v as f64)
                    .encode(enc)?;
            }
        }

        self.encode_filesystems(enc)?;
        self.encode_disks(enc)?;
        self.encode_network(enc)?;

        if let Some(counts) = &self.tcp_connections {
            let mut tcp = Family::new(
                "dockwatch_host_tcp_connections",
                "Host TCP sockets (IPv4 and IPv6) by state, from /proc/net/tcp and tcp6",
                Gauge,
            );
            for (state, n) in TCP_STATES.iter().zip(counts) {
                tcp.push(vec![label("state", state)], *n as f64);
            }
            tcp.encode(enc)?;
        }

        let k = &self.kernel;
        let kernel = [
            (
                "dockwatch_host_boot_time_seconds",
                "Unix time the host booted",
                Gauge,
                k.boot_time_seconds,
            ),
            (
                "dockwatch_host_context_switches",
                "Context switches on the host since boot",
                Counter,
                k.context_switches,
            ),
            (
                "dockwatch_host_forks",
                "Processes and threads created on the host since boot",
                Counter,
                k.forks,
            ),
            (
                "dockwatch_host_procs_running",
                "Host tasks runnable now",
                Gauge,
                k.procs_running,
            ),
            (
                "dockwatch_host_procs_blocked",
                "Host tasks blocked on I/O now",
                Gauge,
                k.procs_blocked,
            ),
        ];
        for (name, help, kind, v) in kernel {
            if let Some(v) = v {
                Family::new(name, help, kind)
                    .sample(&[], v as f64)
                    .encode(enc)?;
            }
        }
        Ok(())
    }

    fn encode_filesystems(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        type Get = fn(&Filesystem) -> f64;
        let families: [(&str, &str, Get); 6] = [
            (
                "dockwatch_host_filesystem_size_bytes",
                "Size of each real host filesystem",
                |f| f.size_bytes as f64,
            ),
            (
                "dockwatch_host_filesystem_avail_bytes",
                "Space on each host filesystem available to unprivileged users",
                |f| f.avail_bytes as f64,
            ),
            (
                "dockwatch_host_filesystem_free_bytes",
                "Free space on each host filesystem, including space reserved for root",
                |f| f.free_bytes as f64,
            ),
            (
                "dockwatch_host_filesystem_files",
                "Inodes of each host filesystem",
                |f| f.files as f64,
            ),
            (
                "dockwatch_host_filesystem_files_free",
                "Free inodes of each host filesystem",
                |f| f.files_free as f64,
            ),
            (
                "dockwatch_host_filesystem_readonly",
                "1 when the host filesystem is mounted read-only",
                |f| if f.readonly { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, get) in families {
            let mut family = Family::new(name, help, Kind::Gauge);
            for f in &self.filesystems {
                family.push(
                    vec![
                        label("device", &f.device),
                        label("mountpoint", &f.mount_point),
                        label("fstype", &f.fstype),
                    ],
                    get(f),
                );
            }
            family.encode(enc)?;
        }
        Ok(())
    }

    fn encode_disks(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        type Get = fn(&DiskStats) -> f64;
        let families: [(&str, &str, Get); 5] = [
            (
                "dockwatch_host_disk_read_bytes",
                "Bytes read from each host disk",
                |d| d.sectors_read as f64 * procfs::SECTOR_BYTES as f64,
            ),
            (
                "dockwatch_host_disk_written_bytes",
                "Bytes written to each host disk",
                |d| d.sectors_written as f64 * procfs::SECTOR_BYTES as f64,
            ),
            (
                "dockwatch_host_disk_reads_completed",
                "Reads completed on each host disk",
                |d| d.reads_completed as f64,
            ),
            (
                "dockwatch_host_disk_writes_completed",
                "Writes completed on each host disk",
                |d| d.writes_completed as f64,
            ),
            (
                "dockwatch_host_disk_io_time_seconds",
                "Time each host disk had I/O in flight",
                |d| d.io_time_ms as f64 / 1000.0,
            ),
        ];
        for (name, help, get) in families {
            let mut family = Family::new(name, help, Kind::Counter);
            for d in &self.disks {
                family.push(vec![label("device", &d.device)], get(d));
            }
            family.encode(enc)?;
        }
        Ok(())
    }

    fn encode_network(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        type Get = fn(&NetDev) -> u64;
        let families: [(&str, &str, Get); 8] = [
            (
                "dockwatch_host_network_receive_bytes",
                "Bytes received on each host network interface",
                |n| n.receive_bytes,
            ),
            (
                "dockwatch_host_network_receive_packets",
                "Packets received on each host network interface",
                |n| n.receive_packets,
            ),
            (
                "dockwatch_host_network_receive_errors",
                "Receive errors on each host network interface",
                |n| n.receive_errors,
            ),
            (
                "dockwatch_host_network_receive_dropped",
                "Received packets dropped on each host network interface",
                |n| n.receive_dropped,
            ),
            (
                "dockwatch_host_network_transmit_bytes",
                "Bytes sent on each host network interface",
                |n| n.transmit_bytes,
            ),
            (
                "dockwatch_host_network_transmit_packets",
                "Packets sent on each host network interface",
                |n| n.transmit_packets,
            ),
            (
                "dockwatch_host_network_transmit_errors",
                "Transmit errors on each host network interface",
                |n| n.transmit_errors,
            ),
            (
                "dockwatch_host_network_transmit_dropped",
                "Packets dropped on transmit on each host network interface",
                |n| n.transmit_dropped,
            ),
        ];
        for (name, help, get) in families {
            let mut family = Family::new(name, help, Kind::Counter);
            for n in &self.network {
                family.push(vec![label("interface", &n.interface)], get(n) as f64);
            }
            family.encode(enc)?;
        }
        Ok(())
    }
}

/// Reads the host; keep one per process.
pub struct HostCollector {
    system: System,
    cpu_refreshed: Instant,
    procfs: PathBuf,
    rootfs: PathBuf,
    sysfs: PathBuf,
    statfs: StatFs,
}

impl fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCollector")
            .field("procfs", &self.procfs)
            .field("rootfs", &self.rootfs)
            .finish()
    }
}

/// Tracks which sources of one collection could be read.
#[derive(Default)]
struct Reads {
    ok: usize,
    first_error: Option<HostError>,
}

impl Reads {
    fn failed(&mut self, e: HostError) {
        debug!(error = %error_chain(&e), "host source skipped");
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

impl HostCollector {
    /// Reads `/proc` files under `procfs` and filesystems under `rootfs` (`/` outside a
    /// container). Primes the CPU counters so the first collection has a delta to work with.
    pub fn new(procfs: PathBuf, rootfs: PathBuf) -> Result<Self, HostError> {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_usage()),
        )
        .map_err(|e| HostError::Init(e.to_string()))?;
        Ok(Self {
            system,
            cpu_refreshed: Instant::now(),
            procfs,
            rootfs,
            sysfs: PathBuf::from("/sys"),
            statfs: StatFs::new(STATFS_TIMEOUT),
        })
    }

    /// Takes one reading. Blocking: at most a few hundred milliseconds on the first call,
    /// plus up to the `statvfs` timeout per unresponsive mount.
    pub fn collect(&mut self) -> Result<HostSnapshot, HostError> {
        let mut reads = Reads::default();
        let mut snap = HostSnapshot::default();

        self.collect_cpu_usage(&mut snap);

        if let Some(stat) = self.parse_file(&mut reads, "stat", procfs::parse_stat) {
            snap.cpus = stat.cpus.len();
            snap.cpu_ticks = stat.cpus;
            snap.kernel = KernelCounters {
                boot_time_seconds: stat.boot_time_seconds,
                context_switches: stat.context_switches,
                forks: stat.forks,
                procs_running: stat.procs_running,
                procs_blocked: stat.procs_blocked,
            };
        }
        if snap.cpus == 0 {
            snap.cpus = self.system.cpus().len();
        }
        if let Some(m) = self.parse_file(&mut reads, "meminfo", procfs::parse_meminfo) {
            snap.memory_total_bytes = m.total;
            snap.memory_available_bytes = m.available;
            snap.memory_used_bytes = m.total.saturating_sub(m.available);
            snap.memory = Some(m);
        }
        snap.load = self.parse_file(&mut reads, "loadavg", procfs::parse_loadavg);
        snap.cpu_frequency_hertz = self.cpu_frequencies(&mut reads, &snap.cpu_ticks);
        snap.filesystems = self.filesystems(&mut reads);
        if let Some(disks) = self.parse_file(&mut reads, "diskstats", procfs::parse_diskstats) {
            snap.disks = disks
                .into_iter()
                .filter(|d| !procfs::disk_excluded(&d.device))
                .collect();
        }
        if let Some(net) =
            self.parse_first(&mut reads, &["1/net/dev", "net/dev"], procfs::parse_net_dev)
        {
            snap.network = net;
        }
        snap.tcp_connections = self.tcp_connections(&mut reads);

        if reads.ok == 0 {
            let first = reads.first_error.unwrap_or_else(|| HostError::Read {
                path: self.procfs.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
            return Err(HostError::Unreadable {
                procfs: self.procfs.clone(),
                first: Box::new(first),
            });
        }
        Ok(snap)
    }

    /// Whole-host and per-core usage since the previous refresh. sysinfo needs
    /// `MINIMUM_CPU_UPDATE_INTERVAL` between refreshes for a meaningful delta, so a call
    /// right after construction waits out the rest of it.
    fn collect_cpu_usage(&mut self, snap: &mut HostSnapshot) {
        let since = self.cpu_refreshed.elapsed();
        if since < MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        self.system.refresh_cpu_usage();
        self.cpu_refreshed = Instant::now();
        snap.cpu_usage_ratio = ratio(self.system.global_cpu_usage());
        snap.core_usage = self
            .system
            .cpus()
            .iter()
            .filter_map(|c| {
                let cpu = c.name().strip_prefix("cpu")?.parse().ok()?;
                Some(CoreUsage {
                    cpu,
                    usage_ratio: ratio(c.usage()),
                })
            })
            .collect();
    }

    fn parse_file<T>(
        &self,
        reads: &mut Reads,
        rel: &str,
        parse: impl Fn(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        self.parse_first(reads, &[rel], parse)
    }

    /// The first of `rels` that reads and parses. Only when all fail is a failure recorded
    /// (the last one's).
    fn parse_first<T>(
        &self,
        reads: &mut Reads,
        rels: &[&str],
        parse: impl Fn(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let mut last = None;
        for rel in rels {
            let path = self.procfs.join(rel);
            let res = std::fs::read_to_string(&path)
                .map_err(|source| HostError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse(&text).map_err(|error| HostError::Parse { path, error }));
            match res {
                Ok(v) => {
                    reads.ok += 1;
                    return Some(v);
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            reads.failed(e);
        }
        None
    }

    /// cpufreq's `scaling_cur_freq` (kHz) for each CPU in `/proc/stat`, else the per-processor
    /// `cpu MHz` of `/proc/cpuinfo`.
    fn cpu_frequencies(&self, reads: &mut Reads, cpus: &[CpuTicks]) -> Vec<(u32, u64)> {
        let sysfs: Vec<(u32, u64)> = cpus
            .iter()
            .filter_map(|t| {
                let path = self.sysfs.join(format!(
                    "devices/system/cpu/cpu{}/cpufreq/scaling_cur_freq",
                    t.cpu
                ));
                let khz: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
                Some((t.cpu, khz * 1000))
            })
            .collect();
        if !sysfs.is_empty() {
            return sysfs;
        }
        self.parse_file(reads, "cpuinfo", procfs::parse_cpuinfo_mhz)
            .unwrap_or_default()
    }

    fn filesystems(&self, reads: &mut Reads) -> Vec<Filesystem> {
        let Some(mounts) = self.parse_first(
            reads,
            &["1/mountinfo", "self/mountinfo"],
            procfs::parse_mountinfo,
        ) else {
            return Vec::new();
        };
        filesystem::select(&mounts, &self.rootfs)
            .iter()
            .filter_map(|t| self.statfs.measure(t))
            .collect()
    }

    fn tcp_connections(&self, reads: &mut Reads) -> Option<[u64; 11]> {
        let mut counts = [0u64; 11];
        let mut any = false;
        for rels in [["1/net/tcp", "net/tcp"], ["1/net/tcp6", "net/tcp6"]] {
            // tcp6 is absent when IPv6 is disabled; the family is still complete.
            let parsed = self.parse_first(reads, &rels, |text| {
                let mut c = [0u64; 11];
                procfs::count_tcp_states(text, &mut c).map(|()| c)
            });
            if let Some(c) = parsed {
                any = true;
                for (total, n) in counts.iter_mut().zip(c) {
                    *total += n;
                }
            }
        }
        any.then_some(counts)
    }
}

/// sysinfo's percent as a 0–1 ratio, clamped against rounding above 100.
fn ratio(percent: f32) -> f64 {
    (f64::from(percent) / 100.0).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_root() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc"))
    }

    fn collector(procfs: PathBuf) -> HostCollector {
        let mut c = HostCollector::new(procfs, PathBuf::from("/nonexistent-rootfs")).unwrap();
        // No cpufreq: frequencies come from the fixture's cpuinfo.
        c.sysfs = PathBuf::from("/nonexistent-sysfs");
        c
    }

    fn render(snap: &HostSnapshot) -> String {
        struct One(HostSnapshot);
        impl fmt::Debug for One {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("One")
            }
        }
        impl prometheus_client::collector::Collector for One {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
                self.0.encode(&mut enc)
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(One(snap.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    }

    #[test]
    fn collects_the_fixture_tree() {
        let snap = collector(fixture_root()).collect().unwrap();
        assert_eq!(snap.cpus, 2);
        assert_eq!(snap.cpu_ticks.len(), 2);
        assert_eq!(snap.cpu_ticks[1].idle, 73697);
        assert_eq!(snap.memory_total_bytes, 24683664 * 1024);
        assert_eq!(snap.memory_available_bytes, 23755404 * 1024);
        assert_eq!(snap.memory_used_bytes, (24683664 - 23755404) * 1024);
        assert_eq!(snap.memory.unwrap().swap_free, 1835004 * 1024);
        assert_eq!(snap.load.unwrap().load15, 0.83);
        assert_eq!(snap.kernel.boot_time_seconds, Some(1796301935));
        assert_eq!(
            snap.cpu_frequency_hertz,
            vec![(0, 2_245_786_000), (1, 3_100_000_000)]
        );
        let disks: Vec<&str> = snap.disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(disks, ["sda", "nvme0n1", "dm-0", "vda", "mmcblk0"]);
        assert_eq!(snap.network.len(), 4);
        assert_eq!(snap.tcp_connections.unwrap()[0], 3);
        // The fixture's mounts do not exist under the rootfs given: statvfs fails, skipped.
        assert!(snap.filesystems.is_empty());
        assert!((0.0..=1.0).contains(&snap.cpu_usage_ratio));
    }

    #[test]
    fn missing_files_leave_out_their_families_only() {
        let dir =
            std::env::temp_dir().join(format!("dockwatch-host-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture_root().join("loadavg"), dir.join("loadavg")).unwrap();
        std::fs::write(dir.join("meminfo"), "MemTotal: 1 kB\nMemFree: x kB\n").unwrap();
        let snap = collector(dir.clone()).collect().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(snap.load.unwrap().load1, 2.02);
        assert_eq!(snap.memory, None);
        assert_eq!(snap.memory_total_bytes, 0);
        assert!(snap.cpu_ticks.is_empty());
        assert_eq!(snap.tcp_connections, None);
        // Falls back to sysinfo's CPU list.
        assert!(snap.cpus > 0);
        let text = render(&snap);
        assert!(text.contains("dockwatch_host_load1 2.02"), "{text}");
        assert!(
            !text.contains("dockwatch_host_memory_total_bytes"),
            "{text}"
        );
        assert!(!text.contains("dockwatch_host_cpu_seconds_total"), "{text}");
    }

    #[test]
    fn network_prefers_the_namespace_of_pid_1() {
        let dir = std::env::temp_dir().join(format!("dockwatch-host-netns-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1/net")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let header = "h1\nh2\n";
        std::fs::write(
            dir.join("net/dev"),
            format!("{header}  eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("1/net/dev"),
            format!("{header}  ens3: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n"),
        )
        .unwrap();
        // PID 1's tcp is unreadable here (garbage), so dockwatch's own is used.
        std::fs::write(dir.join("1/net/tcp"), "header\n 0: a b ZZ\n").unwrap();
        std::fs::copy(fixture_root().join("net/tcp"), dir.join("net/tcp")).unwrap();
        let snap = collector(dir.clone()).collect().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let names: Vec<&str> = snap.network.iter().map(|n| n.interface.as_str()).collect();
        assert_eq!(names, ["ens3"]);
        let tcp = snap.tcp_connections.unwrap();
        assert_eq!((tcp[0], tcp[5], tcp[9]), (2, 2, 1));
    }

    #[test]
    fn parse_errors_name_file_line_field_and_value() {
        let error = procfs::parse_meminfo("MemTotal: 1 kB\nMemFree: x kB\n").unwrap_err();
        let e = HostError::Parse {
            path: PathBuf::from("/host/proc/meminfo"),
            error,
        };
        assert_eq!(
            error_chain(&e),
            r#"parsing /host/proc/meminfo: line 2: field MemFree: invalid value "x""#
        );
    }

    #[test]
    fn nothing_readable_is_an_error() {
        let mut c = collector(PathBuf::from("/nonexistent-procfs"));
        let err = c.collect().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "no host figures readable under /nonexistent-procfs: \
                 reading /nonexistent-procfs/stat: No such file or directory"
            ),
            "{msg}"
        );
    }

    #[test]
    fn encodes_exact_values() {
        let mut snap = collector(fixture_root()).collect().unwrap();
        snap.cpu_usage_ratio = 0.25;
        snap.core_usage = vec![
            CoreUsage {
                cpu: 0,
                usage_ratio: 0.5,
            },
            CoreUsage {
                cpu: 1,
                usage_ratio: 0.0,
            },
        ];
        snap.filesystems = vec![Filesystem {
            device: "/dev/vda".into(),
            mount_point: "/".into(),
            fstype: "ext4".into(),
            size_bytes: 1000,
            free_bytes: 600,
            avail_bytes: 500,
            files: 10,
            files_free: 4,
            readonly: false,
        }];
        let text = render(&snap);

        assert_eq!(
            lines_of(&text, "dockwatch_host_cpu_seconds_total")[..9],
            [
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="user"} 508.3"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="nice"} 0.1"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="system"} 34.48"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="idle"} 489.95"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="iowait"} 2.74"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="irq"} 0.03"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="softirq"} 0.4"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="0",mode="steal"} 4.28"#,
                r#"dockwatch_host_cpu_seconds_total{cpu="1",mode="user"} 233.55"#,
            ]
        );
        assert!(
            text.contains("# TYPE dockwatch_host_cpu_seconds counter"),
            "{text}"
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_cpu_usage_ratio"),
            ["dockwatch_host_cpu_usage_ratio 0.25"]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_cpu_core_usage_ratio"),
            [
                r#"dockwatch_host_cpu_core_usage_ratio{cpu="0"} 0.5"#,
                r#"dockwatch_host_cpu_core_usage_ratio{cpu="1"} 0.0"#
            ]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_cpus"),
            ["dockwatch_host_cpus 2.0"]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_cpu_frequency_hertz"),
            [
                r#"dockwatch_host_cpu_frequency_hertz{cpu="0"} 2245786000.0"#,
                r#"dockwatch_host_cpu_frequency_hertz{cpu="1"} 3100000000.0"#
            ]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_load5"),
            ["dockwatch_host_load5 1.31"]
        );
        for (name, value) in [
            ("dockwatch_host_memory_total_bytes", 25276071936u64),
            ("dockwatch_host_memory_available_bytes", 24325533696),
            ("dockwatch_host_memory_used_bytes", 950538240),
            ("dockwatch_host_memory_free_bytes", 17629822976),
            ("dockwatch_host_memory_buffers_bytes", 35491840),
            ("dockwatch_host_memory_cached_bytes", 6722527232),
            ("dockwatch_host_swap_total_bytes", 2147479552),
            ("dockwatch_host_swap_free_bytes", 1879044096),
            ("dockwatch_host_swap_used_bytes", 268435456),
        ] {
            assert_eq!(
                lines_of(&text, name),
                [format!("{name} {value}.0")],
                "{name}"
            );
        }
        assert_eq!(
            lines_of(&text, "dockwatch_host_filesystem_avail_bytes"),
            [concat!(
                r#"dockwatch_host_filesystem_avail_bytes"#,
                r#"{device="/dev/vda",mountpoint="/",fstype="ext4"} 500.0"#
            )]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_disk_read_bytes_total")[3],
            r#"dockwatch_host_disk_read_bytes_total{device="vda"} 3582399488.0"#
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_disk_io_time_seconds_total")[3],
            r#"dockwatch_host_disk_io_time_seconds_total{device="vda"} 34.94"#
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_disk_writes_completed_total")[0],
            r#"dockwatch_host_disk_writes_completed_total{device="sda"} 53712.0"#
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_network_receive_dropped_total")[1],
            r#"dockwatch_host_network_receive_dropped_total{interface="eth0"} 7.0"#
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_network_transmit_bytes_total")[0],
            r#"dockwatch_host_network_transmit_bytes_total{interface="lo"} 160455.0"#
        );
        let tcp = lines_of(&text, "dockwatch_host_tcp_connections");
        assert_eq!(tcp.len(), 11);
        assert_eq!(
            tcp[0],
            r#"dockwatch_host_tcp_connections{state="established"} 3.0"#
        );
        assert_eq!(
            tcp[9],
            r#"dockwatch_host_tcp_connections{state="listen"} 2.0"#
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_boot_time_seconds"),
            ["dockwatch_host_boot_time_seconds 1796301935.0"]
        );
        assert_eq!(
            lines_of(&text, "dockwatch_host_context_switches_total"),
            ["dockwatch_host_context_switches_total 584041.0"]
        );
    }
}
