//! Benchmark of dockwatch against `docker stats` on N idle containers.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench -- --containers 10,50,100,200
//! ```
//!
//! For each N it starts idle busybox containers (named `dwbench-<pid>-<i>`, labelled
//! `dockwatch.bench`; removed at the end and on Ctrl-C) and prints one table row:
//!
//! - the collection cycle time in-process, on the cgroup fast path and on the Engine API path
//!   (median of `--cycles` cycles after one warm-up cycle that fills the inspect cache);
//! - `docker stats --no-stream` wall time on the same N containers (median of 3) and the ratio;
//! - `/metrics` latency p50/p99 and throughput of a real dockwatch process under
//!   `--scrapers` concurrent keep-alive clients for `--scrape-seconds`;
//! - that process's VmRSS/VmHWM and CPU seconds per cycle (utime+stime over the cycles it ran
//!   at a 1 s interval without scrapes), on each source, plus dockerd's CPU per cycle.
//!
//! Every cycle covers all running containers on the host, not only the benchmark's: the
//! container count is printed with the figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dockwatch::collector::cgroup::CgroupReader;
use dockwatch::collector::{Collector, CollectorConfig, UsageReader};
use dockwatch::docker::BollardDocker;
use dockwatch::model::UsageSource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names of the containers created so far, for cleanup.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Dockwatch processes running now, for cleanup.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct Options {
    containers: Vec<usize>,
    cycles: usize,
    scrapers: usize,
    scrape_seconds: u64,
    concurrency: usize,
    binary: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        containers: vec![10, 50, 100, 200],
        cycles: 5,
        scrapers: 50,
        scrape_seconds: 10,
        concurrency: 256,
        binary: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/dockwatch"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("bad {flag} {value:?}"))
        };
        match flag.as_str() {
            "--containers" => {
                o.containers = value
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| panic!("bad count {n:?}")))
                    .collect();
                o.containers.sort_unstable();
            }
            "--cycles" => o.cycles = num(),
            "--scrapers" => o.scrapers = num(),
            "--scrape-seconds" => o.scrape_seconds = num() as u64,
            "--concurrency" => o.concurrency = num(),
            "--dockwatch" => o.binary = PathBuf::from(value),
            other => panic!(
                "unknown flag {other:?}; flags: --containers 10,50 --cycles 5 --scrapers 50 \
                 --scrape-seconds 10 --concurrency 256 --dockwatch target/release/dockwatch"
            ),
        }
    }
    assert!(
        o.binary.exists(),
        "{} is missing: run `cargo build --release` first",
        o.binary.display()
    );
    o
}

const IMAGE: &str = "dockwatch-bench/busybox:v1";

fn docker_output(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker: {e}. Install it: apt-get install -y docker.io"))
}

fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Imports a two-applet busybox image unless it exists (no registry pulls).
fn image() -> String {
    if docker_output(&["image", "inspect", IMAGE]).status.success() {
        return IMAGE.into();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install -y busybox-static"
    );
    let dir = std::env::temp_dir().join(format!("dockwatch-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    let mut tar = Command::new("tar")
        .args(["-C", dir.to_str().unwrap(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running tar");
    let out = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin", "-", IMAGE])
        .stdin(tar.stdout.take().expect("tar stdout"))
        .output()
        .expect("running docker import");
    assert!(
        tar.wait().unwrap().success() && out.status.success(),
        "importing {IMAGE}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    IMAGE.into()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cleanup() {
    for pid in CHILDREN.lock().unwrap().drain(..) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let names: Vec<String> = CREATED.lock().unwrap().drain(..).collect();
    for chunk in names.chunks(50) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        let _ = docker_output(&args);
    }
}

/// Starts containers until `n` of ours exist, a few `docker run` at a time.
fn grow_to(n: usize, image: &str) {
    let have = CREATED.lock().unwrap().len();
    let todo: Vec<usize> = (have..n).collect();
    let next = Arc::new(Mutex::new(todo.into_iter()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let next = next.clone();
            let image = image.to_string();
            std::thread::spawn(move || {
                loop {
                    let Some(i) = next.lock().unwrap().next() else {
                        return;
                    };
                    let name = format!("dwbench-{}-{i}", std::process::id());
                    CREATED.lock().unwrap().push(name.clone());
                    docker(&[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--label",
                        "dockwatch.bench=1",
                        &image,
                        "sleep",
                        "86400",
                    ]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("container start thread panicked");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median cycle time in-process and the running-container count and sources of the last.
async fn cycle_time(
    fast: Option<Arc<dyn UsageReader>>,
    cycles: usize,
    concurrency: usize,
) -> (f64, usize, usize) {
    let docker = Arc::new(
        BollardDocker::new("unix:///var/run/docker.sock", Duration::from_secs(30)).unwrap(),
    );
    let c = Collector::new(
        docker,
        None,
        fast,
        CollectorConfig {
            interval: Duration::from_secs(3600),
            concurrency,
        },
    );
    c.collect_once(true).await;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..cycles {
        let s = c.collect_once(true).await;
        times.push(s.duration.as_secs_f64());
        last = Some(s);
    }
    let s = last.expect("at least one cycle");
    let running: Vec<_> = s
        .containers
        .iter()
        .filter_map(|c| c.usage.as_ref())
        .collect();
    let from_cgroup = running
        .iter()
        .filter(|u| u.source == Some(UsageSource::Cgroup))
        .count();
    (median(times), running.len(), from_cgroup)
}

fn docker_stats_time(names: &[String]) -> f64 {
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut args = vec!["stats", "--no-stream", "--format", "{{.Name}}"];
        args.extend(names.iter().map(String::as_str));
        let out = docker(&args);
        assert_eq!(
            out.lines().count(),
            names.len(),
            "docker stats output: {out}"
        );
        times.push(start.elapsed().as_secs_f64());
    }
    median(times)
}

/// A dockwatch process on a free port, killed when dropped.
struct Exporter {
    child: Child,
    port: u16,
}

impl Exporter {
    fn start(binary: &Path, extra: &[&str]) -> Exporter {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["--web.listen-address", &listen, "--log.level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dockwatch");
        CHILDREN.lock().unwrap().push(child.id());
        let e = Exporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while e.cycles() < 1.0 {
            assert!(
                Instant::now() < deadline,
                "dockwatch did not finish a cycle"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    fn cycles(&self) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let Ok(mut r) = ureq::get(&url).call() else {
            return 0.0;
        };
        let text = r.body_mut().read_to_string().unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("dockwatch_collection_cycles_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn status(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU seconds per cycle over `seconds` of idle (unscraped) running, and dockerd's.
    fn cpu_per_cycle(&self, seconds: u64) -> (f64, f64) {
        let dockerd = dockerd_pid();
        let (c0, d0, t0) = (
            self.cycles(),
            cpu_seconds(self.child.id()),
            cpu_seconds(dockerd),
        );
        std::thread::sleep(Duration::from_secs(seconds));
        let (c1, d1, t1) = (
            self.cycles(),
            cpu_seconds(self.child.id()),
            cpu_seconds(dockerd),
        );
        let cycles = (c1 - c0).max(1.0);
        ((d1 - d0) / cycles, (t1 - t0) / cycles)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|p| *p != self.child.id());
    }
}

fn dockerd_pid() -> u32 {
    let out = Command::new("pidof")
        .arg("dockerd")
        .output()
        .expect("running pidof");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("dockerd is not running")
}

/// utime + stime of `pid` in seconds (fields 14 and 15 of /proc/<pid>/stat, in USER_HZ).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// One keep-alive HTTP/1.1 GET; returns the body length.
async fn get(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> usize {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    buf.clear();
    let mut chunk = [0u8; 64 * 1024];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("content-length header")
                .trim()
                .parse()
                .unwrap();
            break (pos + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    length
}

/// (p50 ms, p99 ms, requests per second, body bytes) under `clients` concurrent scrapers.
async fn load(port: u16, clients: usize, seconds: u64) -> (f64, f64, f64, usize) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let mut buf = Vec::with_capacity(1 << 20);
                let mut lat = Vec::new();
                let mut size = 0;
                while Instant::now() < until {
                    let start = Instant::now();
                    size = get(&mut stream, &mut buf).await;
                    lat.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                (lat, size)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    let mut size = 0;
    for t in tasks {
        let (lat, s) = t.await.unwrap();
        all.extend(lat);
        size = s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let rps = all.len() as f64 / elapsed;
    (percentile(&all, 0.5), percentile(&all, 0.99), rps, size)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: removing the benchmark containers");
            cleanup();
            std::process::exit(130);
        }
    });
    let image = image();
    let result = std::panic::catch_unwind(|| runtime.block_on(run(&o, &image)));
    cleanup();
    if result.is_err() {
        std::process::exit(1);
    }
}

async fn run(o: &Options, image: &str) {
    println!(
        "| N | running on host | cgroup cycle | API cycle | docker stats --no-stream | \
         stats / cgroup | /metrics p50 | p99 | req/s | gzip body | RSS idle / loaded / HWM (cgroup) | \
         RSS / HWM (API) | CPU/cycle cgroup | CPU/cycle API | dockerd CPU/cycle cgroup / API | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &o.containers {
        let img = image.to_string();
        tokio::task::spawn_blocking(move || grow_to(n, &img))
            .await
            .unwrap();
        let names: Vec<String> = CREATED.lock().unwrap().clone();
        let load_before = loadavg();

        let reader: Arc<dyn UsageReader> =
            Arc::new(CgroupReader::new(Path::new("/sys/fs/cgroup"), Path::new("/proc")).unwrap());
        let (fast, running, from_cgroup) = cycle_time(Some(reader), o.cycles, o.concurrency).await;
        assert_eq!(
            from_cgroup, running,
            "every running container read from cgroups"
        );
        let (api, _, _) = cycle_time(None, o.cycles, o.concurrency).await;
        let stats = tokio::task::spawn_blocking(move || docker_stats_time(&names))
            .await
            .unwrap();

        let binary = o.binary.clone();
        let (scrapers, seconds) = (o.scrapers, o.scrape_seconds);
        let real = tokio::task::spawn_blocking(move || {
            let e = Exporter::start(&binary, &["--collect.interval", "1s"]);
            let (cpu, dockerd) = e.cpu_per_cycle(10);
            (e, cpu, dockerd)
        })
        .await
        .unwrap();
        let (exporter, cpu_cgroup, dockerd_cgroup) = real;
        let idle_rss = exporter.status("VmRSS:");
        let (p50, p99, rps, size) = load(exporter.port, scrapers, seconds).await;
        let rss = (exporter.status("VmRSS:"), exporter.status("VmHWM:"));
        drop(exporter);

        let binary = o.binary.clone();
        let (cpu_api, dockerd_api, rss_api) = tokio::task::spawn_blocking(move || {
            let e = Exporter::start(
                &binary,
                &["--collect.interval", "1s", "--collector.cgroup", "off"],
            );
            let (cpu, dockerd) = e.cpu_per_cycle(10);
            (cpu, dockerd, (e.status("VmRSS:"), e.status("VmHWM:")))
        })
        .await
        .unwrap();

        let mib = |kb: u64| kb as f64 / 1024.0;
        println!(
            "| {n} | {running} | {:.1} ms | {:.0} ms | {:.0} ms | {:.0}× | {p50:.1} ms | {p99:.1} ms | \
             {rps:.0} | {:.0} KiB | {:.1} / {:.1} / {:.1} MiB | {:.1} / {:.1} MiB | {:.1} ms | {:.0} ms | \
             {:.0} / {:.0} ms | {load_before} |",
            fast * 1000.0,
            api * 1000.0,
            stats * 1000.0,
            stats / fast,
            size as f64 / 1024.0,
            mib(idle_rss),
            mib(rss.0),
            mib(rss.1),
            mib(rss_api.0),
            mib(rss_api.1),
            cpu_cgroup * 1000.0,
            cpu_api * 1000.0,
            dockerd_cgroup * 1000.0,
            dockerd_api * 1000.0,
        );
    }
}
