//! Collection-loop tests over a fake engine that replays recorded payloads.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, ContainerSummaryStateEnum,
    ContainerTopResponse, EventMessage, ImageInspect,
};
use futures_util::stream::BoxStream;

use super::*;
use crate::docker::{ContainerAction, DockerError, EngineVersion};

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/docker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fake engine: containers by id with their inspect and stats payloads; ids listed in
/// `vanish_before_stats` answer 404 to stats, as a container removed mid-cycle does.
#[derive(Debug, Default)]
struct FakeEngine {
    containers: StdMutex<Vec<(ContainerInspectResponse, ContainerStatsResponse)>>,
    vanish_before_stats: StdMutex<Vec<String>>,
    inspects: StdMutex<HashMap<String, usize>>,
}

impl FakeEngine {
    fn with(pairs: &[(&str, &str)]) -> Self {
        let fake = FakeEngine::default();
        for (inspect, stats) in pairs {
            fake.containers
                .lock()
                .unwrap()
                .push((fixture(inspect), fixture(stats)));
        }
        fake
    }

    fn inspect_calls(&self) -> usize {
        self.inspects.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl DockerApi for FakeEngine {
    async fn version(&self) -> Result<EngineVersion, DockerError> {
        Ok(EngineVersion {
            version: "20.10.24".into(),
            api_version: "1.41".into(),
        })
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        Ok(self
            .containers
            .lock()
            .unwrap()
            .iter()
            .map(|(inspect, _)| ContainerSummary {
                id: inspect.id.clone(),
                state: Some(ContainerSummaryStateEnum::RUNNING),
                ..Default::default()
            })
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        *self
            .inspects
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default() += 1;
        self.containers
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i.id.as_deref() == Some(id))
            .map(|(i, _)| i.clone())
            .ok_or(DockerError::NotFound { what: id.into() })
    }

    async fn inspect_image(&self, id: &str) -> Result<ImageInspect, DockerError> {
        Err(DockerError::NotFound { what: id.into() })
    }

    async fn stats(&self, id: &str) -> Result<ContainerStatsResponse, DockerError> {
        if self
            .vanish_before_stats
            .lock()
            .unwrap()
            .iter()
            .any(|v| v == id)
        {
            return Err(DockerError::NotFound { what: id.into() });
        }
        self.containers
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i.id.as_deref() == Some(id))
            .map(|(_, s)| s.clone())
            .ok_or(DockerError::NotFound { what: id.into() })
    }

    async fn top(&self, id: &str) -> Result<ContainerTopResponse, DockerError> {
        Err(DockerError::NotFound { what: id.into() })
    }

    async fn act(&self, id: &str, _: ContainerAction) -> Result<(), DockerError> {
        Err(DockerError::NotFound { what: id.into() })
    }

    fn events(&self) -> BoxStream<'static, Result<EventMessage, DockerError>> {
        Box::pin(futures_util::stream::pending())
    }
}

fn collector(engine: Arc<FakeEngine>) -> Arc<Collector> {
    Collector::new(
        engine,
        None,
        None,
        CollectorConfig {
            interval: Duration::from_secs(15),
            concurrency: 4,
            host: false,
        },
    )
}

#[tokio::test]
async fn container_removed_between_list_and_stats_is_skipped_and_counted() {
    let engine = Arc::new(FakeEngine::with(&[
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
    let engine = Arc::new(FakeEngine::with(&[
        ("inspect-s1.json", "stats-v1-s1.json"),
        ("inspect-fx-nonet.json", "stats-v1-fx-nonet.json"),
    ]));
    let c = collector(engine.clone());
    for _ in 0..3 {
        c.collect_once(true).await;
    }
    assert_eq!(
        engine.inspect_calls(),
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
    assert_eq!(engine.inspect_calls(), 3);

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
