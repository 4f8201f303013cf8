//! How often a cycle calls the engine: inspect data is cached and refreshed by events, and
//! the fast path replaces the stats call, with the engine as a per-container fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse, EventActor,
    EventMessage,
};
use tokio_util::sync::CancellationToken;

use super::{Collector, CollectorConfig, UsageReader};
use crate::docker::fake::{FakeDocker, fixture};
use crate::model::{ContainerMeta, ContainerState, ContainerUsage, UsageSource};

/// A steady engine with `n` running containers, ids `0…0`, `0…1`, …, named `c-<last 4>`.
fn steady(n: usize) -> Arc<FakeDocker> {
    let docker = FakeDocker::default();
    for i in 0..n {
        let id = format!("{i:064x}");
        let mut inspect: ContainerInspectResponse = fixture("inspect-s1.json");
        inspect.name = Some(format!("/c-{}", &id[60..]));
        inspect.id = Some(id);
        inspect.state.as_mut().unwrap().status = Some(ContainerStateStatusEnum::RUNNING);
        let stats: ContainerStatsResponse = fixture("stats-v1-s1.json");
        docker.containers.lock().unwrap().push((inspect, stats));
    }
    Arc::new(docker)
}

fn ids(docker: &FakeDocker) -> Vec<String> {
    docker
        .containers
        .lock()
        .unwrap()
        .iter()
        .map(|(inspect, _)| inspect.id.clone().unwrap())
        .collect()
}

/// A fast path that reads every container except the ones listed.
#[derive(Debug, Default)]
struct FakeReader {
    unreadable: Vec<String>,
    reads: AtomicUsize,
}

impl UsageReader for FakeReader {
    fn read(&self, meta: &ContainerMeta) -> Option<ContainerUsage> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.unreadable.contains(&meta.id) {
            return None;
        }
        Some(ContainerUsage {
            read_at: 1.0,
            source: Some(UsageSource::Cgroup),
            ..Default::default()
        })
    }
}

fn collector(docker: Arc<FakeDocker>, fast: Option<Arc<dyn UsageReader>>) -> Arc<Collector> {
    Collector::new(
        docker,
        None,
        fast,
        CollectorConfig {
            interval: Duration::from_secs(3600),
            concurrency: 4,
        },
    )
}

fn event(id: &str, action: &str) -> EventMessage {
    EventMessage {
        action: Some(action.into()),
        actor: Some(EventActor {
            id: Some(id.into()),
            attributes: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn steady_host_inspects_each_container_once() {
    let docker = steady(5);
    let c = collector(docker.clone(), None);
    for _ in 0..4 {
        let snap = c.collect_once(true).await;
        assert_eq!(snap.containers.len(), 5);
        assert!(snap.containers.iter().all(|c| c.usage.is_some()));
    }
    assert_eq!(docker.calls("list"), 4);
    assert_eq!(
        docker.calls("inspect"),
        5,
        "one inspect per container, ever"
    );
    assert_eq!(
        docker.calls("stats"),
        20,
        "one stats call per container per cycle"
    );
    assert_eq!(docker.calls("version"), 1);
    assert_eq!(docker.calls("inspect_image") + docker.calls("top"), 0);
}

#[tokio::test]
async fn event_and_state_change_reinspect_that_container_only() {
    let docker = steady(3);
    let ids = ids(&docker);
    let c = collector(docker.clone(), None);
    c.collect_once(true).await;
    assert_eq!(docker.calls("inspect"), 3);

    // An event invalidates one entry.
    c.on_event(&event(&ids[0], "update"));
    c.collect_once(true).await;
    assert_eq!(docker.inspected(&ids[0]), 2);
    assert_eq!(docker.inspected(&ids[1]), 1);

    // Exec events do not.
    c.on_event(&event(&ids[0], "exec_start: sh"));
    c.collect_once(true).await;
    assert_eq!(docker.inspected(&ids[0]), 2);

    // A state change seen in the listing (event missed) re-inspects too.
    docker.set_status(&ids[1], ContainerStateStatusEnum::PAUSED);
    let snap = c.collect_once(true).await;
    assert_eq!(docker.inspected(&ids[1]), 2);
    assert_eq!(
        snap.container(&ids[1]).unwrap().meta.state,
        ContainerState::Paused
    );
    c.collect_once(true).await;
    assert_eq!(docker.calls("inspect"), 5, "and then it is cached again");
}

#[tokio::test]
async fn events_from_the_stream_invalidate_the_cache() {
    let docker = steady(2);
    let tx = docker.event_sender();
    let id = ids(&docker)[1].clone();
    let c = collector(docker.clone(), None);
    c.collect_once(true).await;

    let shutdown = CancellationToken::new();
    let follower = tokio::spawn(c.clone().follow_events(shutdown.clone()));
    tx.send(event(&id, "die")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.cache.lock().unwrap().contains_key(&id) {
        assert!(tokio::time::Instant::now() < deadline, "event not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.collect_once(true).await;
    assert_eq!(docker.inspected(&id), 2);
    assert_eq!(docker.calls("inspect"), 3);
    shutdown.cancel();
    follower.await.unwrap();
}

#[tokio::test]
async fn fast_path_replaces_stats_with_per_container_fallback() {
    let docker = steady(4);
    let unreadable = ids(&docker)[2].clone();
    let reader = Arc::new(FakeReader {
        unreadable: vec![unreadable.clone()],
        ..Default::default()
    });
    let c = collector(docker.clone(), Some(reader.clone()));
    for _ in 0..3 {
        let snap = c.collect_once(true).await;
        for cs in &snap.containers {
            let want = if cs.meta.id == unreadable {
                UsageSource::Api
            } else {
                UsageSource::Cgroup
            };
            assert_eq!(
                cs.usage.as_ref().unwrap().source,
                Some(want),
                "{}",
                cs.meta.name
            );
        }
    }
    assert_eq!(reader.reads.load(Ordering::Relaxed), 12);
    assert_eq!(
        docker.calls("stats"),
        3,
        "only the unreadable container hits the engine"
    );
    assert_eq!(docker.calls("inspect"), 4);
}
