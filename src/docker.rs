//! The few Docker Engine API calls dockwatch makes, behind a trait so that tests can feed
//! recorded payloads without a daemon.
//!
//! The real implementation wraps bollard. It negotiates the API version on first use (Engine
//! 20.10 speaks 1.41, bollard defaults to a newer one) and keeps retrying until the engine
//! answers, so dockwatch can start before Docker does.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, ContainerTopResponse,
    EventMessage, ImageInspect,
};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder, TopOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::Mutex;

/// Errors from the Docker Engine, classified by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The object does not exist (any more): a container removed between list and stats.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The request conflicts with the object's state, e.g. stats of a stopped container.
    #[error("conflict on {what}: {message}")]
    Conflict {
        /// What was acted on.
        what: String,
        /// Engine's explanation.
        message: String,
    },
    /// The engine could not be reached at all.
    #[error("docker engine unreachable")]
    Unreachable(#[source] BollardError),
    /// Any other failure the engine reported.
    #[error("docker request failed")]
    Api(#[source] BollardError),
    /// `--docker.host` has a scheme dockwatch cannot speak.
    #[error("unsupported docker host {host:?}: use unix://, tcp://, http:// or https://")]
    UnsupportedHost {
        /// The address given.
        host: String,
    },
    /// The stats stream ended without a sample.
    #[error("no stats sample for {what}")]
    NoSample {
        /// The container.
        what: String,
    },
}

impl DockerError {
    fn from_bollard(what: &str, err: BollardError) -> Self {
        match err {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => Self::NotFound { what: what.into() },
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => Self::Conflict {
                what: what.into(),
                message,
            },
            e @ (BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)) => Self::Unreachable(e),
            e => Self::Api(e),
        }
    }

    /// Whether the object vanished or stopped between two calls: expected churn, not a fault.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Conflict { .. })
    }
}

/// Engine version facts dockwatch exports and acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineVersion {
    /// Engine release, e.g. `20.10.24`.
    pub version: String,
    /// Negotiated API version, e.g. `1.41`.
    pub api_version: String,
}

impl EngineVersion {
    /// Whether the stats endpoint accepts `one-shot` (API 1.41 and later).
    pub fn supports_one_shot(&self) -> bool {
        let mut parts = self
            .api_version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (1, 41)
    }
}

/// How a quarantine action treats the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerAction {
    /// `docker stop`.
    Stop,
    /// `docker pause`.
    Pause,
    /// Disconnect from every network.
    Disconnect,
}

/// The Docker Engine calls dockwatch uses.
#[async_trait]
pub trait DockerApi: Send + Sync + fmt::Debug {
    /// `GET /version`; also (re)connects and negotiates the API version.
    async fn version(&self) -> Result<EngineVersion, DockerError>;
    /// `GET /containers/json?all=true`.
    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError>;
    /// `GET /containers/{id}/json`.
    async fn inspect_container(&self, id: &str) -> Result<ContainerInspectResponse, DockerError>;
    /// `GET /images/{id}/json`.
    async fn inspect_image(&self, id: &str) -> Result<ImageInspect, DockerError>;
    /// One stats sample, `one-shot` where the engine supports it.
    async fn stats(&self, id: &str) -> Result<ContainerStatsResponse, DockerError>;
    /// `GET /containers/{id}/top`.
    async fn top(&self, id: &str) -> Result<ContainerTopResponse, DockerError>;
    /// Stops, pauses or disconnects a container.
    async fn act(&self, id: &str, action: ContainerAction) -> Result<(), DockerError>;
    /// The container event stream, from now on.
    fn events(&self) -> BoxStream<'static, Result<EventMessage, DockerError>>;
}

/// [`DockerApi`] over bollard.
///
/// The connection is made on first use and remade after the socket disappeared, so dockwatch
/// starts (and reports `dockwatch_docker_up 0`) before the engine does.
#[derive(Debug, Clone)]
pub struct BollardDocker {
    host: String,
    timeout: Duration,
    client: Arc<Mutex<Option<Docker>>>,
    negotiated: Arc<Mutex<Option<EngineVersion>>>,
}

impl BollardDocker {
    /// Prepares a client for `host` (`unix:///…`, `tcp://…`, `http://…`, or a socket path);
    /// fails only for an unsupported address.
    pub fn new(host: &str, timeout: Duration) -> Result<Self, DockerError> {
        let host = if host.starts_with('/') {
            format!("unix://{host}")
        } else {
            host.to_string()
        };
        let supported = ["unix://", "tcp://", "http://", "https://"];
        if !supported.iter().any(|p| host.starts_with(p)) {
            return Err(DockerError::UnsupportedHost { host });
        }
        Ok(Self {
            host,
            timeout,
            client: Arc::new(Mutex::new(None)),
            negotiated: Arc::new(Mutex::new(None)),
        })
    }

    async fn client(&self) -> Result<Docker, DockerError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let client = Docker::connect_with_host(&self.host)
            .map_err(DockerError::Unreachable)?
            .with_timeout(self.timeout);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn one_shot(&self) -> bool {
        match &*self.negotiated.lock().await {
            Some(v) => v.supports_one_shot(),
            None => false,
        }
    }
}

#[async_trait]
impl DockerApi for BollardDocker {
    async fn version(&self) -> Result<EngineVersion, DockerError> {
        // A fresh connection and negotiation on every call: the collector asks for the version
        // at start and after the engine stopped answering, when it may have been restarted or
        // upgraded.
        let mut negotiated = self.negotiated.lock().await;
        *negotiated = None;
        *self.client.lock().await = None;
        let client = self
            .client()
            .await?
            .negotiate_version()
            .await
            .map_err(|e| DockerError::from_bollard("version", e))?;
        *self.client.lock().await = Some(client.clone());
        let v = client
            .version()
            .await
            .map_err(|e| DockerError::from_bollard("version", e))?;
        let cv = client.client_version();
        let version = EngineVersion {
            version: v.version.unwrap_or_default(),
            api_version: format!("{}.{}", cv.major_version, cv.minor_version),
        };
        *negotiated = Some(version.clone());
        Ok(version)
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        self.client()
            .await?
            .list_containers(Some(opts))
            .await
            .map_err(|e| DockerError::from_bollard("containers", e))
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.client()
            .await?
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| DockerError::from_bollard(&format!("container {id}"), e))
    }

    async fn inspect_image(&self, id: &str) -> Result<ImageInspect, DockerError> {
        self.client()
            .await?
            .inspect_image(id)
            .await
            .map_err(|e| DockerError::from_bollard(&format!("image {id}"), e))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStatsResponse, DockerError> {
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(self.one_shot().await)
            .build();
        let client = self.client().await?;
        let mut stream = client.stats(id, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(DockerError::from_bollard(&format!("container {id}"), e)),
            None => Err(DockerError::NoSample {
                what: format!("container {id}"),
            }),
        }
    }

    async fn top(&self, id: &str) -> Result<ContainerTopResponse, DockerError> {
        let opts = TopOptionsBuilder::default()
            .ps_args("-eo pid,comm,args")
            .build();
        let client = self.client().await?;
        match client.top_processes(id, Some(opts)).await {
            Ok(t) => Ok(t),
            // Minimal images have no `ps`-compatible argument support in every engine;
            // retry with the engine's defaults.
            Err(BollardError::DockerResponseServerError {
                status_code: 500, ..
            }) => client
                .top_processes(id, None::<bollard::query_parameters::TopOptions>)
                .await
                .map_err(|e| DockerError::from_bollard(&format!("container {id}"), e)),
            Err(e) => Err(DockerError::from_bollard(&format!("container {id}"), e)),
        }
    }

    async fn act(&self, id: &str, action: ContainerAction) -> Result<(), DockerError> {
        let client = self.client().await?;
        let what = format!("container {id}");
        match action {
            ContainerAction::Stop => client
                .stop_container(
                    id,
                    Some(StopContainerOptionsBuilder::default().t(10).build()),
                )
                .await
                .map_err(|e| DockerError::from_bollard(&what, e)),
            ContainerAction::Pause => client
                .pause_container(id)
                .await
                .map_err(|e| DockerError::from_bollard(&what, e)),
            ContainerAction::Disconnect => {
                let inspect = client
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| DockerError::from_bollard(&what, e))?;
                let networks: Vec<String> = inspect
                    .network_settings
                    .and_then(|n| n.networks)
                    .map(|n| n.into_keys().collect())
                    .unwrap_or_default();
                for net in networks {
                    let req = bollard::models::NetworkDisconnectRequest {
                        container: id.to_string(),
                        force: Some(true),
                    };
                    client
                        .disconnect_network(&net, req)
                        .await
                        .map_err(|e| DockerError::from_bollard(&format!("network {net}"), e))?;
                }
                Ok(())
            }
        }
    }

    fn events(&self) -> BoxStream<'static, Result<EventMessage, DockerError>> {
        let this = self.clone();
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        futures_util::stream::once(async move { this.client().await })
            .flat_map(move |client| match client {
                Ok(client) => {
                    let opts = EventsOptionsBuilder::default().filters(&filters).build();
                    client
                        .events(Some(opts))
                        .map(|r| r.map_err(|e| DockerError::from_bollard("events", e)))
                        .boxed()
                }
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }
}

/// A configurable [`DockerApi`] for unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bollard::models::{
        ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse,
        ContainerSummary, ContainerSummaryStateEnum, ContainerTopResponse, EventMessage,
        ImageInspect,
    };
    use futures_util::StreamExt;
    use futures_util::stream::BoxStream;
    use tokio::sync::mpsc;

    use super::{ContainerAction, DockerApi, DockerError, EngineVersion};

    /// A payload from `tests/fixtures/docker/`.
    pub(crate) fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/tests/fixtures/docker/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// An engine of API 1.41 that answers from what a test put in and counts every call.
    ///
    /// Containers are listed in order with the state of their inspect payload; unknown ids,
    /// images, and `top` without [`FakeDocker::with_top`] answer 404. `act` is recorded and
    /// succeeds unless [`FakeDocker::with_failing_acts`] says otherwise. The event stream stays
    /// pending unless [`FakeDocker::event_sender`] was called first.
    #[derive(Debug, Default)]
    pub(crate) struct FakeDocker {
        /// Inspect and stats payloads, in list order.
        pub containers: Mutex<Vec<(ContainerInspectResponse, ContainerStatsResponse)>>,
        /// Ids whose stats answer 404, as a container removed mid-cycle does.
        pub vanish_before_stats: Mutex<Vec<String>>,
        top: Option<ContainerTopResponse>,
        fail_act: bool,
        /// Successful actions, in order.
        pub acts: Mutex<Vec<(String, ContainerAction)>>,
        calls: Mutex<HashMap<&'static str, usize>>,
        inspected: Mutex<HashMap<String, usize>>,
        events: Mutex<Option<mpsc::UnboundedReceiver<EventMessage>>>,
    }

    impl FakeDocker {
        /// Containers from fixture file pairs (inspect, stats).
        pub(crate) fn with_fixtures(pairs: &[(&str, &str)]) -> Self {
            let fake = Self::default();
            for (inspect, stats) in pairs {
                fake.containers
                    .lock()
                    .unwrap()
                    .push((fixture(inspect), fixture(stats)));
            }
            fake
        }

        /// Answers `top` with `top` for every container.
        pub(crate) fn with_top(mut self, top: ContainerTopResponse) -> Self {
            self.top = Some(top);
            self
        }

        /// Makes every `act` fail with a conflict (while `fail` is set).
        pub(crate) fn with_failing_acts(mut self, fail: bool) -> Self {
            self.fail_act = fail;
            self
        }

        /// Calls of one method so far: `version`, `list`, `inspect`, `inspect_image`,
        /// `stats`, `top` or `act`.
        pub(crate) fn calls(&self, method: &str) -> usize {
            self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
        }

        /// Inspect calls for one container so far.
        pub(crate) fn inspected(&self, id: &str) -> usize {
            self.inspected.lock().unwrap().get(id).copied().unwrap_or(0)
        }

        /// Changes the state a container is listed and inspected with.
        pub(crate) fn set_status(&self, id: &str, status: ContainerStateStatusEnum) {
            for (inspect, _) in self.containers.lock().unwrap().iter_mut() {
                if inspect.id.as_deref() == Some(id) {
                    inspect.state.get_or_insert_default().status = Some(status);
                }
            }
        }

        /// Makes the next `events()` stream replay what is sent here.
        pub(crate) fn event_sender(&self) -> mpsc::UnboundedSender<EventMessage> {
            let (tx, rx) = mpsc::unbounded_channel();
            *self.events.lock().unwrap() = Some(rx);
            tx
        }

        fn count(&self, method: &'static str) {
            *self.calls.lock().unwrap().entry(method).or_default() += 1;
        }

        fn find<T>(
            &self,
            id: &str,
            pick: impl Fn(&(ContainerInspectResponse, ContainerStatsResponse)) -> T,
        ) -> Result<T, DockerError> {
            self.containers
                .lock()
                .unwrap()
                .iter()
                .find(|(i, _)| i.id.as_deref() == Some(id))
                .map(pick)
                .ok_or(DockerError::NotFound { what: id.into() })
        }
    }

    #[async_trait]
    impl DockerApi for FakeDocker {
        async fn version(&self) -> Result<EngineVersion, DockerError> {
            self.count("version");
            Ok(EngineVersion {
                version: "20.10.24".into(),
                api_version: "1.41".into(),
            })
        }

        async fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError> {
            self.count("list");
            let state = |i: &ContainerInspectResponse| match i.state.as_ref().and_then(|s| s.status)
            {
                Some(ContainerStateStatusEnum::RUNNING) => ContainerSummaryStateEnum::RUNNING,
                Some(ContainerStateStatusEnum::PAUSED) => ContainerSummaryStateEnum::PAUSED,
                _ => ContainerSummaryStateEnum::EXITED,
            };
            Ok(self
                .containers
                .lock()
                .unwrap()
                .iter()
                .map(|(inspect, _)| ContainerSummary {
                    id: inspect.id.clone(),
                    state: Some(state(inspect)),
                    ..Default::default()
                })
                .collect())
        }

        async fn inspect_container(
            &self,
            id: &str,
        ) -> Result<ContainerInspectResponse, DockerError> {
            self.count("inspect");
            *self
                .inspected
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_default() += 1;
            self.find(id, |(i, _)| i.clone())
        }

        async fn inspect_image(&self, id: &str) -> Result<ImageInspect, DockerError> {
            self.count("inspect_image");
            Err(DockerError::NotFound { what: id.into() })
        }

        async fn stats(&self, id: &str) -> Result<ContainerStatsResponse, DockerError> {
            self.count("stats");
            if self
                .vanish_before_stats
                .lock()
                .unwrap()
                .iter()
                .any(|v| v == id)
            {
                return Err(DockerError::NotFound { what: id.into() });
            }
            self.find(id, |(_, s)| s.clone())
        }

        async fn top(&self, id: &str) -> Result<ContainerTopResponse, DockerError> {
            self.count("top");
            self.top
                .clone()
                .ok_or(DockerError::NotFound { what: id.into() })
        }

        async fn act(&self, id: &str, action: ContainerAction) -> Result<(), DockerError> {
            self.count("act");
            if self.fail_act {
                return Err(DockerError::Conflict {
                    what: format!("container {id}"),
                    message: "container is not running".into(),
                });
            }
            self.acts.lock().unwrap().push((id.to_string(), action));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_from_api_version() {
        let v = |a: &str| EngineVersion {
            version: String::new(),
            api_version: a.into(),
        };
        assert!(v("1.41").supports_one_shot());
        assert!(v("1.45").supports_one_shot());
        assert!(!v("1.40").supports_one_shot());
        assert!(!v("").supports_one_shot());
    }
}
