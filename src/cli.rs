//! Command-line flags, in the exporter convention (`--web.listen-address`, `--collect.interval`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Docker-host exporter: container and host metrics, security policy checks and anomaly
/// scores for Prometheus.
#[derive(Debug, Parser)]
#[command(name = "dockwatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand dockwatch runs the exporter.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Exporter flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands besides running the exporter.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a policy file and print what it would apply; exit 1 on error.
    CheckPolicy {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Print a performance report per container from a running dockwatch or from Prometheus.
    Report(crate::anomaly::report::ReportArgs),
}

/// Flags of the exporter itself.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Address to serve HTTP on.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "0.0.0.0:9487"
    )]
    pub listen_address: String,

    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    /// Docker Engine address: unix:///path, tcp://host:port, http://host:port or
    /// https://host:port (client certificates from $DOCKER_CERT_PATH when $DOCKER_TLS_VERIFY is
    /// set). Defaults to $DOCKER_HOST, else the local socket.
    #[arg(
        long = "docker.host",
        value_name = "URL",
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,

    /// Timeout of a single Docker Engine request.
    #[arg(long = "docker.timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub docker_timeout: Duration,

    /// Time between collection cycles. Scrapes read the latest cycle and never wait on Docker.
    #[arg(long = "collect.interval", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Most container reads (stats or cgroup) in flight at once.
    #[arg(long = "collect.concurrency", value_name = "N", default_value_t = 256)]
    pub concurrency: usize,

    /// Read host CPU, memory, disks and network.
    #[arg(long = "collector.host", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub host: bool,

    /// Read container usage from the cgroup filesystem instead of the Engine API stats
    /// endpoint: auto (when readable), on (fail at start when not) or off.
    #[arg(long = "collector.cgroup", value_name = "MODE", default_value = "auto")]
    pub cgroup: CgroupMode,

    /// Where the host's cgroup filesystem is mounted (set to /host/sys/fs/cgroup when running
    /// in a container).
    #[arg(
        long = "collector.cgroup.root",
        value_name = "PATH",
        default_value = "/sys/fs/cgroup"
    )]
    pub cgroup_root: PathBuf,

    /// Docker labels copied onto dockwatch_container_info as label_<sanitized key>
    /// (comma-separated). Compose project and service are always there.
    #[arg(
        long = "collector.container.labels",
        value_name = "KEYS",
        value_delimiter = ','
    )]
    pub container_labels: Vec<String>,

    /// Where the host's /proc is mounted (set to /host/proc when running in a container).
    #[arg(long = "path.procfs", value_name = "PATH", default_value = "/proc")]
    pub procfs: PathBuf,

    /// Where the host's root filesystem is mounted (set to /host/root when running in a
    /// container); filesystem mount points are reported without this prefix.
    #[arg(long = "path.rootfs", value_name = "PATH", default_value = "/")]
    pub rootfs: PathBuf,

    /// Log level: error, warn, info, debug or trace (or a tracing filter directive).
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Security policy flags.
    #[command(flatten)]
    pub policy: crate::policy::PolicyArgs,

    /// Anomaly scoring flags (`--anomaly.*`).
    #[command(flatten)]
    pub anomaly: crate::anomaly::AnomalyArgs,

    /// Violation event sinks (`--events.*`).
    #[command(flatten)]
    pub events: crate::events::EventsArgs,

    /// Quarantine (`--enforce*`).
    #[command(flatten)]
    pub enforce: crate::enforce::EnforceArgs,
}

/// Whether container usage is read from cgroups.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CgroupMode {
    /// Use the cgroup filesystem when it is readable, else the Engine API.
    Auto,
    /// Use the cgroup filesystem; refuse to start when it is not readable.
    On,
    /// Always use the Engine API.
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses durations such as `15s`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_flags() {
        let cli = Cli::try_parse_from(["dockwatch"]).unwrap();
        assert_eq!(cli.run.interval, Duration::from_secs(15));
        assert_eq!(cli.run.telemetry_path, "/metrics");
        assert!(cli.run.host);
    }

    #[test]
    fn rejects_zero_interval() {
        let err = Cli::try_parse_from(["dockwatch", "--collect.interval", "0s"]).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }
}
