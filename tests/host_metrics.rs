//! Host metrics against node_exporter on the same machine, and `promtool check metrics` on
//! the whole scrape.
//!
//! Counters are bracketed: node_exporter is scraped before and after a dockwatch cycle that
//! started after the first scrape, so a monotonic counter read by dockwatch must lie between
//! the two node_exporter readings.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dockwatch, Metrics};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// A node_exporter on a free loopback port, killed when dropped.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        assert!(
            Path::new(NODE_EXPORTER).exists(),
            "{NODE_EXPORTER} is missing: apt-get install -y prometheus-node-exporter"
        );
        let port = common::free_port();
        let child = Command::new(NODE_EXPORTER)
            .args([
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.loadavg",
                "--collector.filesystem",
                "--collector.netdev",
                "--collector.diskstats",
                "--collector.tcpstat",
                "--collector.stat",
                // Debian's build leaves out lo by default; compare it too.
                "--collector.netdev.device-exclude=^$",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node_exporter");
        let ne = NodeExporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&ne.url()).call().is_ok() {
                return ne;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node_exporter did not answer on port {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    fn scrape(&self) -> Metrics {
        let mut resp = ureq::get(&self.url())
            .call()
            .expect("scraping node_exporter");
        Metrics::parse(&resp.body_mut().read_to_string().unwrap())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cycles(m: &Metrics) -> f64 {
    m.value("dockwatch_collection_cycles_total", &[])
}

/// Node before, dockwatch from a cycle that started after it, node after.
fn bracketed(dw: &Dockwatch, ne: &NodeExporter) -> (Metrics, Metrics, Metrics) {
    let before = ne.scrape();
    let c = cycles(&dw.scrape());
    let m = dw.scrape_until(Duration::from_secs(20), |m| cycles(m) >= c + 2.0);
    assert!(
        cycles(&m) >= c + 2.0,
        "dockwatch cycles stalled; log:\n{}",
        dw.log_text()
    );
    let after = ne.scrape();
    (before, m, after)
}

fn within(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= want.abs() * rel,
        "{what}: dockwatch {got}, node_exporter {want} (tolerance {}%)",
        rel * 100.0
    );
}

fn between(what: &str, got: f64, low: f64, high: f64) {
    assert!(
        low <= got && got <= high,
        "{what}: dockwatch {got} outside node_exporter's [{low}, {high}]"
    );
}

fn cpus_of(m: &Metrics, name: &str) -> BTreeSet<String> {
    m.all(name, &[])
        .iter()
        .filter_map(|s| s.labels.get("cpu").cloned())
        .collect()
}

#[test]
fn host_metrics_match_node_exporter() {
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let ne = NodeExporter::start();
    let (before, m, after) = bracketed(&dw, &ne);

    // Memory.
    assert_eq!(
        m.value("dockwatch_host_memory_total_bytes", &[]),
        after.value("node_memory_MemTotal_bytes", &[])
    );
    within(
        "memory available",
        m.value("dockwatch_host_memory_available_bytes", &[]),
        after.value("node_memory_MemAvailable_bytes", &[]),
        0.05,
    );
    assert_eq!(
        m.value("dockwatch_host_memory_used_bytes", &[]),
        m.value("dockwatch_host_memory_total_bytes", &[])
            - m.value("dockwatch_host_memory_available_bytes", &[])
    );
    assert_eq!(
        m.value("dockwatch_host_swap_total_bytes", &[]),
        after.value("node_memory_SwapTotal_bytes", &[])
    );

    // CPUs.
    let node_cpus = cpus_of(&after, "node_cpu_seconds_total");
    assert_eq!(m.value("dockwatch_host_cpus", &[]), node_cpus.len() as f64);
    assert_eq!(cpus_of(&m, "dockwatch_host_cpu_seconds_total"), node_cpus);
    assert_eq!(
        cpus_of(&m, "dockwatch_host_cpu_core_usage_ratio"),
        node_cpus
    );
    for cpu in &node_cpus {
        let idle = [("cpu", cpu.as_str()), ("mode", "idle")];
        let got = m.value("dockwatch_host_cpu_seconds_total", &idle);
        let low = before.value("node_cpu_seconds_total", &idle);
        let high = after.value("node_cpu_seconds_total", &idle);
        within(&format!("cpu {cpu} idle seconds"), got, high, 0.05);
        // The kernel's idle counter may step back a little (NOHZ accounting).
        between(
            &format!("cpu {cpu} idle seconds"),
            got,
            low - 1.0,
            high + 1.0,
        );
        let modes: BTreeSet<String> = m
            .all("dockwatch_host_cpu_seconds_total", &[("cpu", cpu)])
            .iter()
            .map(|s| s.labels["mode"].clone())
            .collect();
        assert_eq!(
            modes,
            [
                "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"
            ]
            .map(String::from)
            .into()
        );
    }
    let usage = m.value("dockwatch_host_cpu_usage_ratio", &[]);
    assert!((0.0..=1.0).contains(&usage), "usage {usage}");

    // Load.
    let load1 = m.value("dockwatch_host_load1", &[]);
    assert!(
        (load1 - after.value("node_load1", &[])).abs() <= 0.5,
        "load1 {load1}"
    );
    for name in ["dockwatch_host_load5", "dockwatch_host_load15"] {
        assert!(m.value(name, &[]) >= 0.0);
    }
    assert_eq!(
        m.value("dockwatch_host_boot_time_seconds", &[]),
        after.value("node_boot_time_seconds", &[])
    );

    // Filesystems: the root filesystem, once, with node_exporter's figures.
    let root = [("mountpoint", "/")];
    assert_eq!(
        m.value("dockwatch_host_filesystem_size_bytes", &root),
        after.value("node_filesystem_size_bytes", &root)
    );
    let device = &m.all("dockwatch_host_filesystem_size_bytes", &root)[0].labels["device"];
    assert_eq!(
        m.all(
            "dockwatch_host_filesystem_size_bytes",
            &[("device", device)]
        )
        .len(),
        1,
        "a filesystem mounted twice is reported once:\n{}",
        m.text
    );
    for s in m.all("dockwatch_host_filesystem_size_bytes", &[]) {
        let fstype = s.labels["fstype"].as_str();
        assert!(
            ![
                "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "devtmpfs"
            ]
            .contains(&fstype),
            "{s:?}"
        );
        let mp = s.labels["mountpoint"].as_str();
        assert!(
            !mp.starts_with("/proc")
                && !mp.starts_with("/sys")
                && !mp.starts_with("/var/lib/docker/"),
            "{s:?}"
        );
    }

    // Disks: whole disks only, counters bracketed by node_exporter's.
    let disks: Vec<String> = m
        .all("dockwatch_host_disk_read_bytes_total", &[])
        .iter()
        .map(|s| s.labels["device"].clone())
        .collect();
    assert!(!disks.is_empty(), "no disks:\n{}", m.text);
    for d in &disks {
        assert!(
            !d.starts_with("loop") && !d.starts_with("ram") && !d.starts_with("zram"),
            "{d}"
        );
        let dev = [("device", d.as_str())];
        if let (Some(low), Some(high)) = (
            before.get("node_disk_read_bytes_total", &dev),
            after.get("node_disk_read_bytes_total", &dev),
        ) {
            between(
                &format!("{d} read bytes"),
                m.value("dockwatch_host_disk_read_bytes_total", &dev),
                low,
                high,
            );
            between(
                &format!("{d} writes completed"),
                m.value("dockwatch_host_disk_writes_completed_total", &dev),
                before.value("node_disk_writes_completed_total", &dev),
                after.value("node_disk_writes_completed_total", &dev),
            );
        }
    }

    // Network: loopback counters move with every scrape, so bracket them.
    let lo = [("interface", "lo")];
    let nlo = [("device", "lo")];
    between(
        "lo receive bytes",
        m.value("dockwatch_host_network_receive_bytes_total", &lo),
        before.value("node_network_receive_bytes_total", &nlo),
        after.value("node_network_receive_bytes_total", &nlo),
    );
    between(
        "lo transmit packets",
        m.value("dockwatch_host_network_transmit_packets_total", &lo),
        before.value("node_network_transmit_packets_total", &nlo),
        after.value("node_network_transmit_packets_total", &nlo),
    );

    // TCP: established sockets come and go (including our own scrapes); allow some slack.
    let est = [("state", "established")];
    let got = m.value("dockwatch_host_tcp_connections", &est);
    let (a, b) = (
        before.value("node_tcp_connection_states", &est),
        after.value("node_tcp_connection_states", &est),
    );
    between("tcp established", got, a.min(b) - 10.0, a.max(b) + 10.0);
    assert_eq!(m.all("dockwatch_host_tcp_connections", &[]).len(), 11);
    assert!(m.value("dockwatch_host_tcp_connections", &[("state", "listen")]) >= 2.0);

    for name in [
        "dockwatch_host_memory_free_bytes",
        "dockwatch_host_memory_buffers_bytes",
        "dockwatch_host_memory_cached_bytes",
        "dockwatch_host_swap_free_bytes",
        "dockwatch_host_swap_used_bytes",
        "dockwatch_host_load5",
        "dockwatch_host_load15",
    ] {
        assert!(m.get(name, &[]).is_some(), "{name} missing");
    }
    for name in [
        "dockwatch_host_filesystem_avail_bytes",
        "dockwatch_host_filesystem_free_bytes",
        "dockwatch_host_disk_written_bytes_total",
        "dockwatch_host_disk_reads_completed_total",
        "dockwatch_host_disk_io_time_seconds_total",
        "dockwatch_host_network_receive_packets_total",
        "dockwatch_host_network_receive_errors_total",
        "dockwatch_host_network_receive_dropped_total",
        "dockwatch_host_network_transmit_bytes_total",
        "dockwatch_host_network_transmit_errors_total",
        "dockwatch_host_network_transmit_dropped_total",
    ] {
        assert!(!m.all(name, &[]).is_empty(), "{name} missing");
    }

    common::assert_promtool_clean(&m.text);
}

/// With `--path.rootfs` pointing at another path to the root filesystem, the figures are the
/// same and the mount points carry no prefix.
#[test]
fn rootfs_prefix_is_not_in_the_labels() {
    let dir = common::tempdir("rootfs");
    let link = dir.join("root");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let dw = Dockwatch::start(&[
        "--collect.interval",
        "1s",
        "--path.rootfs",
        link.to_str().unwrap(),
    ]);
    let plain = Dockwatch::start(&["--collect.interval", "1s"]);
    let root = [("mountpoint", "/")];
    let a = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_host_filesystem_size_bytes", &root)
            .is_some()
    });
    let b = plain.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_host_filesystem_size_bytes", &root)
            .is_some()
    });
    assert_eq!(
        a.value("dockwatch_host_filesystem_size_bytes", &root),
        b.value("dockwatch_host_filesystem_size_bytes", &root)
    );
    let mounts = |m: &Metrics| -> BTreeSet<String> {
        m.all("dockwatch_host_filesystem_size_bytes", &[])
            .iter()
            .map(|s| s.labels["mountpoint"].clone())
            .collect()
    };
    assert_eq!(mounts(&a), mounts(&b));
    assert!(
        mounts(&a)
            .iter()
            .all(|mp| !mp.contains(dir.to_str().unwrap()))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// dockwatch in a container with the host's `/proc` at `/host/proc` and its root at
/// `/host/root` reports the host's mount points, network namespace and memory. The test image
/// has no libc, so the binary runs through the host's dynamic loader under `/host/root`.
#[test]
fn containerised_dockwatch_reports_the_host() {
    let image = common::image();
    let loader = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2")
        .expect("the host's dynamic loader /lib64/ld-linux-x86-64.so.2");
    let libs = loader.parent().unwrap().to_str().unwrap().to_string();
    let under_root = |p: &str| format!("/host/root{p}");
    let port = common::free_port();
    let publish = format!("127.0.0.1:{port}:9487");
    let (loader, libs, exe) = (
        under_root(loader.to_str().unwrap()),
        under_root(&libs),
        under_root(env!("CARGO_BIN_EXE_dockwatch")),
    );
    let c = common::Container::run(
        "hostfs",
        &[
            "-p",
            &publish,
            "-v",
            "/proc:/host/proc:ro",
            "-v",
            "/:/host/root:ro",
        ],
        &image,
        &[
            &loader,
            "--library-path",
            &libs,
            &exe,
            "--web.listen-address",
            "0.0.0.0:9487",
            "--path.procfs",
            "/host/proc",
            "--path.rootfs",
            "/host/root",
            "--collect.interval",
            "1s",
            // No engine in there; only the host part is looked at.
            "--docker.host",
            "unix:///nonexistent.sock",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let inside = loop {
        let body = ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        if let Some(body) = body.filter(|b| b.contains("dockwatch_host_filesystem_size_bytes")) {
            break Metrics::parse(&body);
        }
        assert!(
            Instant::now() < deadline,
            "containerised dockwatch did not serve host metrics; log:\n{}",
            common::docker(&["logs", &c.name])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let host = Dockwatch::start(&["--collect.interval", "1s"]).scrape();

    let mounts = |m: &Metrics| -> BTreeSet<String> {
        m.all("dockwatch_host_filesystem_size_bytes", &[])
            .iter()
            .map(|s| s.labels["mountpoint"].clone())
            .collect()
    };
    assert_eq!(mounts(&inside), mounts(&host));
    let root = [("mountpoint", "/")];
    assert_eq!(
        inside.value("dockwatch_host_filesystem_size_bytes", &root),
        host.value("dockwatch_host_filesystem_size_bytes", &root)
    );
    assert_eq!(
        inside.value("dockwatch_host_memory_total_bytes", &[]),
        host.value("dockwatch_host_memory_total_bytes", &[])
    );
    // docker0 exists only in the host's network namespace, not in the container's.
    let interfaces: BTreeSet<String> = inside
        .all("dockwatch_host_network_receive_bytes_total", &[])
        .iter()
        .map(|s| s.labels["interface"].clone())
        .collect();
    assert!(interfaces.contains("docker0"), "{interfaces:?}");
}
