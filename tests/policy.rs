//! Security policies against real containers: each test writes a policy that selects only its
//! own containers (by their unique name prefix), runs dockwatch on it, and asserts the exact
//! violation series on `/metrics`, including that compliant containers have none.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Container, Dockwatch, Metrics};

const ACTIVE: &str = "dockwatch_policy_violation_active";
const TOTAL: &str = "dockwatch_policy_violations_total";

/// The name prefix `common::Container::run(tag, …)` gives this process's containers.
fn prefix(tag: &str) -> String {
    format!("dwt-{tag}-{}-", std::process::id())
}

fn write_policy(yaml: &str) -> PathBuf {
    let path = common::tempdir("policy").join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(yaml: &str, extra: &[&str]) -> (Dockwatch, PathBuf) {
    let path = write_policy(yaml);
    let mut args = vec![
        "--policy.file",
        path.to_str().unwrap(),
        "--collect.interval",
        "2s",
    ];
    args.extend_from_slice(extra);
    (Dockwatch::start(&args), path)
}

/// Active violations of `container` as (rule, subject, severity, category, policy, mode).
fn active(m: &Metrics, container: &str) -> Vec<BTreeMap<String, String>> {
    let mut out: Vec<BTreeMap<String, String>> = m
        .all(ACTIVE, &[("container", container)])
        .into_iter()
        .map(|s| {
            assert_eq!(s.value, 1.0, "{s:?}");
            s.labels.clone()
        })
        .collect();
    out.sort_by(|a, b| (&a["rule"], &a["subject"]).cmp(&(&b["rule"], &b["subject"])));
    out
}

fn series(
    policy: &str,
    rule: &str,
    category: &str,
    severity: &str,
    container: &str,
    subject: &str,
) -> BTreeMap<String, String> {
    [
        ("policy", policy),
        ("rule", rule),
        ("category", category),
        ("severity", severity),
        ("mode", "enforce"),
        ("container", container),
        ("subject", subject),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn wait_for(dw: &Dockwatch, container: &str, n: usize) -> Metrics {
    dw.scrape_until(Duration::from_secs(20), |m| {
        m.all(ACTIVE, &[("container", container)]).len() >= n
    })
}

fn create(tag: &str, opts: &[&str], image: &str, cmd: &[&str]) -> Container {
    let name = common::unique(tag);
    let mut args = vec!["create", "--name", &name];
    args.extend_from_slice(opts);
    args.push(image);
    args.extend_from_slice(cmd);
    let id = common::docker(&args);
    Container { name, id }
}

#[test]
fn disallowed_tag_is_one_episode_and_output_passes_promtool() {
    let bad_image = common::ensure_image("dwt-policy/app:dev");
    let good_image = common::ensure_image("dwt-policy/app:v1.2.3");
    let p = prefix("poltag");
    let (dw, _) = start(
        &format!(
            "image_policies:\n  - name: tags\n    selector: {{name: \"{p}*\"}}\n    allowed_tags: [\"v*\", stable]\n"
        ),
        &[],
    );
    let bad = Container::run("poltag", &[], &bad_image, &["sleep", "600"]);
    let good = Container::run("poltag", &[], &good_image, &["sleep", "600"]);
    wait_for(&dw, &bad.name, 1);
    // Several cycles later it is still one episode.
    std::thread::sleep(Duration::from_secs(5));
    let m = dw.scrape();
    assert_eq!(
        active(&m, &bad.name),
        vec![series(
            "tags",
            "image_tag",
            "image",
            "MEDIUM",
            &bad.name,
            "dev"
        )]
    );
    assert_eq!(
        m.value(TOTAL, &[("container", &bad.name)]),
        1.0,
        "episodes, not cycles"
    );
    assert_eq!(
        m.value(
            TOTAL,
            &[
                ("policy", "tags"),
                ("rule", "image_tag"),
                ("severity", "MEDIUM"),
                ("container", &bad.name)
            ]
        ),
        1.0
    );
    assert!(active(&m, &good.name).is_empty());
    assert!(m.all(TOTAL, &[("container", &good.name)]).is_empty());
    assert_eq!(
        m.value(
            "dockwatch_policy_rules",
            &[("policy", "tags"), ("category", "image")]
        ),
        1.0
    );
    assert_eq!(m.value("dockwatch_config_last_reload_successful", &[]), 1.0);

    common::assert_promtool_clean(&m.text);

    // The container goes: the gauge goes, the counter stays.
    bad.remove();
    let m = dw.scrape_until(Duration::from_secs(20), |m| {
        m.all(ACTIVE, &[("container", &bad.name)]).is_empty()
    });
    assert!(active(&m, &bad.name).is_empty());
    assert_eq!(m.value(TOTAL, &[("container", &bad.name)]), 1.0);
}

#[test]
fn reachable_syscalls_from_configuration() {
    let image = common::image();
    let p = prefix("polsys");
    let (dw, _) = start(
        &format!(
            "runtime_policies:\n  - name: syscalls\n    selector: {{name: \"{p}*\"}}\n    blocked_syscalls: [ptrace, mount]\n"
        ),
        &[],
    );
    let profile = common::tempdir("seccomp").join("deny-ptrace-mount.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace","mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let allow_ptrace = common::tempdir("seccomp").join("deny-mount.json");
    std::fs::write(
        &allow_ptrace,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    // This engine cannot start privileged containers (its capability bounding set lacks
    // CAP_SYS_RESOURCE), so the privileged one is only created: created containers are checked
    // for what they will be allowed to do.
    let privileged = create("polsys", &["--privileged"], &image, &["sleep", "600"]);
    let sys_admin = Container::run(
        "polsys",
        &["--cap-add", "SYS_ADMIN"],
        &image,
        &["sleep", "600"],
    );
    let unconfined = Container::run(
        "polsys",
        &["--security-opt", "seccomp=unconfined"],
        &image,
        &["sleep", "600"],
    );
    let seccomp_opt = format!("seccomp={}", profile.display());
    let compliant = Container::run(
        "polsys",
        &["--security-opt", &seccomp_opt],
        &image,
        &["sleep", "600"],
    );
    let ptrace_opt = format!("seccomp={}", allow_ptrace.display());
    let custom = Container::run(
        "polsys",
        &["--security-opt", &ptrace_opt],
        &image,
        &["sleep", "600"],
    );
    let plain = Container::run("polsys", &[], &image, &["sleep", "600"]);

    let m = dw.scrape_until(Duration::from_secs(20), |m| {
        [&privileged, &unconfined]
            .iter()
            .all(|c| m.all(ACTIVE, &[("container", &c.name)]).len() == 2)
            && m.all(ACTIVE, &[("container", &sys_admin.name)]).len() == 1
            && m.all(ACTIVE, &[("container", &custom.name)]).len() == 1
    });
    let s = |c: &Container, sys: &str| {
        series(
            "syscalls",
            "runtime_syscall",
            "runtime",
            "CRITICAL",
            &c.name,
            sys,
        )
    };
    assert_eq!(
        active(&m, &privileged.name),
        vec![s(&privileged, "mount"), s(&privileged, "ptrace")]
    );
    assert_eq!(
        active(&m, &unconfined.name),
        vec![s(&unconfined, "mount"), s(&unconfined, "ptrace")]
    );
    assert_eq!(active(&m, &sys_admin.name), vec![s(&sys_admin, "mount")]);
    assert_eq!(active(&m, &custom.name), vec![s(&custom, "ptrace")]);
    assert!(active(&m, &compliant.name).is_empty());
    assert!(active(&m, &plain.name).is_empty());
    for c in [&privileged, &unconfined] {
        assert_eq!(m.value(TOTAL, &[("container", &c.name)]), 2.0);
    }
}

#[test]
fn disallowed_process() {
    let image = common::image();
    let p = prefix("polproc");
    let (dw, _) = start(
        &format!(
            "runtime_policies:\n  - name: procs\n    selector: {{name: \"{p}*\"}}\n    allowed_processes: [sleep, sh]\n"
        ),
        &["--policy.process-interval", "1s"],
    );
    let bad = Container::run(
        "polproc",
        &["--cpus", "0.1"],
        &image,
        &[
            "sh",
            "-c",
            "yes > /dev/null & echo $! > /tmp/yes.pid; sleep 600",
        ],
    );
    let good = Container::run("polproc", &[], &image, &["sh", "-c", "sleep 600"]);
    let m = wait_for(&dw, &bad.name, 1);
    assert_eq!(
        active(&m, &bad.name),
        vec![series(
            "procs",
            "runtime_process",
            "runtime",
            "HIGH",
            &bad.name,
            "yes"
        )]
    );
    assert!(active(&m, &good.name).is_empty());
    // The process ends: so does the episode.
    common::docker(&["exec", &bad.name, "sh", "-c", "kill $(cat /tmp/yes.pid)"]);
    let m = dw.scrape_until(Duration::from_secs(20), |m| {
        m.all(ACTIVE, &[("container", &bad.name)]).is_empty()
    });
    assert!(
        active(&m, &bad.name).is_empty(),
        "{:?}",
        active(&m, &bad.name)
    );
    assert_eq!(m.value(TOTAL, &[("container", &bad.name)]), 1.0);
}

#[test]
fn published_and_exposed_ports() {
    let image = common::image();
    let p = prefix("polport");
    let (dw, _) = start(
        &format!(
            "network_policies:\n  - name: ports\n    selector: {{name: \"{p}*\"}}\n    allowed_ports: [80, 443]\n"
        ),
        &[],
    );
    let host_port = common::free_port().to_string();
    let publish = format!("127.0.0.1:{host_port}:80");
    let bad = Container::run(
        "polport",
        &["-p", &publish, "--expose", "9000"],
        &image,
        &["sleep", "600"],
    );
    let good = Container::run("polport", &["--expose", "443"], &image, &["sleep", "600"]);
    let m = wait_for(&dw, &bad.name, 2);
    assert_eq!(
        active(&m, &bad.name),
        vec![
            series(
                "ports",
                "network_exposed_port",
                "network",
                "LOW",
                &bad.name,
                "9000/tcp"
            ),
            series(
                "ports",
                "network_port",
                "network",
                "HIGH",
                &bad.name,
                &format!("{host_port}/tcp")
            ),
        ]
    );
    assert!(active(&m, &good.name).is_empty());
}

#[test]
fn memory_ceiling() {
    let image = common::image();
    let p = prefix("polmem");
    let (dw, _) = start(
        &format!(
            "runtime_policies:\n  - name: mem\n    selector: {{name: \"{p}*\"}}\n    max_memory_mb: 8\n"
        ),
        &[],
    );
    // 24 MiB held in tmpfs count toward the container's working set.
    let bad = Container::run(
        "polmem",
        &[],
        &image,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 && sleep 600",
        ],
    );
    let good = Container::run("polmem", &[], &image, &["sleep", "600"]);
    let m = wait_for(&dw, &bad.name, 1);
    assert_eq!(
        active(&m, &bad.name),
        vec![series(
            "mem",
            "runtime_memory",
            "runtime",
            "MEDIUM",
            &bad.name,
            "memory"
        )]
    );
    let ws = m.value(
        "dockwatch_container_memory_working_set_bytes",
        &[("name", &bad.name)],
    );
    assert!(ws > 8.0 * 1048576.0, "working set {ws}");
    // Give the compliant one a few cycles with stats.
    std::thread::sleep(Duration::from_secs(3));
    let m = dw.scrape();
    assert!(active(&m, &good.name).is_empty());
}

#[test]
fn connection_to_blocked_address() {
    let image = common::image();
    let p = prefix("polnet");
    let (dw, _) = start(
        &format!(
            "network_policies:\n  - name: egress\n    selector: {{name: \"{p}*\"}}\n    blocked_ips: [127.0.0.2, \"192.0.2.0/24\"]\n"
        ),
        &[],
    );
    // Loopback only: a listener and a client inside the same container.
    let bad = Container::run(
        "polnet",
        &[],
        &image,
        &[
            "sh",
            "-c",
            "sleep 600 | nc -l -p 9999 & sleep 1; sleep 600 | nc 127.0.0.2 9999",
        ],
    );
    let good = Container::run(
        "polnet",
        &[],
        &image,
        &[
            "sh",
            "-c",
            "sleep 600 | nc -l -p 9999 & sleep 1; sleep 600 | nc 127.0.0.1 9999",
        ],
    );
    let m = wait_for(&dw, &bad.name, 1);
    assert_eq!(
        active(&m, &bad.name),
        vec![series(
            "egress",
            "network_destination",
            "network",
            "CRITICAL",
            &bad.name,
            "127.0.0.2:9999/tcp"
        )]
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = dw.scrape();
    assert!(active(&m, &good.name).is_empty());
    // Enforce mode, CRITICAL, but no --enforce: quarantine is only reported.
    assert!(dw.log_text().contains("quarantine"), "{}", dw.log_text());
    assert_eq!(
        common::docker(&["inspect", "-f", "{{.State.Running}}", &bad.name]),
        "true"
    );
}

#[test]
fn reload_keeps_the_last_good_policy() {
    let bad_image = common::ensure_image("dwt-policy/app:dev");
    let p = prefix("polreload");
    let first = format!(
        "image_policies:\n  - name: tags\n    selector: {{name: \"{p}*\"}}\n    allowed_tags: [\"v*\"]\n"
    );
    let (dw, path) = start(&first, &["--policy.watch-interval", "1h"]);
    let bad = Container::run("polreload", &[], &bad_image, &["sleep", "600"]);
    wait_for(&dw, &bad.name, 1);
    let m = dw.scrape();
    let ok_at = m.value(
        "dockwatch_config_last_reload_success_timestamp_seconds",
        &[],
    );

    // A broken file on SIGHUP: refused, logged with file, line and field; the policy stays.
    std::fs::write(&path, format!("{first}    max_severity: SEVERE\n")).unwrap();
    dw.signal("HUP");
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_config_last_reload_successful", &[]) == Some(0.0)
    });
    assert_eq!(m.value("dockwatch_config_last_reload_successful", &[]), 0.0);
    assert_eq!(
        m.value(
            "dockwatch_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        ok_at
    );
    let want = format!(
        "{}:5:19: image_policies[0].max_severity: unknown variant `SEVERE`",
        path.display()
    );
    assert!(
        dw.log_text().contains(&want),
        "{want} not in log:\n{}",
        dw.log_text()
    );
    assert_eq!(active(&m, &bad.name).len(), 1);

    // The same broken file through the API: 500 with the error.
    let resp = ureq::post(&dw.url("/-/reload")).send_empty();
    let err = resp.unwrap_err().to_string();
    assert!(err.contains("500"), "{err}");

    // A good file through the API: applied at once, the violation ends.
    std::fs::write(
        &path,
        format!("image_policies:\n  - name: tags\n    selector: {{name: \"{p}*\"}}\n    allowed_tags: [\"v*\", dev]\n"),
    )
    .unwrap();
    let mut resp = ureq::post(&dw.url("/-/reload")).send_empty().unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.contains("tag matches one of [v*, dev]"), "{body}");
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.all(ACTIVE, &[("container", &bad.name)]).is_empty()
    });
    assert!(active(&m, &bad.name).is_empty());
    assert_eq!(m.value("dockwatch_config_last_reload_successful", &[]), 1.0);
    assert!(
        m.value(
            "dockwatch_config_last_reload_success_timestamp_seconds",
            &[]
        ) > ok_at
    );
    assert_eq!(m.value(TOTAL, &[("container", &bad.name)]), 1.0);
}

#[test]
fn violating_run_shows_within_two_seconds() {
    let bad_image = common::ensure_image("dwt-policy/app:dev");
    let p = prefix("polfast");
    let path = write_policy(&format!(
        "image_policies:\n  - name: tags\n    selector: {{name: \"{p}*\"}}\n    allowed_tags: [\"v*\"]\n"
    ));
    let dw = Dockwatch::start(&[
        "--policy.file",
        path.to_str().unwrap(),
        "--collect.interval",
        "30s",
    ]);
    let before_run = Instant::now();
    let bad = Container::run("polfast", &[], &bad_image, &["sleep", "600"]);
    let started = Instant::now();
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        !m.all(ACTIVE, &[("container", &bad.name)]).is_empty()
    });
    let latency = started.elapsed();
    assert_eq!(active(&m, &bad.name).len(), 1);
    eprintln!(
        "violation on /metrics {:.2}s after docker run returned ({:.2}s after it was invoked)",
        latency.as_secs_f64(),
        before_run.elapsed().as_secs_f64()
    );
    assert!(latency < Duration::from_secs(2), "took {latency:?}");
}

#[test]
fn check_policy_subcommand() {
    let good = write_policy(
        "network_policies:\n  - name: web\n    allowed_ports: [80]\n    blocked_ips: [\"198.51.100.0/24\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args(["check-policy", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok, 1 policies, 3 rules"), "{text}");
    assert!(
        text.contains("network policy \"web\" (mode enforce): applies to every container"),
        "{text}"
    );
    assert!(
        text.contains("  network_port           HIGH      published host ports in [80]"),
        "{text}"
    );

    let bad =
        write_policy("network_policies:\n  - name: web\n    blocked_ips: [\"198.51.100.0/99\"]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args(["check-policy", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "dockwatch: {}:3:19: network_policies[0].blocked_ips[0]: invalid address or CIDR \"198.51.100.0/99\"\n",
            bad.display()
        )
    );
}

#[test]
fn vulnerability_reports_and_policy_file_changes() {
    let image = common::ensure_image("dwt-policy/app:v1.2.3");
    let image_id = common::docker(&["image", "inspect", "-f", "{{.Id}}", &image]);
    let p = prefix("polvuln");
    let reports = common::tempdir("reports");
    std::fs::write(
        reports.join("trivy.json"),
        format!(
            r#"{{"SchemaVersion": 2, "ArtifactName": "{image}", "Metadata": {{"ImageID": "{image_id}"}},
  "Results": [{{"Target": "app", "Vulnerabilities": [
    {{"VulnerabilityID": "CVE-2021-44228", "PkgName": "log4j-core", "Severity": "CRITICAL"}},
    {{"VulnerabilityID": "CVE-2022-0001", "PkgName": "zlib", "Severity": "MEDIUM"}}]}}]}}"#
        ),
    )
    .unwrap();
    let policy = format!(
        "image_policies:\n  - name: vulns\n    selector: {{name: \"{p}*\"}}\n    mode: dry-run\n    blocked_cves: [CVE-2021-44228]\n    max_severity: HIGH\n"
    );
    let path = write_policy(&policy);
    let dw = Dockwatch::start(&[
        "--policy.file",
        path.to_str().unwrap(),
        "--policy.reports-dir",
        reports.to_str().unwrap(),
        "--policy.watch-interval",
        "1s",
        "--collect.interval",
        "2s",
    ]);
    let scanned = Container::run("polvuln", &[], &image, &["sleep", "600"]);
    let m = wait_for(&dw, &scanned.name, 2);
    let dry = |rule: &str, sev: &str, subject: &str| {
        let mut s = series("vulns", rule, "image", sev, &scanned.name, subject);
        s.insert("mode".into(), "dry-run".into());
        s
    };
    assert_eq!(
        active(&m, &scanned.name),
        vec![
            dry("image_cve", "CRITICAL", "CVE-2021-44228"),
            dry("image_severity", "CRITICAL", "CVE-2021-44228"),
        ]
    );
    assert_eq!(m.value("dockwatch_vulnerability_reports", &[]), 1.0);
    assert_eq!(
        m.value("dockwatch_policy_rules", &[("policy", "vulns")]),
        3.0
    );

    // The report is replaced by a clean scan: the reports dir is re-read and both end.
    std::fs::write(
        reports.join("trivy.json"),
        format!(r#"{{"SchemaVersion": 2, "ArtifactName": "{image}", "Metadata": {{"ImageID": "{image_id}"}}, "Results": []}}"#),
    )
    .unwrap();
    let m = dw.scrape_until(Duration::from_secs(15), |m| {
        m.all(ACTIVE, &[("container", &scanned.name)]).is_empty()
    });
    assert!(active(&m, &scanned.name).is_empty());

    // An image without a report is unscanned once the file changes to ask for it.
    let other = common::ensure_image("dwt-policy/app:dev");
    let unscanned = Container::run("polvuln", &[], &other, &["sleep", "600"]);
    let m = wait_for(&dw, &unscanned.name, 1);
    let mut want = series(
        "vulns",
        "image_unscanned",
        "image",
        "LOW",
        &unscanned.name,
        &other,
    );
    want.insert("mode".into(), "dry-run".into());
    assert_eq!(active(&m, &unscanned.name), vec![want]);
    std::fs::write(&path, format!("{policy}    require_report: false\n")).unwrap();
    let m = dw.scrape_until(Duration::from_secs(15), |m| {
        m.all(ACTIVE, &[("container", &unscanned.name)]).is_empty()
    });
    assert!(
        active(&m, &unscanned.name).is_empty(),
        "file change not applied:\n{}",
        dw.log_text()
    );
    assert_eq!(
        m.value("dockwatch_policy_rules", &[("policy", "vulns")]),
        2.0
    );
}
