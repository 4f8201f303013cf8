//! The cgroup reader against the Engine API on the same live containers: a CPU burner under
//! a quota, a memory holder under a limit, a disk writer and an idle container.
//!
//! Each container is read from cgroups, then through the stats endpoint, then from cgroups
//! again. Monotonic counters from the API must lie between the two cgroup readings; gauges
//! that do not move on a steady container must match.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Container, Dockwatch, docker, image};
use dockwatch::collector::cgroup::CgroupReader;
use dockwatch::collector::container::{meta_from_inspect, usage_from_stats};
use dockwatch::docker::{BollardDocker, DockerApi};
use dockwatch::model::{ContainerMeta, ContainerUsage, UsageSource};

const MIB: u64 = 1024 * 1024;

fn between(what: &str, name: &str, before: u64, api: u64, after: u64) {
    assert!(
        before <= api && api <= after,
        "{name}: {what} from the api {api} is not between the cgroup readings {before} and {after}"
    );
}

fn close(what: &str, name: &str, cgroup: u64, api: u64, rel: f64, abs: u64) {
    let diff = cgroup.abs_diff(api);
    assert!(
        diff <= abs || diff as f64 <= rel * api as f64,
        "{name}: {what} differs: cgroup {cgroup}, api {api}"
    );
}

/// Reads `meta` from cgroups, the API and cgroups again, and compares.
async fn compare(
    reader: &CgroupReader,
    docker: &BollardDocker,
    meta: &ContainerMeta,
) -> (ContainerUsage, ContainerUsage) {
    let name = meta.name.as_str();
    let before = reader.read_container(meta).unwrap();
    let stats = docker.stats(&meta.id).await.unwrap();
    let after = reader.read_container(meta).unwrap();
    let api = usage_from_stats(&stats, meta).unwrap();
    assert_eq!(before.source, Some(UsageSource::Cgroup));
    assert_eq!(api.source, Some(UsageSource::Api));

    between(
        "cpu total",
        name,
        before.cpu.total_ns,
        api.cpu.total_ns,
        after.cpu.total_ns,
    );
    between(
        "cpu user",
        name,
        before.cpu.user_ns,
        api.cpu.user_ns,
        after.cpu.user_ns,
    );
    between(
        "cpu system",
        name,
        before.cpu.system_ns,
        api.cpu.system_ns,
        after.cpu.system_ns,
    );
    between(
        "cfs periods",
        name,
        before.cpu.periods,
        api.cpu.periods,
        after.cpu.periods,
    );
    between(
        "cfs throttled periods",
        name,
        before.cpu.throttled_periods,
        api.cpu.throttled_periods,
        after.cpu.throttled_periods,
    );
    between(
        "cfs throttled time",
        name,
        before.cpu.throttled_ns,
        api.cpu.throttled_ns,
        after.cpu.throttled_ns,
    );
    assert_eq!(
        before.cpu.online_cpus, api.cpu.online_cpus,
        "{name}: online cpus"
    );

    // Memory moves a little even on an idle container (page tables, slab).
    let (m, a) = (&before.memory, &api.memory);
    close(
        "memory usage",
        name,
        m.usage_bytes,
        a.usage_bytes,
        0.03,
        512 * 1024,
    );
    close(
        "working set",
        name,
        m.working_set_bytes,
        a.working_set_bytes,
        0.03,
        512 * 1024,
    );
    close(
        "cache",
        name,
        m.cache_bytes,
        a.cache_bytes,
        0.03,
        512 * 1024,
    );
    close("rss", name, m.rss_bytes, a.rss_bytes, 0.03, 512 * 1024);
    assert_eq!(m.limit_bytes, a.limit_bytes, "{name}: memory limit");
    // The engine omits a zero failcnt.
    assert_eq!(
        m.failcnt.unwrap_or(0),
        a.failcnt.unwrap_or(0),
        "{name}: failcnt"
    );

    assert_eq!(before.blkio, api.blkio, "{name}: block I/O");
    assert_eq!(
        before.blkio, after.blkio,
        "{name}: block I/O moved during the test"
    );
    assert_eq!(before.pids_current, api.pids_current, "{name}: pids");
    assert_eq!(before.pids_limit, api.pids_limit, "{name}: pids limit");

    let names = |u: &ContainerUsage| -> Vec<String> {
        u.networks.iter().map(|n| n.interface.clone()).collect()
    };
    assert_eq!(names(&before), names(&api), "{name}: interfaces");
    for ((b, a), f) in before
        .networks
        .iter()
        .zip(&api.networks)
        .zip(&after.networks)
    {
        let what = format!("{} rx bytes", b.interface);
        between(&what, name, b.rx_bytes, a.rx_bytes, f.rx_bytes);
        let what = format!("{} rx packets", b.interface);
        between(&what, name, b.rx_packets, a.rx_packets, f.rx_packets);
        let what = format!("{} tx bytes", b.interface);
        between(&what, name, b.tx_bytes, a.tx_bytes, f.tx_bytes);
        let what = format!("{} tx packets", b.interface);
        between(&what, name, b.tx_packets, a.tx_packets, f.tx_packets);
        assert_eq!(b.rx_errors, a.rx_errors, "{name}: rx errors");
        assert_eq!(b.tx_dropped, a.tx_dropped, "{name}: tx dropped");
    }
    (before, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_reader_agrees_with_the_engine_api() {
    let img = image();
    let throttle = format!("{}:1gb", common::docker_root_device());
    let burner = Container::run(
        "par-cpu",
        &["--cpus", "0.5"],
        &img,
        &["sh", "-c", "yes > /dev/null"],
    );
    let holder = Container::run(
        "par-mem",
        &["-m", "128m", "--shm-size", "96m"],
        &img,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 && sleep 3600",
        ],
    );
    let writer = Container::run(
        "par-disk",
        &["--device-write-bps", &throttle],
        &img,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/blob bs=1M count=20 oflag=direct && sleep 3600",
        ],
    );
    let idle = Container::run("par-idle", &[], &img, &["sleep", "3600"]);

    let api = BollardDocker::new("unix:///var/run/docker.sock", Duration::from_secs(60)).unwrap();
    api.version().await.unwrap();
    let reader = CgroupReader::new(Path::new("/sys/fs/cgroup"), Path::new("/proc")).unwrap();
    let mut metas = Vec::new();
    for c in [&burner, &holder, &writer, &idle] {
        metas.push(meta_from_inspect(
            api.inspect_container(&c.id).await.unwrap(),
        ));
    }

    // Traffic to the idle container: refused connections still count packets both ways.
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &idle.name,
    ]);
    for _ in 0..5 {
        let addr: SocketAddr = format!("{ip}:9").parse().unwrap();
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    }

    // Wait for the writer and the holder to finish. (Whether the burner gets throttled depends
    // on how busy the host is, so only its CFS periods are required.)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = reader.read_container(&metas[2]).unwrap();
        let h = reader.read_container(&metas[1]).unwrap();
        let b = reader.read_container(&metas[0]).unwrap();
        if w.blkio.write_bytes >= 20 * MIB
            && h.memory.usage_bytes >= 48 * MIB
            && b.cpu.periods > 0
            && w.pids_current == Some(1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containers did not settle: {w:?} {h:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (burn, _) = compare(&reader, &api, &metas[0]).await;
    assert_eq!(metas[0].cpu_limit_cores, Some(0.5));
    assert!(burn.cpu.periods > 0);
    assert!(burn.cpu.user_ns + burn.cpu.system_ns > 0);

    let (hold, hold_api) = compare(&reader, &api, &metas[1]).await;
    assert_eq!(hold.memory.limit_bytes, Some(128 * MIB));
    assert!(
        hold.memory.working_set_bytes >= 48 * MIB,
        "{:?}",
        hold.memory
    );
    assert!(hold_api.memory.working_set_bytes >= 48 * MIB);

    let (write, _) = compare(&reader, &api, &metas[2]).await;
    assert!(write.blkio.write_bytes >= 20 * MIB, "{:?}", write.blkio);
    assert!(write.blkio.write_ops >= 20);
    assert_eq!(write.memory.limit_bytes, None);

    let (quiet, _) = compare(&reader, &api, &metas[3]).await;
    let eth0 = quiet
        .networks
        .iter()
        .find(|n| n.interface == "eth0")
        .unwrap();
    assert!(eth0.rx_packets >= 5 && eth0.tx_packets >= 5, "{eth0:?}");
}

#[test]
fn dockwatch_reports_which_source_it_used() {
    let img = image();
    let c = Container::run("par-src", &[], &img, &["sleep", "3600"]);
    let l = [("name", c.name.as_str()), ("source", "cgroup")];

    let dw = Dockwatch::start(&["--collect.interval", "1s"]);
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_container_stats_source", &l).is_some()
    });
    assert_eq!(m.value("dockwatch_container_stats_source", &l), 1.0);
    assert!(
        dw.log_text()
            .contains("reading container usage from cgroups")
    );

    let dw = Dockwatch::start(&["--collect.interval", "1s", "--collector.cgroup", "off"]);
    let l = [("name", c.name.as_str()), ("source", "api")];
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_container_stats_source", &l).is_some()
    });
    assert_eq!(m.value("dockwatch_container_stats_source", &l), 1.0);

    // auto falls back to the engine when the mount is not there; on refuses to start.
    let dw = Dockwatch::start(&["--collector.cgroup.root", "/nonexistent/cgroup"]);
    let l = [("name", c.name.as_str()), ("source", "api")];
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_container_stats_source", &l).is_some()
    });
    assert_eq!(m.value("dockwatch_container_stats_source", &l), 1.0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args([
            "--collector.cgroup",
            "on",
            "--collector.cgroup.root",
            "/nonexistent/cgroup",
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/cgroup") && err.contains("cgroup reader"),
        "{err}"
    );
}
