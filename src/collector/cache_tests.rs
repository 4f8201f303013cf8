//! How often a cycle calls the engine: inspect data is cached and refreshed by events, and
//! the fast path replaces the stats call, with the engine as a per-container fallback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, ContainerSummaryStateEnum,
    ContainerTopResponse, EventActor, EventMessage, ImageInspect,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Collector, CollectorConfig, UsageReader};
use crate::docker::{ContainerAction, DockerApi, DockerError, EngineVersion};
use crate::model::{ContainerMeta, ContainerState, ContainerUsage, UsageSource};

const INSPECT: &str = include_str!("../../tests/fixtures/docker/inspect-s1.json");
const STATS: &str = include_str!("../../tests/fixtures/docker/stats-v1-s1.json");

/// A steady engine with a fixed set of containers that counts every call.
#[derive(Debug, Default)]
struct CountingDocker {
    containers: Mutex<Vec<(String, ContainerState)>>,
    calls: Mutex<HashMap<&'static str, usize>>,
    inspected: Mutex<HashMap<String, usize>>,
    events: Mutex<Option<mpsc::UnboundedReceiver<EventMessage>>>,
}

impl CountingDocker {
    fn new(n: usize) -> Arc<Self> {
        let containers = (0..n)
            .map(|i| (format!("{i:064x}"), ContainerState::Running))
            .collect();
        Arc::new(Self {
            containers: Mutex::new(containers),
            ..Default::default()
        })
    }

    fn count(&self, call: &'static str) {
        *self.calls.lock().unwrap().entry(call).or_default() += 1;
    }

    fn calls(&self, call: &str) -> usize {
        self.calls.lock().unwrap().get(call).copied().unwrap_or(0)
    }

    fn inspected(&self, id: &str) -> usize {
        self.inspected.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn set_state(&self, id: &str, state: ContainerState) {
        for c in self.containers.lock().unwrap().iter_mut() {
            if c.0 == id {
                c.1 = state;
            }
        }
    }

    fn state(&self, id: &str) -> ContainerState {
        self.containers
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.0 == id)
            .map(|c| c.1)
            .unwrap()
    }
}

#[async_trait]
impl DockerApi for CountingDocker {
    async fn version(&self) -> Result<EngineVersion, DockerError> {
        self.count("version");
        Ok(EngineVersion {
            version: "20.10.24".into(),
            api_version: "1.41".into(),
        })
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        self.count("list");
        let state = |s: ContainerState| match s {
            ContainerState::Running => ContainerSummaryStateEnum::RUNNING,
            ContainerState::Paused => ContainerSummaryStateEnum::PAUSED,
            _ => ContainerSummaryStateEnum::EXITED,
        };
        Ok(self
            .containers
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| ContainerSummary {
                id: Some(id.clone()),
                state: Some(state(*s)),
                ..Default::default()
            })
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.count("inspect");
        *self
            .inspected
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default() += 1;
        let mut inspect: ContainerInspectResponse = serde_json::from_str(INSPECT).unwrap();
        inspect.id = Some(id.to_string());
        inspect.name = Some(format!("/c-{}", &id[60..]));
        let status = match self.state(id) {
            ContainerState::Running => bollard::models::ContainerStateStatusEnum::RUNNING,
            ContainerState::Paused => bollard::models::ContainerStateStatusEnum::PAUSED,
            _ => bollard::models::ContainerStateStatusEnum::EXITED,
        };
        inspect.state.as_mut().unwrap().status = Some(status);
        Ok(inspect)
    }

    async fn inspect_image(&self, _id: &str) -> Result<ImageInspect, DockerError> {
        self.count("inspect_image");
        Ok(ImageInspect::default())
    }

    async fn stats(&self, _id: &str) -> Result<ContainerStatsResponse, DockerError> {
        self.count("stats");
        Ok(serde_json::from_str(STATS).unwrap())
    }

    async fn top(&self, _id: &str) -> Result<ContainerTopResponse, DockerError> {
        self.count("top");
        Ok(ContainerTopResponse::default())
    }

    async fn act(&self, _id: &str, _action: ContainerAction) -> Result<(), DockerError> {
        self.count("act");
        Ok(())
    }

    fn events(&self) -> BoxStream<'static, Result<EventMessage, DockerError>> {
        match self.events.lock().unwrap().take() {
            Some(rx) => futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|e| (Ok(e), rx))
            })
            .boxed(),
            None => futures_util::stream::pending().boxed(),
        }
    }
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

fn collector(docker: Arc<CountingDocker>, fast: Option<Arc<dyn UsageReader>>) -> Arc<Collector> {
    Collector::new(
        docker,
        None,
        fast,
        CollectorConfig {
            interval: Duration::from_secs(3600),
            concurrency: 4,
            host: false,
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
    let docker = CountingDocker::new(5);
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
    let docker = CountingDocker::new(3);
    let ids: Vec<String> = docker
        .containers
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
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
    docker.set_state(&ids[1], ContainerState::Paused);
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
    let docker = CountingDocker::new(2);
    let (tx, rx) = mpsc::unbounded_channel();
    *docker.events.lock().unwrap() = Some(rx);
    let id = docker.containers.lock().unwrap()[1].0.clone();
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
    let docker = CountingDocker::new(4);
    let unreadable = docker.containers.lock().unwrap()[2].0.clone();
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
