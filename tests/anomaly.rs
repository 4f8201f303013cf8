//! Anomaly scoring against real containers: an idle one stays quiet, one that starts burning
//! CPU after 20 idle samples scores above 3σ and counts a high anomaly, and `dockwatch report`
//! reads both back from the live windows and from a Prometheus that scraped the run.
//!
//! The burn starts (`docker exec … yes`) once dockwatch has taken 20 samples of the idle
//! burner, not after a fixed sleep: on a busy engine a 1 s cycle can take several seconds.
//! The idle stretch is longer than the ten samples scoring needs because a perfectly flat
//! window scores its first departure 0 (no spread to measure it in); the next burning sample
//! is then scored against a window holding one non-zero value, and its z-score grows with
//! the square root of the idle samples before it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Container, Dockwatch, Metrics};

const ZSCORE: &str = "dockwatch_anomaly_zscore";
const ANOMALIES: &str = "dockwatch_anomalies_total";

/// A Prometheus server scraping one dockwatch every second, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        common::require("prometheus", "prometheus");
        let dir = common::tempdir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: dockwatch\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = common::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, port, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if ureq::get(&p.url("/-/ready")).call().is_ok() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "prometheus did not become ready: {}",
            std::fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn report(dw: &Dockwatch, extra: &[&str]) -> String {
    run_report(&["--url", &dw.url("")], extra)
}

fn run_report(source: &[&str], extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .arg("report")
        .args(source)
        .args(extra)
        .output()
        .expect("running dockwatch report");
    assert!(
        out.status.success(),
        "dockwatch report {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("report is UTF-8")
}

fn cpu_samples(m: &Metrics, name: &str) -> f64 {
    m.get(
        "dockwatch_anomaly_window_samples",
        &[("name", name), ("signal", "cpu")],
    )
    .unwrap_or(0.0)
}

#[test]
fn cpu_burst_scores_high_and_report_reads_the_windows() {
    let image = common::image();
    let dw = Dockwatch::start(&["--collect.interval", "1s", "--anomaly.min-samples", "10"]);
    let prometheus = Prometheus::start(dw.port);
    let idle = Container::run("anidle", &[], &image, &["sleep", "3600"]);
    let burner = Container::run("anburn", &["--cpus", "0.5"], &image, &["sleep", "3600"]);
    let b = burner.name.as_str();
    let i = idle.name.as_str();

    let idle_phase = dw.scrape_until(Duration::from_secs(240), |m| {
        cpu_samples(m, b) >= 20.0 && cpu_samples(m, i) >= 20.0
    });
    let before = cpu_samples(&idle_phase, b);
    assert!(before >= 20.0, "only {before} idle samples of the burner");
    common::docker(&["exec", "-d", b, "sh", "-c", "yes > /dev/null"]);

    // Catch the burst while its score is up: scrapes every 200 ms against a 1 s cycle.
    let peak = std::cell::Cell::new(0.0f64);
    let seen = std::cell::RefCell::new(Vec::new());
    let hit = dw.scrape_until(Duration::from_secs(120), |m| {
        let cpu = m.get("dockwatch_container_cpu_usage_ratio", &[("name", b)]);
        let z = m.get(ZSCORE, &[("name", b), ("signal", "cpu")]);
        if let Some(z) = z {
            peak.set(peak.get().max(z));
        }
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&(cpu, z)) {
            seen.push((cpu, z));
        }
        peak.get() > 3.0
            && m.get(
                ANOMALIES,
                &[("name", b), ("signal", "cpu"), ("severity", "high")],
            )
            .unwrap_or(0.0)
                >= 1.0
    });
    let peak = peak.get();
    assert!(
        peak > 3.0,
        "burner cpu z-score peaked at {peak}; (cores, z) seen: {:?}",
        seen.borrow()
    );
    let high = hit.value(
        ANOMALIES,
        &[("name", b), ("signal", "cpu"), ("severity", "high")],
    );
    assert!(high >= 1.0, "no high cpu anomaly counted for the burner");
    let samples_at_burst = cpu_samples(&hit, b);
    assert!(
        samples_at_burst > before,
        "burst seen after {samples_at_burst} samples"
    );

    // Let the burner run long enough to own the top of its window, then compare.
    let enough = before + 25.0;
    let m = dw.scrape_until(Duration::from_secs(240), |m| cpu_samples(m, b) >= enough);
    assert!(cpu_samples(&m, b) >= enough);
    for severity in ["medium", "high"] {
        let n = m.value(
            ANOMALIES,
            &[("name", i), ("signal", "cpu"), ("severity", severity)],
        );
        assert_eq!(n, 0.0, "idle container counted {severity} cpu anomalies");
    }
    let idle_z = m.value(ZSCORE, &[("name", i), ("signal", "cpu")]);
    assert!(idle_z.abs() < 2.0, "idle cpu z-score {idle_z}");
    // The quota caps the burner at 0.5 cores; on a busy host it gets less, so the figures
    // are checked against the quota and against each other rather than pinned.
    let p95 = m.value(
        "dockwatch_anomaly_window_p95",
        &[("name", b), ("signal", "cpu")],
    );
    assert!(
        (0.08..=0.65).contains(&p95),
        "burner p95 {p95} cores under a 0.5 quota"
    );
    let rec = m.value(
        "dockwatch_recommendation",
        &[("name", b), ("recommendation", "raise_cpu_limit")],
    );
    let expected = if p95 > 0.8 * 0.5 { 1.0 } else { 0.0 };
    assert_eq!(
        rec, expected,
        "raise_cpu_limit with p95 {p95} cores of a 0.5 limit"
    );
    let rec = m.value(
        "dockwatch_recommendation",
        &[("name", i), ("recommendation", "raise_cpu_limit")],
    );
    assert_eq!(rec, 0.0);
    for name in [
        "dockwatch_host_anomaly_window_samples",
        "dockwatch_host_anomaly_zscore",
    ] {
        assert!(
            m.get(name, &[("signal", "cpu")]).is_some(),
            "{name} missing"
        );
    }
    assert!(!m.text.contains("NaN") && !m.text.contains("Inf"));
    common::assert_promtool_clean(&m.text);

    // The report, as JSON for exact figures and as text for the layout.
    let json: serde_json::Value =
        serde_json::from_str(&report(&dw, &["--format", "json"])).expect("report JSON");
    let find = |name: &str| {
        json["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from the report: {json:#}"))
            .clone()
    };
    let (jb, ji) = (find(b), find(i));
    let windows: serde_json::Value =
        serde_json::from_str(&dw.get(&format!("/api/v1/windows?container={b}"))).unwrap();
    let live_samples = windows["containers"][0]["samples"].as_f64().unwrap();
    let reported = jb["samples"].as_f64().unwrap();
    assert!(
        reported >= enough && (live_samples - reported).abs() <= 2.0,
        "report says {reported} samples, the API {live_samples}"
    );
    assert!(ji["samples"].as_f64().unwrap() >= enough - 2.0);
    let burner_p95 = jb["cpu_percent"]["p95"].as_f64().unwrap();
    let live_p95 = windows["containers"][0]["signals"]["cpu"]["p95"]
        .as_f64()
        .unwrap()
        * 100.0;
    assert!(
        (8.0..=65.0).contains(&burner_p95),
        "burner cpu p95 {burner_p95}%"
    );
    assert!(
        (burner_p95 - live_p95).abs() <= 0.25 * live_p95,
        "report p95 {burner_p95}% against the API's {live_p95}%"
    );
    let burner_max = jb["cpu_percent"]["max"].as_f64().unwrap();
    assert!(
        burner_max <= 70.0,
        "burner cpu max {burner_max}% over a 50% quota"
    );
    eprintln!(
        "burner: {before} idle samples, peak cpu z {peak:.2}, {high} high anomalies, \
         window p95 {p95:.3} cores, report p95 {burner_p95:.1}% max {burner_max:.1}%"
    );
    let idle_p95 = ji["cpu_percent"]["p95"].as_f64().unwrap();
    assert!(idle_p95 < 5.0, "idle cpu p95 {idle_p95}%");
    assert!(jb["anomalies"]["high"].as_u64().unwrap() >= 1);
    // The idle container's CPU is flat; its other signals may twitch (a page of memory, a
    // multicast packet), and those are legitimately scored.
    let idle_windows: serde_json::Value =
        serde_json::from_str(&dw.get(&format!("/api/v1/windows?container={i}"))).unwrap();
    let idle_signals = &idle_windows["containers"][0]["signals"];
    assert_eq!(
        idle_signals["cpu"]["anomalies"]["high"], 0,
        "{idle_signals:#}"
    );
    assert_eq!(
        idle_signals["cpu"]["anomalies"]["medium"], 0,
        "{idle_signals:#}"
    );
    eprintln!("idle container windows: {idle_signals:#}");
    assert_eq!(jb["cpu_limit_cores"].as_f64(), Some(0.5));
    let burner_recs: Vec<&str> = jb["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        burner_recs.contains(&"raise_cpu_limit"),
        burner_p95 > 40.0,
        "burner p95 {burner_p95}% of one core against a 50% limit: {burner_recs:?}"
    );
    assert!(jb["memory_bytes"]["average"].as_f64().unwrap() > 0.0);

    let text = report(&dw, &["--container", b]);
    assert!(
        text.contains(&format!("Container {b} (id {}", burner.short_id())),
        "{text}"
    );
    assert!(!text.contains(i), "{text}");
    assert!(text.contains("limit 0.50 cores"), "{text}");
    if burner_recs.first() == Some(&"raise_cpu_limit") {
        assert!(text.contains("1. CPU use sits near its ceiling"), "{text}");
    }
    assert!(text.contains(&format!("({reported:.0} samples)")) || text.contains("samples)"));
    let all = report(&dw, &[]);
    assert!(all.contains(&format!("Container {i} ")) && all.contains(&format!("Container {b} ")));

    // The same figures from Prometheus's history of this run (scraped every second).
    let from_prometheus: serde_json::Value = serde_json::from_str(&run_report(
        &["--prometheus", &prometheus.url("")],
        &["--hours", "1", "--format", "json"],
    ))
    .expect("report JSON");
    let history = from_prometheus["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == b)
        .unwrap_or_else(|| panic!("{b} missing from the Prometheus report: {from_prometheus:#}"))
        .clone();
    assert_eq!(history["instance"], format!("127.0.0.1:{}", dw.port));
    let scraped = history["samples"].as_f64().unwrap();
    assert!(scraped >= 20.0, "{scraped} points scraped: {history:#}");
    let history_p95 = history["cpu_percent"]["p95"].as_f64().unwrap();
    assert!(
        (8.0..=65.0).contains(&history_p95),
        "history p95 {history_p95}%: {history:#}"
    );
    assert_eq!(history["cpu_limit_cores"].as_f64(), Some(0.5));
    assert!(
        history["anomalies"]["high"].as_u64().unwrap() >= 1,
        "no high anomaly in the history: {history:#}"
    );
    let text = run_report(
        &["--prometheus", &prometheus.url("")],
        &["--hours", "1", "--container", b],
    );
    assert!(
        text.contains(&format!("Container {b} (id {}", burner.short_id())),
        "{text}"
    );
    assert!(!text.contains(i), "{text}");

    // A container that is not there fails clearly.
    let out = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args([
            "report",
            "--url",
            &dw.url(""),
            "--container",
            "dwt-no-such-container",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data for container"));

    // Removing a container drops its windows.
    burner.remove();
    let gone = dw.scrape_until(Duration::from_secs(15), |m| cpu_samples(m, b) == 0.0);
    assert!(
        gone.all("dockwatch_anomaly_window_samples", &[("name", b)])
            .is_empty()
    );
}

#[test]
fn recommendation_rules_pass_promtool() {
    common::require("promtool", "prometheus");
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        ["check", "rules", "prometheus-rules/recommendations.yml"],
        [
            "test",
            "rules",
            "prometheus-rules/tests/recommendations_test.yml",
        ],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(root)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
