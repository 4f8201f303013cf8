//! Collection-loop tests over a fake engine that replays recorded payloads.

use bollard::models::EventMessage;

use super::*;
use crate::docker::fake::FakeDocker;

fn collector(engine: Arc<FakeDocker>) -> Arc<Collector> {
    Collector::new(
        engine,
        None,
        None,
        CollectorConfig {
            interval: Duration::from_secs(15),
            concurrency: 4,
        },
    )
}

#[tokio::test]
async fn container_removed_between_list_and_stats_is_skipped_and_counted() {
    let engine = Arc::new(FakeDocker::with_fixtures(&[
        ("inspect-s1.json", "stats-v1-s1.json"),
        ("inspect-fx-unlimited.json", "stats-v1-fx-unlimited.json"),
    ]));
    let gone = engine.containers.lock().unwrap()[1].0.id.clone().unwrap();
    engine.vanish_before_stats.lock().unwrap().push(gone);
    let c = collector(engine.clone());

    let snapshot = c.collect_once(true).await;
    assert!(snapshot.docker_up);
    let with_usage: Vec<&str> = snapshot
        .containers
        .iter()
        .filter(|c| c.usage.is_some())
        .map(|c| c.meta.name.as_str())
        .collect();
    assert_eq!(with_usage, ["s1"]);
    assert_eq!(c.self_stats().errors(Stage::Stats), 1);
    assert_eq!(c.self_stats().errors(Stage::Inspect), 0);
}

#[tokio::test]
async fn steady_host_is_inspected_once_and_removed_containers_vanish() {
    let engine = Arc::new(FakeDocker::with_fixtures(&[
        ("inspect-s1.json", "stats-v1-s1.json"),
        ("inspect-fx-nonet.json", "stats-v1-fx-nonet.json"),
    ]));
    let c = collector(engine.clone());
    for _ in 0..3 {
        c.collect_once(true).await;
    }
    assert_eq!(
        engine.calls("inspect"),
        2,
        "one inspect per container, not per cycle"
    );

    // A start event drops the cached entry: the next cycle inspects that container again.
    let id = engine.containers.lock().unwrap()[0].0.id.clone().unwrap();
    c.on_event(&EventMessage {
        action: Some("start".into()),
        actor: Some(bollard::models::EventActor {
            id: Some(id),
            attributes: None,
        }),
        ..Default::default()
    });
    c.collect_once(false).await;
    assert_eq!(engine.calls("inspect"), 3);

    engine.containers.lock().unwrap().remove(1);
    let snapshot = c.collect_once(true).await;
    let names: Vec<&str> = snapshot
        .containers
        .iter()
        .map(|c| c.meta.name.as_str())
        .collect();
    assert_eq!(names, ["s1"]);
    assert_eq!(c.previous.lock().unwrap().len(), 1);
    assert_eq!(c.cache.lock().unwrap().len(), 1);
}
