//! The shipped monitoring stack: Prometheus rules, Alertmanager routing, Grafana dashboards and
//! the compose file, checked with their own tools and then run live.
//!
//! Static checks run `promtool`, `amtool` and `docker-compose` over the shipped files. Live
//! checks start a real dockwatch, a real Prometheus (Debian `prometheus`) loading the shipped
//! rules, and a real Alertmanager (Debian `prometheus-alertmanager`) with the shipped routing
//! whose webhook receivers point at a small HTTP server inside the test.
//!
//! The live Prometheus scrapes dockwatch under the job name [`LIVE_JOB`] after rewriting the
//! rules with the one documented command (docs/stack.md, "Job selector"), and scrapes it a
//! second time as the job `decoy`: any rule or panel query that forgets the job selector
//! returns `decoy` series and fails.
//!
//! Live checks are split by the part of dockwatch whose metrics they need, so a failure names
//! the part: `core` (exporter and container metrics), `cgroup` (figures only the cgroup reader
//! has), `host` (the full host collector), `policy` (policy engine), `events` (event sinks) and
//! `anomaly` (z-scores, recommendations).
//! See [`area_of`].

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Container, Dockwatch, free_port, image, require, tempdir};

/// The job name the live Prometheus scrapes dockwatch under.
const LIVE_JOB: &str = "dockwatch-live";

/// The selector every shipped rule expression uses; docs/stack.md documents the rewrite.
const JOB_SELECTOR: &str = r#"job="dockwatch""#;

/// Severities the Alertmanager routes know.
const SEVERITIES: &[&str] = &["page", "alert", "ticket", "info"];

/// Dashboard panels (dashboard uid, panel title) and annotations (dashboard uid, annotation
/// name) that return no data until something happens. Keep in step with docs/stack.md.
const EMPTY_UNTIL_EVENT: &[(&str, &str, &str)] = &[
    (
        "dockwatch-containers",
        "Anomalies in range",
        "no anomaly has been detected yet",
    ),
    (
        "dockwatch-containers",
        "Recommendations",
        "no container has earned a recommendation yet",
    ),
    (
        "dockwatch-containers",
        "Container anomalies",
        "annotation: no anomaly has been detected yet",
    ),
    (
        "dockwatch-host",
        "Host anomalies",
        "annotation: no host anomaly has been detected yet",
    ),
    (
        "dockwatch-security",
        "Enforcement actions",
        "no enforce-mode policy has acted yet",
    ),
    (
        "dockwatch-security",
        "Events dropped",
        "no event sink has dropped an event yet",
    ),
    (
        "dockwatch-security",
        "Unscanned images",
        "needs vulnerability reports and a policy that requires them",
    ),
];

/// Host metrics the core exporter serves; every other `dockwatch_host_` metric comes from the
/// full host collector.
const CORE_HOST_METRICS: &[&str] = &[
    "dockwatch_host_cpu_usage_ratio",
    "dockwatch_host_cpus",
    "dockwatch_host_memory_total_bytes",
    "dockwatch_host_memory_available_bytes",
    "dockwatch_host_memory_used_bytes",
];

/// Container metrics only the cgroup reader reports (the Engine API has no such figures).
const CGROUP_METRICS: &[&str] = &[
    "dockwatch_container_memory_failures_total",
    "dockwatch_container_memory_oom_kills_total",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn rules_pass_promtool_check() {
    require("promtool", "prometheus");
    let files = rule_files(&root().join("prometheus-rules"));
    assert!(
        files.len() >= 2,
        "alerts.yml and records.yml at least: {files:?}"
    );
    run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .args(&files),
    );
}

#[test]
fn rules_pass_promtool_unit_tests() {
    require("promtool", "prometheus");
    let tests = rule_test_files();
    assert!(!tests.is_empty(), "no prometheus-rules/tests/*_test.yml");
    let out = run_ok(
        Command::new("promtool")
            .arg("test")
            .arg("rules")
            .args(&tests),
    );
    assert_eq!(out.matches("SUCCESS").count(), tests.len(), "{out}");
}

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let alerts: BTreeSet<String> = all_rules(&root().join("prometheus-rules"))
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in rule_test_files() {
        let doc = load_yaml(&file);
        for test in doc["tests"].as_array().into_iter().flatten() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                match case["exp_alerts"].as_array() {
                    Some(a) if !a.is_empty() => fires.insert(name),
                    _ => silent.insert(name),
                };
            }
        }
    }
    let no_fire: Vec<_> = alerts.difference(&fires).collect();
    let no_silent: Vec<_> = alerts.difference(&silent).collect();
    assert!(
        no_fire.is_empty(),
        "alerts without a firing unit test: {no_fire:?}"
    );
    assert!(
        no_silent.is_empty(),
        "alerts without a must-not-fire unit test: {no_silent:?}"
    );
}

#[test]
fn alerts_carry_severity_summary_description_and_for() {
    let rules = all_rules(&root().join("prometheus-rules"));
    let alerts: Vec<&Value> = rules.iter().filter(|r| r["alert"].is_string()).collect();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    for a in alerts {
        let name = a["alert"].as_str().unwrap();
        let severity = a["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            SEVERITIES.contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(a["for"].is_string(), "{name}: no explicit for:");
        let summary = a["annotations"]["summary"].as_str().unwrap_or_default();
        let description = a["annotations"]["description"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && !description.is_empty(),
            "{name}: annotations"
        );
        // absent() has no value worth printing.
        if name != "DockwatchAbsent" {
            assert!(
                description.contains("$value"),
                "{name}: description without the value"
            );
        }
        let expr = a["expr"].as_str().unwrap();
        let per_container = [
            "dockwatch_container_",
            "dockwatch_anomaly_",
            "dockwatch_policy_violation",
        ]
        .iter()
        .any(|p| expr.contains(p));
        if per_container {
            assert!(
                description.contains("$labels.name") || description.contains("$labels.container"),
                "{name}: description does not name the container"
            );
            assert!(
                a["labels"]["container"].is_string() || expr.contains("dockwatch_policy_violation"),
                "{name}: no container label for grouping and inhibition"
            );
        }
    }
}

#[test]
fn rule_expressions_all_use_the_job_selector() {
    for rule in all_rules(&root().join("prometheus-rules")) {
        let expr = rule["expr"].as_str().unwrap();
        for (metric, matchers) in selectors(expr) {
            assert!(
                matchers.contains(JOB_SELECTOR),
                "{metric} in {} has no {JOB_SELECTOR}: {expr}",
                rule_name(&rule)
            );
        }
        let job_mentions = expr.matches("job=").count() + expr.matches("job!").count();
        assert_eq!(
            job_mentions,
            expr.matches(JOB_SELECTOR).count(),
            "{}: the job is named other than through {JOB_SELECTOR}: {expr}",
            rule_name(&rule)
        );
    }
}

#[test]
fn alertmanager_config_is_valid_and_routes_by_severity() {
    require("amtool", "prometheus-alertmanager");
    let config = root().join("alertmanager/alertmanager.yml");
    run_ok(Command::new("amtool").arg("check-config").arg(&config));
    for severity in SEVERITIES {
        let out = run_ok(
            Command::new("amtool")
                .args(["config", "routes", "test", "--config.file"])
                .arg(&config)
                .arg(format!("severity={severity}")),
        );
        assert_eq!(out.trim(), *severity, "severity={severity} routes to {out}");
    }
    let doc = load_yaml(&config);
    let group_by: Vec<&str> = doc["route"]["group_by"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(group_by, ["alertname", "container"]);
    let inhibits = doc["inhibit_rules"].as_array().unwrap();
    assert!(
        inhibits.iter().any(|r| {
            r["source_matchers"][0].as_str() == Some(r#"alertname="DockwatchDockerEngineDown""#)
                && r["target_matchers"][0].as_str() == Some(r#"container=~".+""#)
        }),
        "per-container alerts are not inhibited while the engine is down"
    );
}

#[test]
fn compose_file_and_prometheus_config_are_valid() {
    require("docker-compose", "docker-compose");
    require("promtool", "prometheus");
    run_ok(
        Command::new("docker-compose")
            .arg("-f")
            .arg(root().join("docker-compose.yml"))
            .args(["config", "-q"]),
    );
    run_ok(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(root().join("prometheus/prometheus.yml")),
    );

    let compose = load_yaml(&root().join("docker-compose.yml"));
    assert!(
        compose.get("version").is_none(),
        "Compose Specification files have no version key"
    );
    let dw = &compose["services"]["dockwatch"];
    assert_eq!(dw["pid"], "host");
    let command: Vec<&str> = dw["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in [
        "--path.procfs=/host/proc",
        "--path.rootfs=/host/root",
        "--collector.cgroup.root=/host/sys/fs/cgroup",
    ] {
        assert!(
            command.contains(&flag),
            "dockwatch command lacks {flag}: {command:?}"
        );
    }
    let mounts: BTreeMap<&str, &Value> = dw["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["target"].as_str().unwrap(), v))
        .collect();
    for (source, target) in [
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/proc", "/host/proc"),
        ("/sys/fs/cgroup", "/host/sys/fs/cgroup"),
        ("/", "/host/root"),
    ] {
        let m = mounts
            .get(target)
            .unwrap_or_else(|| panic!("no mount at {target}"));
        assert_eq!(m["source"], source);
        assert_eq!(m["read_only"], true, "{target} must be read-only");
    }
    // Every shipped file the stack mounts exists.
    for path in [
        "prometheus/prometheus.yml",
        "alertmanager/alertmanager.yml",
        "grafana/provisioning",
        "grafana/dashboards",
        "prometheus-rules",
        "Dockerfile",
    ] {
        assert!(root().join(path).exists(), "{path} missing");
    }
    let provider = load_yaml(&root().join("grafana/provisioning/dashboards/dashboards.yml"));
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let grafana_volumes = compose["services"]["grafana"]["volumes"].to_string();
    assert!(
        grafana_volumes.contains("./grafana/dashboards:/var/lib/grafana/dashboards"),
        "{grafana_volumes}"
    );
}

#[test]
fn dockerfile_builds_in_two_stages() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:1.95") && froms[0].ends_with(" AS builder"),
        "{}",
        froms[0]
    );
    assert_eq!(froms[1], "FROM debian:bookworm-slim");
    assert!(text.contains("COPY --from=builder"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/dockwatch\"]"));
}

#[test]
fn dashboards_have_unique_uids_titles_and_use_the_datasource_variable() {
    let dashboards = dashboards();
    assert_eq!(dashboards.len(), 3, "host, containers, security");
    let mut uids = BTreeSet::new();
    for (file, d) in &dashboards {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(
            !d["title"].as_str().unwrap_or_default().is_empty(),
            "{file}: no title"
        );

        let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        assert_eq!(vars["datasource"]["type"], "datasource", "{file}");
        assert_eq!(vars["datasource"]["query"], "prometheus", "{file}");
        let mut needed = vec!["instance"];
        if uid != "dockwatch-host" {
            needed.push("container");
        }
        for name in needed {
            let v = vars
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no {name} variable"));
            assert_eq!(v["type"], "query", "{file}: {name}");
            assert!(
                v["query"]["query"]
                    .as_str()
                    .unwrap()
                    .starts_with("label_values("),
                "{file}: {name}"
            );
        }

        let mut refs = Vec::new();
        datasource_refs(d, "", &mut refs);
        assert!(
            refs.len() > 20,
            "{file}: only {} datasource references",
            refs.len()
        );
        for (path, r) in refs {
            assert_eq!(r["uid"], "${datasource}", "{file}: {path} uses {r}");
        }

        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: panel {} without title", p["id"]);
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id {} twice",
                p["id"]
            );
            if p["type"] != "row" {
                assert!(
                    !p["targets"].as_array().unwrap().is_empty(),
                    "{file}: {title} has no query"
                );
            }
        }
    }
    // The empty-until-event list names real panels and annotations.
    let names: BTreeSet<(String, String)> = panel_queries(&dashboards)
        .into_iter()
        .map(|q| (q.dashboard, q.panel))
        .collect();
    for (uid, title, _) in EMPTY_UNTIL_EVENT {
        assert!(
            names.contains(&(uid.to_string(), title.to_string())),
            "{uid}: no panel {title}"
        );
    }
}

#[test]
fn stack_docs_list_every_alert_and_empty_panel() {
    let doc = std::fs::read_to_string(root().join("docs/stack.md")).unwrap();
    for rule in all_rules(&root().join("prometheus-rules")) {
        if let Some(name) = rule["alert"].as_str() {
            assert!(doc.contains(name), "docs/stack.md does not list {name}");
        }
    }
    for (_, title, _) in EMPTY_UNTIL_EVENT {
        assert!(
            doc.contains(title),
            "docs/stack.md does not list the empty panel {title}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Live alerting

/// A container OOM-killed at start reaches the `alert` receiver and resolves when removed.
/// Needs only core metrics.
#[test]
fn live_oom_kill_alerts_and_resolves() {
    let stack = Stack::start(&[], true);
    let c = Container::run(
        "stack-oom",
        &["-m", "8m", "--memory-swap", "8m"],
        &image(),
        &[
            "sh",
            "-c",
            // The pause lets the engine watch the cgroup before the kill: a container that dies
            // within its first milliseconds can exit 137 with OOMKilled still false.
            "sleep 1; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    let hook = stack.webhook.as_ref().unwrap();
    let firing = hook
        .wait_for(
            Duration::from_secs(90),
            "/alert",
            "DockwatchContainerOOMKilled",
            &c.name,
            "firing",
        )
        .unwrap_or_else(|| {
            let state = common::docker(&["inspect", "--format", "{{json .State}}", &c.name]);
            let scrape = stack.dockwatch.get("/metrics");
            let series: Vec<&str> = scrape.lines().filter(|l| l.contains(&c.name)).collect();
            panic!(
                "no firing notification; container state {state}\ndockwatch series:\n{}\n{}",
                series.join("\n"),
                stack.diagnostics()
            )
        });
    assert_eq!(firing["labels"]["severity"], "alert");
    assert_eq!(firing["labels"]["job"], LIVE_JOB);
    assert_eq!(firing["labels"]["id"], c.short_id());
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(description.contains(&c.name), "{description}");

    c.remove();
    hook.wait_for(
        Duration::from_secs(90),
        "/alert",
        "DockwatchContainerOOMKilled",
        &c.name,
        "resolved",
    )
    .unwrap_or_else(|| panic!("no resolved notification\n{}", stack.diagnostics()));
    hook.assert_only_job(LIVE_JOB);
}

/// A container with CAP_SYS_ADMIN (the part of `--privileged` this engine allows) violates the
/// CRITICAL rule of tests/fixtures/stack-policy.yml: the
/// page receiver gets the alert with container and policy labels, then the resolution.
/// Needs the policy engine (`--policy.file`, dockwatch_policy_violation_active).
#[test]
fn live_critical_violation_pages_and_resolves() {
    let policy = root().join("tests/fixtures/stack-policy.yml");
    let stack = Stack::start(&["--policy.file", policy.to_str().unwrap()], true);
    let c = Container::run(
        "stack-priv",
        &["--cap-add", "SYS_ADMIN"],
        &image(),
        &["sleep", "600"],
    );
    let hook = stack.webhook.as_ref().unwrap();
    let firing = hook
        .wait_for(
            Duration::from_secs(90),
            "/page",
            "DockwatchPolicyViolationCritical",
            &c.name,
            "firing",
        )
        .unwrap_or_else(|| panic!("no page\n{}", stack.diagnostics()));
    let labels = &firing["labels"];
    assert_eq!(labels["severity"], "page");
    assert_eq!(labels["policy_severity"], "CRITICAL");
    assert_eq!(labels["policy"], "no-privileged");
    assert_eq!(labels["rule"], "runtime_syscall");
    assert_eq!(labels["category"], "runtime");
    assert_eq!(labels["container"], c.name.as_str());
    assert_eq!(labels["job"], LIVE_JOB);
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains(&c.name) && description.contains("no-privileged"),
        "{description}"
    );
    // A page goes to the page receiver only.
    for path in ["/alert", "/ticket", "/info"] {
        assert!(
            !hook.received(path).iter().any(|n| alert_in(
                n,
                "DockwatchPolicyViolationCritical",
                &c.name,
                "firing"
            )
            .is_some()),
            "the page also reached {path}"
        );
    }

    c.remove();
    hook.wait_for(
        Duration::from_secs(90),
        "/page",
        "DockwatchPolicyViolationCritical",
        &c.name,
        "resolved",
    )
    .unwrap_or_else(|| panic!("no resolved notification\n{}", stack.diagnostics()));
    hook.assert_only_job(LIVE_JOB);
}

// ---------------------------------------------------------------------------------------------
// Live dashboards and recording rules

/// Which part of dockwatch a query's metrics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    /// Exporter, container and the basic host metrics.
    Core,
    /// Container figures read from the cgroup filesystem.
    Cgroup,
    /// The full host collector.
    Host,
    /// Policy engine and enforcement.
    Policy,
    /// Event sinks.
    Events,
    /// Anomaly z-scores and recommendations.
    Anomaly,
}

/// The area of the most specific metric `expr` uses.
fn area_of(expr: &str) -> Area {
    let metrics: Vec<String> = selectors(expr).into_iter().map(|(m, _)| m).collect();
    let any = |f: &dyn Fn(&str) -> bool| metrics.iter().any(|m| f(m));
    if any(&|m| m.contains("anomal") || m.starts_with("dockwatch_recommendation")) {
        Area::Anomaly
    } else if any(&|m| m.starts_with("dockwatch_events_")) {
        Area::Events
    } else if any(&|m| {
        [
            "dockwatch_policy_",
            "dockwatch_enforcement_",
            "dockwatch_vulnerability_",
            "dockwatch_config_",
        ]
        .iter()
        .any(|p| m.starts_with(p))
    }) {
        Area::Policy
    } else if any(&|m| m.starts_with("dockwatch_host_") && !CORE_HOST_METRICS.contains(&m)) {
        Area::Host
    } else if any(&|m| CGROUP_METRICS.contains(&m)) {
        Area::Cgroup
    } else {
        Area::Core
    }
}

#[test]
fn live_core_panels_and_recording_rules_return_data() {
    live_queries_return_data(Area::Core);
}

#[test]
fn live_cgroup_panels_return_data() {
    live_queries_return_data(Area::Cgroup);
}

#[test]
fn live_host_panels_return_data() {
    live_queries_return_data(Area::Host);
}

#[test]
fn live_policy_panels_return_data() {
    live_queries_return_data(Area::Policy);
}

/// Event sinks count what a violation emits, so this runs the policy of the policy test too.
#[test]
fn live_events_panels_return_data() {
    live_queries_return_data(Area::Events);
}

#[test]
fn live_anomaly_panels_and_recording_rules_return_data() {
    live_queries_return_data(Area::Anomaly);
}

fn live_queries_return_data(area: Area) {
    let policy = root().join("tests/fixtures/stack-policy.yml");
    let events = tempdir("stack-events").join("events.jsonl");
    let mut args: Vec<String> = Vec::new();
    let mut opts = vec![
        "--cpus",
        "0.5",
        "-m",
        "64m",
        "--pids-limit",
        "64",
        "--tmpfs",
        "/scratch:size=24m",
    ];
    if matches!(area, Area::Policy | Area::Events) {
        args.extend(["--policy.file".into(), policy.display().to_string()]);
        opts.extend(["--cap-add", "SYS_ADMIN"]);
    }
    if area == Area::Events {
        args.extend(["--events.file".into(), events.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stack = Stack::start(&args, false);
    // Varying CPU and memory (tmpfs pages count in the working set), so that standard
    // deviations and z-scores exist.
    let workload = Container::run(
        "stack-load",
        &opts,
        &image(),
        &[
            "sh",
            "-c",
            "while true; do dd if=/dev/zero of=/scratch/f bs=64k count=$((RANDOM % 300 + 1)) 2>/dev/null; \
             i=0; while [ $i -lt $((RANDOM % 3000)) ]; do i=$((i+1)); done; sleep 0.3; done",
        ],
    );
    let vars = Vars {
        instance: format!("127.0.0.1:{}", stack.dockwatch.port),
        container: workload.name.clone(),
    };

    let dashboards = dashboards();
    let mut queries: Vec<Query> = panel_queries(&dashboards)
        .into_iter()
        .filter(|q| {
            !EMPTY_UNTIL_EVENT
                .iter()
                .any(|(d, p, _)| *d == q.dashboard && *p == q.panel)
        })
        .map(|q| Query {
            expr: vars.substitute(&q.expr),
            ..q
        })
        .collect();
    for rule in all_rules(&stack.rules_dir) {
        if let Some(record) = rule["record"].as_str() {
            queries.push(Query {
                dashboard: "recording rule".into(),
                panel: record.to_string(),
                expr: rule["expr"].as_str().unwrap().to_string(),
            });
        }
    }
    queries.retain(|q| area_of(&q.expr) == area);
    assert!(!queries.is_empty(), "no {area:?} queries");

    // Poll until every query has data; rates need a few scrapes, windows a few samples.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<(Query, String)> =
        queries.into_iter().map(|q| (q, String::new())).collect();
    let total = pending.len();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain_mut(|(q, why)| match stack.query(&q.expr) {
            Ok(result) if result.is_empty() => {
                *why = "no data".into();
                true
            }
            Ok(result) => {
                let decoys: Vec<&Value> = result
                    .iter()
                    .filter(|s| s["metric"]["job"] == "decoy")
                    .collect();
                assert!(
                    decoys.is_empty(),
                    "{} / {}: ignores the job selector: {decoys:?}\n{}",
                    q.dashboard,
                    q.panel,
                    q.expr
                );
                false
            }
            Err(e) => {
                *why = e;
                true
            }
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let report: Vec<String> = pending
        .iter()
        .map(|(q, why)| format!("  {} / {}: {why}\n    {}", q.dashboard, q.panel, q.expr))
        .collect();
    assert!(
        report.is_empty(),
        "{} of {total} {area:?} queries returned nothing:\n{}\n{}",
        report.len(),
        report.join("\n"),
        stack.diagnostics()
    );
}

/// Values the live test gives the dashboard variables.
struct Vars {
    instance: String,
    container: String,
}

impl Vars {
    /// The query Grafana would send: variables and interval macros replaced.
    fn substitute(&self, expr: &str) -> String {
        expr.replace("${job}", LIVE_JOB)
            .replace("$job", LIVE_JOB)
            .replace("${instance}", &self.instance)
            .replace("$instance", &self.instance)
            .replace("${container}", &self.container)
            .replace("$container", &self.container)
            .replace("$__rate_interval", "10s")
            .replace("$__interval", "2s")
            .replace("$__range", "5m")
    }
}

/// One query of a panel, annotation or recording rule.
#[derive(Debug, Clone)]
struct Query {
    dashboard: String,
    panel: String,
    expr: String,
}

// ---------------------------------------------------------------------------------------------
// The live stack

/// dockwatch, Prometheus and optionally Alertmanager with a webhook receiver; all on loopback,
/// all stopped on drop.
struct Stack {
    dockwatch: Dockwatch,
    prometheus: Child,
    prometheus_port: u16,
    alertmanager: Option<(Child, u16)>,
    webhook: Option<Webhook>,
    dir: PathBuf,
    rules_dir: PathBuf,
}

impl Stack {
    fn start(dockwatch_args: &[&str], with_alertmanager: bool) -> Stack {
        require("prometheus", "prometheus");
        alertmanager_binary();
        common::require_docker();
        let dir = tempdir("stack");
        let mut args = vec!["--collect.interval", "1s"];
        args.extend_from_slice(dockwatch_args);
        let dockwatch = Dockwatch::start(&args);

        let rules_dir = dir.join("rules");
        std::fs::create_dir_all(&rules_dir).unwrap();
        for file in rule_files(&root().join("prometheus-rules")) {
            std::fs::copy(&file, rules_dir.join(file.file_name().unwrap())).unwrap();
        }
        // The documented way to change the job selector, exactly as docs/stack.md gives it.
        let sed = format!(r#"s/job="dockwatch"/job="{LIVE_JOB}"/g"#);
        let copies = rule_files(&rules_dir);
        run_ok(Command::new("sed").arg("-i").arg(&sed).args(&copies));
        // Long-window groups are evaluated every minute or two in production; here every second.
        for file in &copies {
            let text = std::fs::read_to_string(file).unwrap();
            std::fs::write(file, rewrite_keys(&text, &["interval"], "1s")).unwrap();
        }

        let (alertmanager, webhook, alerting) = if with_alertmanager {
            let hook = Webhook::start();
            let port = free_port();
            let am = start_alertmanager(&dir, port, hook.port);
            let alerting = format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{port}']\n"
            );
            (Some((am, port)), Some(hook), alerting)
        } else {
            (None, None, String::new())
        };

        let prometheus_port = free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}/*.yml\n{alerting}\
             scrape_configs:\n  - job_name: {LIVE_JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{dw}']\n\
             \x20 - job_name: decoy\n    static_configs:\n      - targets: ['127.0.0.1:{dw}']\n",
            rules = rules_dir.display(),
            dw = dockwatch.port,
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let prometheus = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg("--rules.alert.resend-delay=1s")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let stack = Stack {
            dockwatch,
            prometheus,
            prometheus_port,
            alertmanager,
            webhook,
            dir,
            rules_dir,
        };
        wait_ready(
            &format!("http://127.0.0.1:{prometheus_port}/-/ready"),
            || stack.diagnostics(),
        );
        // The rules loaded and the shipped alerts are all there.
        let rules = http_json(&format!("http://127.0.0.1:{prometheus_port}/api/v1/rules")).unwrap();
        let loaded = rules["data"]["groups"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        assert!(
            loaded >= 7,
            "prometheus loaded {loaded} rule groups\n{}",
            stack.diagnostics()
        );
        stack
    }

    /// Instant query; the result vector.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.prometheus_port);
        let mut resp = ureq::post(&url)
            .send_form([("query", expr)])
            .map_err(|e| format!("query failed: {e}"))?;
        let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        match body["data"]["result"].as_array() {
            Some(r) => Ok(r.clone()),
            None => Ok(Vec::new()),
        }
    }

    /// Logs and state for a failure message.
    fn diagnostics(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let alerts = http_json(&format!(
            "http://127.0.0.1:{}/api/v1/alerts",
            self.prometheus_port
        ))
        .map(|v| v["data"]["alerts"].to_string())
        .unwrap_or_default();
        let targets = http_json(&format!(
            "http://127.0.0.1:{}/api/v1/targets",
            self.prometheus_port
        ))
        .map(|v| v["data"]["activeTargets"].to_string())
        .unwrap_or_default();
        let hook = self
            .webhook
            .as_ref()
            .map(|h| format!("{:?}", h.all()))
            .unwrap_or_default();
        let dw = self.dockwatch.log_text();
        let mut dw_lines: Vec<&str> = dw.lines().filter(|l| !l.contains("bollard")).collect();
        let dw_tail = dw_lines
            .split_off(dw_lines.len().saturating_sub(20))
            .join("\n");
        format!(
            "prometheus alerts: {alerts}\nprometheus targets: {targets}\nwebhook: {hook}\n\
             prometheus log:\n{}\nalertmanager log:\n{}\ndockwatch log (tail):\n{dw_tail}",
            read("prometheus.log"),
            read("alertmanager.log"),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.prometheus.kill();
        let _ = self.prometheus.wait();
        if let Some((am, _)) = &mut self.alertmanager {
            let _ = am.kill();
            let _ = am.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts Alertmanager with the shipped configuration, its receiver URLs pointed at the test
/// webhook and its group timers shortened.
fn start_alertmanager(dir: &Path, port: u16, hook_port: u16) -> Child {
    let shipped = std::fs::read_to_string(root().join("alertmanager/alertmanager.yml")).unwrap();
    assert!(
        shipped.contains("http://127.0.0.1:5001/"),
        "placeholder receiver URL changed"
    );
    let config = rewrite_keys(
        &shipped.replace(
            "http://127.0.0.1:5001/",
            &format!("http://127.0.0.1:{hook_port}/"),
        ),
        &["group_wait", "group_interval"],
        "1s",
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(alertmanager_binary())
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus-alertmanager");
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), || {
        std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
    });
    child
}

/// The Alertmanager binary: Debian names it `prometheus-alertmanager`, upstream `alertmanager`.
fn alertmanager_binary() -> &'static str {
    if common::have("prometheus-alertmanager") {
        return "prometheus-alertmanager";
    }
    require("alertmanager", "prometheus-alertmanager");
    "alertmanager"
}

/// Replaces the value of every `key: value` line whose key is in `keys`.
fn rewrite_keys(text: &str, keys: &[&str], value: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        match trimmed.split_once(':') {
            Some((k, _)) if keys.contains(&k) && !trimmed.starts_with('#') => {
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(&format!("{indent}{k}: {value}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// An HTTP server on loopback that records every POSTed JSON body by path.
struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some((path, body)) = read_request(&mut stream) {
                    sink.lock().unwrap().push((path, body));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Webhook { port, received }
    }

    fn all(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }

    fn received(&self, path: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b)
            .collect()
    }

    /// Waits for a notification at `path` holding alert `name` for `container` in `status`.
    fn wait_for(
        &self,
        timeout: Duration,
        path: &str,
        name: &str,
        container: &str,
        status: &str,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for body in self.received(path) {
                if let Some(alert) = alert_in(&body, name, container, status) {
                    return Some(alert);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }

    /// Every alert received came from `job`: no rule matched the decoy scrape.
    fn assert_only_job(&self, job: &str) {
        for (path, body) in self.all() {
            for alert in body["alerts"].as_array().into_iter().flatten() {
                let got = alert["labels"]["job"].as_str().unwrap_or(job);
                assert_eq!(got, job, "alert at {path} from another job: {alert}");
            }
        }
    }
}

/// The alert of a webhook notification matching `name`, `container` and `status`.
fn alert_in(body: &Value, name: &str, container: &str, status: &str) -> Option<Value> {
    body["alerts"]
        .as_array()?
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == name
                && a["labels"]["container"] == container
                && a["status"] == status
        })
        .cloned()
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Value)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, serde_json::from_slice(&body).ok()?))
}

fn wait_ready(url: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(ureq::get(url).call(), Ok(r) if r.status() == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} did not become ready:\n{}", log());
}

fn http_json(url: &str) -> Result<Value, String> {
    let mut resp = ureq::get(url).call().map_err(|e| e.to_string())?;
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Files

/// Every `*.yml` rule file directly in `dir`, sorted.
fn rule_files(dir: &Path) -> Vec<PathBuf> {
    yml_files(dir, |name| name.ends_with(".yml"))
}

/// Every `prometheus-rules/tests/*_test.yml`, sorted.
fn rule_test_files() -> Vec<PathBuf> {
    yml_files(&root().join("prometheus-rules/tests"), |name| {
        name.ends_with("_test.yml")
    })
}

fn yml_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && keep(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    files.sort();
    files
}

fn load_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule (alerting and recording) of every rule file in `dir`.
fn all_rules(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for file in rule_files(dir) {
        let doc = load_yaml(&file);
        for group in doc["groups"].as_array().into_iter().flatten() {
            out.extend(group["rules"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

fn rule_name(rule: &Value) -> String {
    rule["alert"]
        .as_str()
        .or(rule["record"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// Every shipped dashboard by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel target and annotation query of `dashboards`.
fn panel_queries(dashboards: &[(String, Value)]) -> Vec<Query> {
    let mut out = Vec::new();
    for (_, d) in dashboards {
        let uid = d["uid"].as_str().unwrap().to_string();
        let mut panels: Vec<&Value> = Vec::new();
        for p in d["panels"].as_array().unwrap() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(Query {
                        dashboard: uid.clone(),
                        panel: p["title"].as_str().unwrap().into(),
                        expr: expr.into(),
                    });
                }
            }
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if let Some(expr) = a["expr"].as_str() {
                out.push(Query {
                    dashboard: uid.clone(),
                    panel: a["name"].as_str().unwrap().into(),
                    expr: expr.into(),
                });
            }
        }
    }
    out
}

/// Every `datasource` value in `v` except the datasource variable's own definition.
fn datasource_refs<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}/{k}");
                if k == "datasource" {
                    out.push((here.clone(), child));
                }
                datasource_refs(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasource_refs(child, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The metric selectors of a PromQL expression: (metric name, text between its braces).
///
/// A small scanner, enough for the shipped rules and panels: identifiers outside strings,
/// label lists (`by (...)`, `on (...)`) and function calls are skipped.
fn selectors(expr: &str) -> Vec<(String, String)> {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let bytes = expr.as_bytes();
    let closing = |from: usize, c: char| expr[from..].find(c).map_or(expr.len(), |e| from + e);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = char::from(bytes[i]);
        if c == '"' || c == '\'' {
            // A string literal outside a selector (e.g. an argument of label_replace).
            let mut j = i + 1;
            while j < bytes.len() && char::from(bytes[j]) != c {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '[' {
            // A range or subquery duration.
            i = closing(i, ']') + 1;
        } else if c == '{' {
            // A selector without a metric name.
            let end = closing(i, '}');
            out.push((String::new(), expr[i + 1..end].to_string()));
            i = end + 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let j = i + expr[i..].len() - expr[i..].trim_start().len();
            let next = bytes.get(j).copied().map(char::from);
            if LABEL_LISTS.contains(&word) {
                if next == Some('(') {
                    i = closing(j, ')') + 1;
                }
            } else if next != Some('(') && !KEYWORDS.contains(&word) {
                let matchers = if next == Some('{') {
                    let end = closing(j, '}');
                    i = end + 1;
                    expr[j + 1..end].to_string()
                } else {
                    String::new()
                };
                out.push((word.to_string(), matchers));
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration such as 5m.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn selector_scanner_finds_metrics_and_their_matchers() {
    let found = selectors(
        r#"sum by (name, instance) (rate(dockwatch_container_cpu_usage_seconds_total{job="dockwatch",name=~"a|b"}[5m])) / on (name) group_left (image) dockwatch_container_info{job="dockwatch"} > 0.5 and up offset 5m"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "dockwatch_container_cpu_usage_seconds_total".to_string(),
                r#"job="dockwatch",name=~"a|b""#.to_string()
            ),
            (
                "dockwatch_container_info".to_string(),
                r#"job="dockwatch""#.to_string()
            ),
            ("up".to_string(), String::new()),
        ]
    );
    assert_eq!(area_of("dockwatch_host_load1"), Area::Host);
    assert_eq!(area_of("dockwatch_host_cpus"), Area::Core);
    assert_eq!(
        area_of("count(dockwatch_policy_violation_active) or vector(0)"),
        Area::Policy
    );
    assert_eq!(area_of("rate(dockwatch_events_total[1m])"), Area::Events);
    assert_eq!(area_of("dockwatch_host_anomaly_zscore"), Area::Anomaly);
    assert_eq!(
        area_of("rate(dockwatch_container_memory_oom_kills_total[5m])"),
        Area::Cgroup
    );
}
