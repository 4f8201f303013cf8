//! Host figures: CPU, memory, load, filesystems, disks, network, TCP connections.
//!
//! One long-lived `sysinfo::System` is kept across cycles (CPU usage is a delta between two
//! refreshes); `/proc` fills in what sysinfo lacks.

use std::fmt;
use std::path::PathBuf;

use prometheus_client::encoding::DescriptorEncoder;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::metrics::{Family, Kind};

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
}

/// One reading of the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSnapshot {
    /// Whole-host CPU busy fraction over the last interval, 0–1.
    pub cpu_usage_ratio: f64,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory.
    pub memory_total_bytes: u64,
    /// Memory available for new work without swapping.
    pub memory_available_bytes: u64,
    /// Total minus available.
    pub memory_used_bytes: u64,
}

impl HostSnapshot {
    /// Writes the host metric families.
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        Family::new(
            "dockwatch_host_cpu_usage_ratio",
            "Busy fraction of all host CPUs over the last collection interval (0-1)",
            Kind::Gauge,
        )
        .sample(&[], self.cpu_usage_ratio)
        .encode(enc)?;
        Family::new(
            "dockwatch_host_cpus",
            "Logical CPUs on the host",
            Kind::Gauge,
        )
        .sample(&[], self.cpus as f64)
        .encode(enc)?;
        Family::new(
            "dockwatch_host_memory_total_bytes",
            "Total host memory",
            Kind::Gauge,
        )
        .sample(&[], self.memory_total_bytes as f64)
        .encode(enc)?;
        Family::new(
            "dockwatch_host_memory_available_bytes",
            "Host memory available without swapping (MemAvailable)",
            Kind::Gauge,
        )
        .sample(&[], self.memory_available_bytes as f64)
        .encode(enc)?;
        Family::new(
            "dockwatch_host_memory_used_bytes",
            "Host memory in use: total minus available",
            Kind::Gauge,
        )
        .sample(&[], self.memory_used_bytes as f64)
        .encode(enc)
    }
}

/// Reads the host; keep one per process.
pub struct HostCollector {
    system: System,
    #[allow(dead_code)]
    proc_root: PathBuf,
}

impl fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCollector")
            .field("proc_root", &self.proc_root)
            .finish()
    }
}

impl HostCollector {
    /// Primes the CPU counters so the first collection has a delta to work with.
    pub fn new(proc_root: PathBuf) -> Result<Self, HostError> {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::everything())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(|e| HostError::Init(e.to_string()))?;
        Ok(Self { system, proc_root })
    }

    /// Takes one reading. Blocking.
    pub fn collect(&mut self) -> Result<HostSnapshot, HostError> {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        Ok(HostSnapshot {
            cpu_usage_ratio: f64::from(self.system.global_cpu_usage()) / 100.0,
            cpus: self.system.cpus().len(),
            memory_total_bytes: total,
            memory_available_bytes: available,
            memory_used_bytes: total.saturating_sub(available),
        })
    }
}
