//! Quarantine through the real binary: with `--enforce` a CRITICAL violation of an `enforce`
//! policy pauses the container; in a `dry-run` policy, or without `--enforce`, it is only
//! reported. The policy selects this test's containers by name, so other containers on the
//! engine are never judged, let alone acted on.

mod common;

use std::time::Duration;

use common::{Container, Dockwatch, docker, image, tempdir};

/// A policy under which reaching `mount` (CAP_SYS_ADMIN) is CRITICAL, for containers named
/// containing `<prefix>` only.
fn policy(prefix: &str, mode: &str) -> std::path::PathBuf {
    let dir = tempdir("quarantine");
    let path = dir.join("policy.yml");
    std::fs::write(
        &path,
        format!(
            "runtime_policies:\n  - name: no-mount\n    mode: {mode}\n    selector: {{name: \"*{prefix}*\"}}\n    blocked_syscalls: [mount]\n"
        ),
    )
    .unwrap();
    path
}

/// dockwatch with `--enforce` under the policy `file`, quarantining with `action`.
fn enforcing(file: &std::path::Path, action: &str) -> Dockwatch {
    Dockwatch::start(&[
        "--collect.interval",
        "2s",
        "--policy.file",
        file.to_str().unwrap(),
        "--enforce",
        "--enforce.action",
        action,
    ])
}

fn state(c: &Container) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", &c.name])
}

fn enforcement_events(dw: &Dockwatch, c: &Container) -> Vec<serde_json::Value> {
    let body = dw.get(&format!(
        "/violations?kind=enforcement&container={}",
        c.name
    ));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn enforce_pauses_a_critical_violator_and_leaves_compliant_containers_alone() {
    let img = image();
    let prefix = common::unique("qenf");
    let file = policy(&prefix, "enforce");
    let dw = enforcing(&file, "pause");
    let compliant = Container::run(&format!("{prefix}-ok"), &[], &img, &["sleep", "3600"]);
    let violator = Container::run(
        &format!("{prefix}-bad"),
        &["--cap-add", "SYS_ADMIN"],
        &img,
        &["sleep", "3600"],
    );
    // `Container::run` prefixes names with `dwt-`, so select on the unique part.
    assert!(violator.name.contains(&prefix) && compliant.name.contains(&prefix));

    let paused = [("action", "pause"), ("result", "success")];
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_enforcement_actions_total", &paused) == Some(1.0)
    });
    assert_eq!(m.value("dockwatch_enforcement_actions_total", &paused), 1.0);
    assert_eq!(state(&violator), "paused");
    assert_eq!(state(&compliant), "running");

    let events = enforcement_events(&dw, &violator);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "pause");
    assert_eq!(events[0]["result"], "success");
    assert_eq!(events[0]["rule"], "runtime_syscall");
    assert_eq!(events[0]["subject"], "mount");
    assert!(enforcement_events(&dw, &compliant).is_empty());

    // The episode stays open while the container is paused: no second action.
    std::thread::sleep(Duration::from_secs(5));
    let m = dw.scrape();
    assert_eq!(m.value("dockwatch_enforcement_actions_total", &paused), 1.0);
    let active = [
        ("container", violator.name.as_str()),
        ("rule", "runtime_syscall"),
        ("severity", "CRITICAL"),
    ];
    assert_eq!(m.value("dockwatch_policy_violation_active", &active), 1.0);
    docker(&["unpause", &violator.name]);
}

#[test]
fn dry_run_policy_is_reported_but_not_acted_on_even_with_enforce() {
    let img = image();
    let prefix = common::unique("qdry");
    let file = policy(&prefix, "dry-run");
    let dw = enforcing(&file, "stop");
    let violator = Container::run(
        &format!("{prefix}-bad"),
        &["--cap-add", "SYS_ADMIN"],
        &img,
        &["sleep", "3600"],
    );
    let active = [("container", violator.name.as_str()), ("mode", "dry-run")];
    let m = dw.scrape_until(Duration::from_secs(10), |m| {
        m.get("dockwatch_policy_violation_active", &active)
            .is_some()
    });
    assert_eq!(m.value("dockwatch_policy_violation_active", &active), 1.0);
    std::thread::sleep(Duration::from_secs(3));
    let events = enforcement_events(&dw, &violator);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["result"], "dry_run");
    assert_eq!(state(&violator), "running");
    let m = dw.scrape();
    let stopped = [("action", "stop"), ("result", "success")];
    assert_eq!(
        m.value("dockwatch_enforcement_actions_total", &stopped),
        0.0
    );
}
