//! Quarantine against a real Docker Engine, and the event sinks end to end: `GET /violations`,
//! `/metrics` and a webhook receiver on loopback, all through the real router.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use dockwatch::docker::{BollardDocker, ContainerAction, DockerApi};
use dockwatch::enforce::Enforcer;
use dockwatch::events::{EventHub, EventKind, EventsArgs, Mode, Severity, ViolationEvent};
use dockwatch::http::{AppState, router};
use dockwatch::model::{ContainerMeta, ContainerState, HealthStatus, Snapshot};
use prometheus_client::registry::Registry;

use common::{Container, Metrics, docker, image};

/// A shell that exits on SIGTERM within a second, so `docker stop` does not wait for the kill.
const STOPPABLE: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

fn engine() -> Arc<dyn DockerApi> {
    common::require_docker();
    Arc::new(BollardDocker::new("unix:///var/run/docker.sock", Duration::from_secs(30)).unwrap())
}

fn meta(c: &Container) -> ContainerMeta {
    ContainerMeta {
        id: c.id.clone(),
        name: c.name.clone(),
        image: common::IMAGE.into(),
        image_id: String::new(),
        labels: BTreeMap::new(),
        state: ContainerState::Running,
        health: HealthStatus::None,
        restart_count: 0,
        oom_killed: false,
        started_at: None,
        pid: None,
        memory_limit_bytes: None,
        cpu_limit_cores: None,
        pids_limit: None,
        network_mode: "bridge".into(),
        inspect: Arc::default(),
    }
}

fn violation(c: &Container, mode: Mode) -> ViolationEvent {
    let (time, timestamp) = dockwatch::events::timestamp_now();
    ViolationEvent {
        time,
        timestamp,
        kind: EventKind::ViolationStarted,
        policy: "prod".into(),
        rule: "runtime_process".into(),
        category: "runtime".into(),
        severity: Severity::Critical,
        mode,
        container_id: c.id.clone(),
        container: c.name.clone(),
        image: common::IMAGE.into(),
        subject: "xmrig".into(),
        message: "process xmrig is not allowed".into(),
        action: None,
        result: None,
        duration_seconds: None,
    }
}

fn status(c: &Container) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", &c.id])
}

fn enforcement(hub: &EventHub, c: &Container) -> Vec<Arc<ViolationEvent>> {
    hub.recent_events()
        .into_iter()
        .filter(|e| e.kind == EventKind::Enforcement && e.container_id == c.id)
        .collect()
}

/// Quarantines `c` once for a fresh violation and returns the enforcement event.
async fn quarantine(action: ContainerAction, enabled: bool, c: &Container) -> ViolationEvent {
    let hub = EventHub::default();
    let enforcer = Enforcer::new(engine(), hub.clone(), enabled, action).with_own_ids(Vec::new());
    let v = violation(c, Mode::Enforce);
    hub.publish(v.clone());
    enforcer.quarantine(&meta(c), &v).await;
    // A second call in the same episode must not act again.
    enforcer.quarantine(&meta(c), &v).await;
    let events = enforcement(&hub, c);
    assert_eq!(events.len(), 1, "{events:?}");
    (*events[0]).clone()
}

#[tokio::test]
async fn stop_stops_a_running_container() {
    let c = Container::run("enf-stop", &[], &image(), STOPPABLE);
    assert_eq!(status(&c), "running");
    let started = Instant::now();
    let e = quarantine(ContainerAction::Stop, true, &c).await;
    assert_eq!(e.result.as_deref(), Some("success"), "{}", e.message);
    assert_eq!(e.action.as_deref(), Some("stop"));
    assert_eq!(status(&c), "exited");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &c.id]),
        "0"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the container exits on SIGTERM; took {:?}",
        started.elapsed()
    );
    assert_eq!(
        e.message,
        format!("stopped container {}: process xmrig is not allowed", c.name)
    );
}

#[tokio::test]
async fn pause_freezes_the_container() {
    let c = Container::run("enf-pause", &[], &image(), &["sleep", "600"]);
    let e = quarantine(ContainerAction::Pause, true, &c).await;
    assert_eq!(e.result.as_deref(), Some("success"), "{}", e.message);
    assert_eq!(status(&c), "paused");
    docker(&["unpause", &c.id]);
}

#[tokio::test]
async fn disconnect_leaves_no_network() {
    let c = Container::run("enf-disc", &[], &image(), &["sleep", "600"]);
    assert_eq!(
        docker(&["inspect", "-f", "{{len .NetworkSettings.Networks}}", &c.id]),
        "1"
    );
    let e = quarantine(ContainerAction::Disconnect, true, &c).await;
    assert_eq!(e.result.as_deref(), Some("success"), "{}", e.message);
    assert_eq!(
        docker(&["inspect", "-f", "{{len .NetworkSettings.Networks}}", &c.id]),
        "0"
    );
    assert_eq!(status(&c), "running");
}

#[tokio::test]
async fn without_enforce_the_container_keeps_running() {
    let c = Container::run("enf-dry", &[], &image(), &["sleep", "600"]);
    let e = quarantine(ContainerAction::Stop, false, &c).await;
    assert_eq!(e.result.as_deref(), Some("dry_run"));
    assert_eq!(status(&c), "running");
}

#[tokio::test]
async fn failure_on_a_stopped_container_is_reported() {
    let c = Container::run("enf-fail", &[], &image(), &["true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&c) != "exited" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Pausing a container that is not running is refused by the engine.
    let e = quarantine(ContainerAction::Pause, true, &c).await;
    assert_eq!(e.result.as_deref(), Some("failure"));
    assert!(
        e.message.starts_with(&format!(
            "pause of container {} failed: conflict on container",
            c.name
        )),
        "{}",
        e.message
    );
}

/// Accepts webhook batches on loopback.
#[derive(Clone, Default)]
struct Receiver {
    batches: Arc<Mutex<Vec<Vec<ViolationEvent>>>>,
}

async fn accept(State(r): State<Receiver>, body: String) -> &'static str {
    let batch: Vec<ViolationEvent> = serde_json::from_str(&body).unwrap();
    r.batches.lock().unwrap().push(batch);
    "ok"
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn quarantine_reaches_violations_metrics_and_the_webhook() {
    common::require("promtool", "prometheus");
    let receiver = Receiver::default();
    let hook = serve(
        Router::new()
            .route("/hook", post(accept))
            .with_state(receiver.clone()),
    )
    .await;

    let hub = EventHub::new(&EventsArgs {
        webhook_url: Some(format!("{hook}/hook")),
        ..Default::default()
    })
    .unwrap();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(hub.clone()));
    let (_tx, snapshot) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
    let state = AppState {
        registry: Arc::new(registry),
        snapshot,
        telemetry_path: "/metrics".into(),
    };
    let base = serve(router(state, hub.routes())).await;

    let c = Container::run("enf-e2e", &[], &image(), STOPPABLE);
    let enforcer =
        Enforcer::new(engine(), hub.clone(), true, ContainerAction::Stop).with_own_ids(Vec::new());
    let v = violation(&c, Mode::Enforce);
    hub.publish(v.clone());
    enforcer.quarantine(&meta(&c), &v).await;
    assert_eq!(status(&c), "exited");

    let (code, body) = get(&base, &format!("/violations?container={}", c.short_id())).await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["kind"], "enforcement");
    assert_eq!(events[0]["result"], "success");
    assert_eq!(events[0]["container"], c.name.as_str());
    assert_eq!(events[1]["kind"], "violation_started");

    let (_, body) = get(
        &base,
        &format!("/violations?active=true&container={}", c.name),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["events"].as_array().unwrap().len(), 1, "{body}");

    let (code, body) = get(&base, "/violations?min_severity=SEVERE").await;
    assert_eq!(code, 400);
    assert!(body.contains("min_severity"), "{body}");

    // Both events reach the webhook.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let got: Vec<ViolationEvent> = receiver.batches.lock().unwrap().concat();
        if got.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<EventKind> = delivered.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::ViolationStarted, EventKind::Enforcement]
    );
    assert_eq!(delivered[0], v);

    let (_, text) = get(&base, "/metrics").await;
    let m = Metrics::parse(&text);
    let stop_success = [("action", "stop"), ("result", "success")];
    assert_eq!(
        m.value("dockwatch_enforcement_actions_total", &stop_success),
        1.0
    );
    let webhook_enforcement = [("sink", "webhook"), ("kind", "enforcement")];
    assert_eq!(m.value("dockwatch_events_total", &webhook_enforcement), 1.0);
    let queue_full = [("sink", "webhook"), ("reason", "queue_full")];
    assert_eq!(m.value("dockwatch_events_dropped_total", &queue_full), 0.0);
    assert_eq!(m.value("dockwatch_events_webhook_queue_length", &[]), 0.0);
    common::assert_promtool_clean(&text);
}

/// The real binary with the default policy: a container without a seccomp filter is a CRITICAL
/// violation, and without `--enforce` its quarantine is only reported, through every sink.
#[test]
fn the_binary_reports_a_dry_run_quarantine_through_every_sink() {
    let c = Container::run(
        "enf-bin",
        &["--security-opt", "seccomp=unconfined"],
        &image(),
        &["sleep", "600"],
    );
    let dir = common::tempdir("events");
    let file = dir.join("events.jsonl");
    let dw = common::Dockwatch::start(&[
        "--collector.host=false",
        "--collect.interval",
        "2s",
        "--events.file",
        file.to_str().unwrap(),
        "--enforce.action",
        "pause",
    ]);
    let query = format!("/violations?kind=enforcement&container={}", c.name);
    let open = format!(
        "/violations?active=true&min_severity=CRITICAL&container={}",
        c.short_id()
    );
    let count = |path: &str| -> Vec<serde_json::Value> {
        let body: serde_json::Value = serde_json::from_str(&dw.get(path)).unwrap();
        body["events"].as_array().unwrap().clone()
    };
    // Quarantine requests are handled off the evaluation path: wait until every open CRITICAL
    // episode has its enforcement event.
    let deadline = Instant::now() + Duration::from_secs(30);
    let enforcement = loop {
        let events = count(&query);
        if (!events.is_empty() && events.len() == count(&open).len()) || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !enforcement.is_empty(),
        "no enforcement event; log:\n{}",
        dw.log_text()
    );
    for e in &enforcement {
        assert_eq!(e["result"], "dry_run", "{e}");
        assert_eq!(e["action"], "pause", "{e}");
        assert_eq!(e["severity"], "CRITICAL", "{e}");
        assert_eq!(e["container_id"], c.id.as_str(), "{e}");
    }
    assert_eq!(status(&c), "running");

    let active: serde_json::Value = serde_json::from_str(&dw.get(&format!(
        "/violations?active=true&min_severity=CRITICAL&container={}",
        c.short_id()
    )))
    .unwrap();
    let active = active["events"].as_array().unwrap();
    assert_eq!(
        active.len(),
        enforcement.len(),
        "one open episode per dry run"
    );
    assert!(active.iter().all(|e| e["kind"] == "violation_started"));

    let lines = std::fs::read_to_string(&file).unwrap();
    let in_file: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["container"] == c.name.as_str())
        .collect();
    assert!(
        in_file.iter().any(|e| e["kind"] == "enforcement"),
        "{lines}"
    );
    assert!(
        in_file.iter().any(|e| e["kind"] == "violation_started"),
        "{lines}"
    );

    let m = dw.scrape();
    let dry_run = [("action", "pause"), ("result", "dry_run")];
    assert!(m.value("dockwatch_enforcement_actions_total", &dry_run) >= enforcement.len() as f64);
    let file_enforcement = [("sink", "file"), ("kind", "enforcement")];
    assert!(m.value("dockwatch_events_total", &file_enforcement) >= 1.0);
    let write_error = [("sink", "file"), ("reason", "write_error")];
    assert_eq!(m.value("dockwatch_events_dropped_total", &write_error), 0.0);
    // Event lines go to standard output, the daemon's own logs to standard error.
    let stdout = std::fs::read_to_string(dw.log.with_extension("out")).unwrap_or_default();
    assert!(
        stdout.contains("dockwatch::events") && stdout.contains("violation_started"),
        "event lines on stdout: {stdout}"
    );
    let stderr = std::fs::read_to_string(&dw.log).unwrap_or_default();
    assert!(
        !stderr.contains("violation_started"),
        "event lines leaked to stderr"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_event_flags_stop_the_binary_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--events.webhook-url",
            "ftp://127.0.0.1/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "dockwatch: starting the event sinks: invalid webhook url \"ftp://127.0.0.1/x\": scheme \"ftp\" is not http or https"
        ),
        "{stderr}"
    );
}
