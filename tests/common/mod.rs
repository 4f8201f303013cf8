//! Shared helpers for the integration tests: a real Docker Engine, locally imported busybox
//! images, a dockwatch process on a free port, and a small parser for `/metrics`.
//!
//! Nothing is skipped: a missing dependency panics with the command that installs it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The image most tests run: busybox with the applets they need.
pub const IMAGE: &str = "dockwatch-test/busybox:v1";

/// Applets linked into every test image.
const APPLETS: &[&str] = &[
    "sh", "sleep", "yes", "dd", "cat", "ls", "nc", "ps", "head", "tail", "wget", "top", "true",
    "false", "echo", "mkdir", "rm", "env", "sync", "seq", "ping", "nslookup", "md5sum",
];

/// Runs `docker ARGS`, panicking with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker ARGS` and returns whatever happened.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker: {e}. Install it: apt-get install -y docker.io"))
}

/// Panics unless a Docker Engine answers, saying how to get one.
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker Engine answers on this machine ({}). Start one: `dockerd &` \
             (install with `apt-get install -y docker.io`), or run the README test command, \
             which does both",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("docker CLI missing ({e}): apt-get install -y docker.io"),
    }
}

/// Imports a busybox image named `reference` unless it exists. Extra applets may be added.
pub fn ensure_image(reference: &str) -> String {
    require_docker();
    if docker_output(&["image", "inspect", reference])
        .status
        .success()
    {
        return reference.to_string();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install -y busybox-static"
    );
    let dir = tempdir("image");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    let mut tar = Command::new("tar")
        .args(["-C", dir.to_str().unwrap(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running tar");
    let out = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin", "-", reference])
        .stdin(tar.stdout.take().expect("tar stdout"))
        .output()
        .expect("running docker import");
    assert!(
        tar.wait().expect("waiting for tar").success(),
        "tar of the image failed"
    );
    // Another test binary may have imported it at the same moment; either way it exists now.
    assert!(
        out.status.success()
            || docker_output(&["image", "inspect", reference])
                .status
                .success(),
        "docker import {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    reference.to_string()
}

/// The default test image, imported on first use.
pub fn image() -> String {
    ensure_image(IMAGE)
}

/// A fresh temporary directory.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dockwatch-{tag}-{}", unique("d")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A name unique to this process and call: `dwt-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "dwt-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container removed (forcefully) when dropped.
#[derive(Debug)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Full id.
    pub id: String,
}

impl Container {
    /// `docker run -d --name <unique> OPTS IMAGE CMD…`.
    pub fn run(tag: &str, opts: &[&str], image: &str, cmd: &[&str]) -> Container {
        let name = unique(tag);
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(opts);
        args.push(image);
        args.extend_from_slice(cmd);
        let id = docker(&args);
        Container { name, id }
    }

    /// The 12-character id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Removes the container now.
    pub fn remove(&self) {
        let _ = docker_output(&["rm", "-f", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running dockwatch process, killed when dropped.
#[derive(Debug)]
pub struct Dockwatch {
    child: Child,
    /// Port it serves on.
    pub port: u16,
    /// Its stderr log file.
    pub log: PathBuf,
}

impl Dockwatch {
    /// Starts the dockwatch binary with `args` (plus a listen address) and waits until its
    /// first cycle is done.
    pub fn start(args: &[&str]) -> Dockwatch {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}.log", unique("dockwatch")));
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
            .args(["--web.listen-address", &listen, "--log.level", "debug"])
            .args(args)
            .stdout(Stdio::from(
                std::fs::File::create(log.with_extension("out")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("starting dockwatch");
        let dw = Dockwatch { child, port, log };
        dw.wait_healthy();
        dw
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(&self.url("/healthz")).call()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "dockwatch did not become healthy; log:\n{}",
            self.log_text()
        );
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET `path` and return the body; panics on a non-2xx answer.
    pub fn get(&self, path: &str) -> String {
        let mut resp = ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.log_text()));
        resp.body_mut().read_to_string().unwrap()
    }

    /// Scrapes `/metrics`.
    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics"))
    }

    /// Scrapes until `pred` holds or `timeout` passes; returns the last scrape.
    pub fn scrape_until(&self, timeout: Duration, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.scrape();
            if pred(&m) || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What dockwatch logged so far: its logs (stderr) followed by its event lines (stdout).
    pub fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default());
        text
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Dockwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series from a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as exposed (counters with `_total`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed scrape (Prometheus text format).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Every series.
    pub samples: Vec<Sample>,
    /// The raw text.
    pub text: String,
}

impl Metrics {
    /// Parses the text format; comment lines are skipped.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Every series named `name` whose labels include all of `labels`.
    pub fn all(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the single series matching, if there is exactly one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.all(name, labels).as_slice() {
            [one] => Some(one.value),
            [] => None,
            many => panic!("{} series match {name} {labels:?}", many.len()),
        }
    }

    /// Like [`Metrics::get`] but panics with the scrape when missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let related: Vec<&str> = self.text.lines().filter(|l| l.starts_with(name)).collect();
            panic!(
                "no series {name} {labels:?}; series of that name:\n{}",
                related.join("\n")
            )
        })
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Panics unless `program` is on PATH, naming the Debian package that provides it.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is not installed: apt-get install -y {package} (the README test command installs it)"
    );
}

/// Pipes an exposition through `promtool check metrics` and panics, with promtool's complaints
/// and the text, unless it passes without a word. Panics with the install command when
/// promtool is missing.
pub fn assert_promtool_clean(body: &str) {
    use std::io::Write;
    require("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n{body}"
    );
}

/// The block device backing Docker's data root, e.g. `/dev/vda`, for `--device-write-bps`.
///
/// On cgroup v1 some kernels only account block I/O for devices that have a throttle rule, so
/// tests that assert written bytes set a generous one.
pub fn docker_root_device() -> String {
    let root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    let out = Command::new("df")
        .args(["--output=source", &root])
        .output()
        .expect("running df");
    let text = String::from_utf8_lossy(&out.stdout);
    let source = text.lines().nth(1).unwrap_or("").trim().to_string();
    // Partitions (vda1, sda2, nvme0n1p1) are throttled through their disk.
    let base = source.trim_end_matches(|c: char| c.is_ascii_digit());
    if Path::new(base).exists() && base.ends_with('p') && base.contains("nvme") {
        base.trim_end_matches('p').to_string()
    } else if Path::new(base).exists() && base != "/dev/" {
        base.to_string()
    } else {
        source
    }
}
