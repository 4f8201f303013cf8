//! Container metrics against a real Docker Engine: real containers, a real dockwatch process,
//! values compared with the containers' own limits and with `docker stats`.

mod common;

use std::time::Duration;

use common::{Container, Dockwatch, Metrics, docker, image};

fn name_labels(c: &Container) -> [(&str, &str); 1] {
    [("name", c.name.as_str())]
}

/// `docker stats --no-stream` figures for one container: (CPU %, memory usage bytes).
fn docker_stats(c: &Container) -> (f64, f64) {
    let out = docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.CPUPerc}} {{.MemUsage}}",
        &c.name,
    ]);
    let mut parts = out.split_whitespace();
    let cpu: f64 = parts.next().unwrap().trim_end_matches('%').parse().unwrap();
    let mem = parse_size(parts.next().unwrap());
    (cpu, mem)
}

/// Parses docker's human sizes (`30.5MiB`, `512KiB`, `1.2GiB`, `100B`).
fn parse_size(s: &str) -> f64 {
    let units = [
        ("GiB", 1024f64.powi(3)),
        ("MiB", 1024f64.powi(2)),
        ("KiB", 1024.0),
        ("B", 1.0),
    ];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * factor;
        }
    }
    panic!("unrecognised size {s:?}");
}

#[test]
fn cpu_of_a_quota_limited_burner_matches_quota_and_docker_stats() {
    let img = image();
    let burner = Container::run(
        "cpu",
        &["--cpus", "0.5"],
        &img,
        &["sh", "-c", "yes > /dev/null"],
    );
    let idle = Container::run("idle", &[], &img, &["sleep", "3600"]);
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);

    // Let a few intervals pass so the usage gauge is an average over a full interval.
    std::thread::sleep(Duration::from_secs(4));
    let m = dw.scrape();
    let cores = m.value("dockwatch_container_cpu_usage_ratio", &name_labels(&burner));
    // The quota is the ceiling; the burner reaches it unless the host is saturated by other
    // work, in which case only the ceiling and the agreement with docker stats are checked.
    let host_busy = m.value("dockwatch_host_cpu_usage_ratio", &[]);
    let contended = host_busy > 0.9;
    let floor = if contended { 0.1 } else { 0.40 };
    assert!(
        (floor..=0.56).contains(&cores),
        "burner used {cores} cores under --cpus 0.5 (host busy {host_busy})"
    );
    assert_eq!(
        m.value("dockwatch_container_spec_cpus", &name_labels(&burner)),
        0.5
    );
    let throttled = m.value(
        "dockwatch_container_cpu_cfs_throttled_periods_total",
        &name_labels(&burner),
    );
    assert!(
        contended || throttled > 0.0,
        "a burner at its quota must be throttled"
    );
    // At least a fifth of a core over the four seconds, even on a contended host.
    assert!(
        m.value(
            "dockwatch_container_cpu_usage_seconds_total",
            &name_labels(&burner)
        ) > 0.8
    );
    assert_eq!(
        m.value("dockwatch_container_cpus_online", &name_labels(&burner)),
        2.0_f64.min(num_cpus())
    );

    let idle_cores = m.value("dockwatch_container_cpu_usage_ratio", &name_labels(&idle));
    assert!(idle_cores < 0.02, "idle container used {idle_cores} cores");
    assert!(
        m.get("dockwatch_container_spec_cpus", &name_labels(&idle))
            .is_none()
    );

    // docker stats shows 100 % per core over its own sampling window (about a second); compare
    // it with dockwatch's CPU counter over a window that encloses it, so that load changes on a
    // busy host affect both figures alike.
    let counter = |m: &Metrics| {
        (
            m.value(
                "dockwatch_container_cpu_usage_seconds_total",
                &name_labels(&burner),
            ),
            m.value("dockwatch_last_collection_timestamp_seconds", &[]),
        )
    };
    let (cpu0, t0) = counter(&dw.scrape());
    let (docker_cpu, _) = docker_stats(&burner);
    std::thread::sleep(Duration::from_millis(1100));
    let (cpu1, t1) = counter(&dw.scrape());
    let window_cores = (cpu1 - cpu0) / (t1 - t0);
    assert!(
        (docker_cpu - window_cores * 100.0).abs() < 12.0,
        "docker stats says {docker_cpu}%, dockwatch {window_cores} cores over the same window"
    );

    let labels = [
        ("name", burner.name.as_str()),
        ("id", burner.short_id()),
        ("image", img.as_str()),
    ];
    assert_eq!(
        m.value(
            "dockwatch_container_state",
            &[labels[0], ("state", "running")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "dockwatch_container_state",
            &[labels[0], ("state", "exited")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "dockwatch_container_health_status",
            &[labels[0], ("status", "none")]
        ),
        1.0
    );
    assert_eq!(m.value("dockwatch_container_info", &labels), 1.0);
    assert_eq!(m.value("dockwatch_container_oom_killed", &labels), 0.0);
}

fn num_cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

#[test]
fn memory_of_a_limited_container_matches_docker_stats() {
    let img = image();
    // 30 MiB in tmpfs is charged to the container as shared memory, not as inactive file.
    let holder = Container::run(
        "mem",
        &["-m", "64m", "--tmpfs", "/data:size=48m"],
        &img,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/data/blob bs=1M count=30 && sleep 3600",
        ],
    );
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let l = name_labels(&holder);
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_container_memory_working_set_bytes", &l)
            .is_some_and(|v| v > 30.0 * 1024.0 * 1024.0)
    });
    let ws = m.value("dockwatch_container_memory_working_set_bytes", &l);
    assert!(
        ws > 30.0 * 1024.0 * 1024.0 && ws < 64.0 * 1024.0 * 1024.0,
        "working set {ws}"
    );
    assert!(m.value("dockwatch_container_memory_usage_bytes", &l) >= ws);
    assert_eq!(
        m.value("dockwatch_container_memory_limit_bytes", &l),
        64.0 * 1024.0 * 1024.0
    );
    let ratio = m.value("dockwatch_container_memory_usage_ratio", &l);
    assert!(
        (ratio - ws / (64.0 * 1024.0 * 1024.0)).abs() < 0.02,
        "ratio {ratio}"
    );

    let (_, docker_mem) = docker_stats(&holder);
    assert!(
        (docker_mem - ws).abs() / ws < 0.10,
        "docker stats shows {docker_mem} bytes, dockwatch {ws}"
    );

    // An unlimited container has no limit series and its ratio is against host memory.
    let free = Container::run("unlimited", &[], &img, &["sleep", "3600"]);
    let m = dw.scrape_until(Duration::from_secs(5), |m| {
        m.get(
            "dockwatch_container_memory_usage_ratio",
            &name_labels(&free),
        )
        .is_some()
    });
    assert!(
        m.get(
            "dockwatch_container_memory_limit_bytes",
            &name_labels(&free)
        )
        .is_none()
    );
    let host_total = m.value("dockwatch_host_memory_total_bytes", &[]);
    let free_ws = m.value(
        "dockwatch_container_memory_working_set_bytes",
        &name_labels(&free),
    );
    let free_ratio = m.value(
        "dockwatch_container_memory_usage_ratio",
        &name_labels(&free),
    );
    assert!(
        (free_ratio - free_ws / host_total).abs() < 1e-6,
        "{free_ratio}"
    );
}

#[test]
fn bytes_written_to_disk_are_counted() {
    let img = image();
    let device = common::docker_root_device();
    let throttle = format!("{device}:1gb");
    let writer = Container::run(
        "disk",
        &["--device-write-bps", &throttle],
        &img,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/blob bs=1M count=20 oflag=direct && sleep 3600",
        ],
    );
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let l = name_labels(&writer);
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_container_blkio_write_bytes_total", &l)
            .is_some_and(|v| v >= 20.0 * 1024.0 * 1024.0)
    });
    let written = m.value("dockwatch_container_blkio_write_bytes_total", &l);
    assert!(written >= 20.0 * 1024.0 * 1024.0, "{written} bytes written");
    assert!(m.value("dockwatch_container_blkio_write_operations_total", &l) >= 20.0);
}

#[test]
fn removed_container_series_disappear() {
    let img = image();
    let c = Container::run("gone", &[], &img, &["sleep", "3600"]);
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let l = name_labels(&c);
    let m = dw.scrape_until(Duration::from_secs(5), |m| {
        m.get("dockwatch_container_memory_usage_bytes", &l)
            .is_some()
    });
    assert!(
        m.get("dockwatch_container_memory_usage_bytes", &l)
            .is_some()
    );
    c.remove();
    let m = dw.scrape_until(Duration::from_secs(5), |m| {
        !m.samples
            .iter()
            .any(|s| s.labels.get("name") == Some(&c.name))
    });
    let left: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.labels.get("name") == Some(&c.name))
        .map(|s| s.name.clone())
        .collect();
    assert!(left.is_empty(), "series left after docker rm: {left:?}");
}

#[test]
fn host_and_none_networking_export_no_interfaces() {
    let img = image();
    let host = Container::run("hostnet", &["--network", "host"], &img, &["sleep", "3600"]);
    let none = Container::run("nonet", &["--network", "none"], &img, &["sleep", "3600"]);
    let bridge = Container::run("bridge", &[], &img, &["sleep", "3600"]);
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let m = dw.scrape_until(Duration::from_secs(5), |m| {
        [&host, &none, &bridge].iter().all(|c| {
            m.get("dockwatch_container_memory_usage_bytes", &name_labels(c))
                .is_some()
        })
    });
    for c in [&host, &none] {
        assert!(
            m.all(
                "dockwatch_container_network_receive_bytes_total",
                &name_labels(c)
            )
            .is_empty(),
            "{} has interface series",
            c.name
        );
        assert_eq!(
            m.value(
                "dockwatch_container_state",
                &[("name", &c.name), ("state", "running")]
            ),
            1.0
        );
    }
    let eth0 = [("name", bridge.name.as_str()), ("interface", "eth0")];
    assert!(m.value("dockwatch_container_network_receive_packets_total", &eth0) >= 0.0);
}

#[test]
fn exited_container_has_state_but_no_usage() {
    let img = image();
    let c = Container::run("exited", &[], &img, &["true"]);
    docker(&["wait", &c.name]);
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let m = dw.scrape();
    assert_eq!(
        m.value(
            "dockwatch_container_state",
            &[("name", &c.name), ("state", "exited")]
        ),
        1.0
    );
    assert!(
        m.get("dockwatch_container_memory_usage_bytes", &name_labels(&c))
            .is_none()
    );
    assert!(m.value("dockwatch_containers", &[("state", "exited")]) >= 1.0);
}

#[test]
fn unreachable_engine_reports_docker_down_and_still_serves() {
    let dir = common::tempdir("deadsock");
    let socket = format!("unix://{}/docker.sock", dir.display());
    let dw = Dockwatch::start(&["--collect.interval", "1s", "--docker.host", &socket]);
    let m = dw.scrape_until(Duration::from_secs(5), |m| {
        m.get("dockwatch_collection_errors_total", &[("stage", "version")])
            .is_some_and(|v| v >= 2.0)
    });
    assert_eq!(m.value("dockwatch_docker_up", &[]), 0.0);
    assert!(m.value("dockwatch_collection_errors_total", &[("stage", "version")]) >= 2.0);
    assert!(m.all("dockwatch_container_info", &[]).is_empty());
    assert!(
        m.get("dockwatch_last_collection_timestamp_seconds", &[])
            .is_none()
    );
    // The host side keeps working.
    assert!(m.value("dockwatch_host_memory_total_bytes", &[]) > 0.0);
    assert_eq!(
        m.value(
            "dockwatch_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[test]
fn live_output_passes_promtool_check_metrics() {
    common::require("promtool", "prometheus");
    let img = image();
    let _c = Container::run(
        "promtool",
        &["--cpus", "0.2", "-m", "32m"],
        &img,
        &["sleep", "3600"],
    );
    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    let body = dw.get("/metrics");
    common::assert_promtool_clean(&body);
    let parsed = Metrics::parse(&body);
    assert!(
        parsed.samples.iter().all(|s| s.value.is_finite()),
        "non-finite value on /metrics"
    );
}
