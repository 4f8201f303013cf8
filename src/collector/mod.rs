//! The collection loop: one cycle per interval (and early ones on container start events)
//! that lists containers, gathers every running container's usage concurrently, reads the
//! host, and publishes one [`Snapshot`].
//!
//! Inspect data is cached per container and invalidated by the Docker event stream, so a
//! steady host costs one list call plus one usage read per running container per cycle.

#[cfg(test)]
mod cache_tests;
pub mod cgroup;
pub mod container;
pub mod host;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::docker::DockerApi;
use crate::model::{ContainerMeta, ContainerSnapshot, ContainerState, ContainerUsage, Snapshot};
use host::HostCollector;

/// A reader that produces a container's usage without the Engine API (the cgroup fast path).
///
/// Returns `None` when it cannot read this container; the collector then falls back to the
/// stats endpoint for that container alone. Calls are blocking and must be cheap.
pub trait UsageReader: Send + Sync + std::fmt::Debug {
    /// Reads one sample of `meta`'s usage.
    fn read(&self, meta: &ContainerMeta) -> Option<ContainerUsage>;
}

/// Fast-path reads in flight at once (each on a blocking-pool thread).
const FAST_PATH_THREADS: usize = 2;

/// Where in a cycle something failed; the label of `dockwatch_collection_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Engine version / ping.
    Version,
    /// Listing containers.
    List,
    /// Inspecting a container.
    Inspect,
    /// Reading a container's usage.
    Stats,
    /// Reading the host.
    Host,
    /// The event stream.
    Events,
}

impl Stage {
    /// Every stage, in export order.
    pub const ALL: [Stage; 6] = [
        Self::Version,
        Self::List,
        Self::Inspect,
        Self::Stats,
        Self::Host,
        Self::Events,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Version => "version",
            Self::List => "list",
            Self::Inspect => "inspect",
            Self::Stats => "stats",
            Self::Host => "host",
            Self::Events => "events",
        }
    }
}

/// The exporter's own counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SelfStats {
    errors: [AtomicU64; 6],
    cycles: AtomicU64,
    last_success: Mutex<Option<SystemTime>>,
    engine: Mutex<Option<crate::docker::EngineVersion>>,
}

impl SelfStats {
    /// Counts one error at `stage`.
    pub fn error(&self, stage: Stage) {
        self.errors[stage as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Errors counted at `stage` so far.
    pub fn errors(&self, stage: Stage) -> u64 {
        self.errors[stage as usize].load(Ordering::Relaxed)
    }

    /// Completed cycles.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// End of the last cycle in which the engine answered.
    pub fn last_success(&self) -> Option<SystemTime> {
        *self.last_success.lock().expect("self stats lock poisoned")
    }

    /// Engine version, once the engine answered.
    pub fn engine(&self) -> Option<crate::docker::EngineVersion> {
        self.engine
            .lock()
            .expect("self stats lock poisoned")
            .clone()
    }
}

/// Settings of the collection loop.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Time between scheduled cycles.
    pub interval: Duration,
    /// Most container reads in flight at once.
    pub concurrency: usize,
}

/// Owns the collection state and publishes snapshots.
#[derive(Debug)]
pub struct Collector {
    docker: Arc<dyn DockerApi>,
    host: Option<Arc<Mutex<HostCollector>>>,
    fast_path: Option<Arc<dyn UsageReader>>,
    fast_slots: tokio::sync::Semaphore,
    config: CollectorConfig,
    cache: Mutex<HashMap<String, Arc<ContainerMeta>>>,
    previous: Mutex<HashMap<String, ContainerUsage>>,
    trigger: Notify,
    stats: Arc<SelfStats>,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Collector {
    /// Builds a collector; nothing runs until [`Collector::run`].
    pub fn new(
        docker: Arc<dyn DockerApi>,
        host: Option<HostCollector>,
        fast_path: Option<Arc<dyn UsageReader>>,
        config: CollectorConfig,
    ) -> Arc<Self> {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Arc::new(Self {
            docker,
            host: host.map(|h| Arc::new(Mutex::new(h))),
            fast_path,
            fast_slots: tokio::sync::Semaphore::new(FAST_PATH_THREADS),
            config,
            cache: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
            trigger: Notify::new(),
            stats: Arc::new(SelfStats::default()),
            tx,
        })
    }

    /// A receiver that always holds the latest snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The exporter's own counters.
    pub fn self_stats(&self) -> Arc<SelfStats> {
        self.stats.clone()
    }

    /// The Docker client, for components that act on containers.
    pub fn docker(&self) -> Arc<dyn DockerApi> {
        self.docker.clone()
    }

    /// Asks for a cycle as soon as possible (used on container start events).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// Runs cycles until `shutdown` is cancelled, and follows Docker events alongside.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let events = tokio::spawn(
            self.clone()
                .follow_events(shutdown.clone())
                .instrument(info_span!("events")),
        );
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let scheduled = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => true,
                _ = self.trigger.notified() => {
                    // Coalesce a burst of events (compose up) into one cycle.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
            };
            self.collect_once(scheduled)
                .instrument(info_span!("cycle", scheduled))
                .await;
        }
        events.abort();
    }

    /// Runs one cycle and publishes its snapshot.
    pub async fn collect_once(&self, scheduled: bool) -> Arc<Snapshot> {
        let started = Instant::now();
        let taken_at = SystemTime::now();
        let host = self.collect_host();
        let containers = self.collect_containers();
        let (host, containers) = tokio::join!(host, containers);
        let docker_up = containers.is_some();
        let snapshot = Arc::new(Snapshot {
            taken_at: Some(taken_at),
            scheduled,
            docker_up,
            containers: containers.unwrap_or_default(),
            host,
            duration: started.elapsed(),
        });
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        if docker_up {
            *self
                .stats
                .last_success
                .lock()
                .expect("self stats lock poisoned") = Some(SystemTime::now());
        }
        debug!(
            containers = snapshot.containers.len(),
            duration_ms = snapshot.duration.as_millis() as u64,
            "cycle done"
        );
        self.tx.send_replace(snapshot.clone());
        snapshot
    }

    async fn collect_host(&self) -> Option<crate::collector::host::HostSnapshot> {
        let host = self.host.clone()?;
        let res = tokio::task::spawn_blocking(move || {
            host.lock().expect("host collector lock poisoned").collect()
        })
        .await;
        match res {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                self.stats.error(Stage::Host);
                warn!(error = %e, "host collection failed");
                None
            }
            Err(e) => {
                self.stats.error(Stage::Host);
                warn!(error = %e, "host collection panicked");
                None
            }
        }
    }

    /// Lists, inspects (cache misses only) and reads usage; `None` when the engine is down.
    async fn collect_containers(&self) -> Option<Vec<ContainerSnapshot>> {
        if self.stats.engine().is_none() {
            match self.docker.version().await {
                Ok(v) => {
                    info!(version = %v.version, api_version = %v.api_version, "docker engine connected");
                    *self.stats.engine.lock().expect("self stats lock poisoned") = Some(v);
                }
                Err(e) => {
                    self.stats.error(Stage::Version);
                    warn!(error = %e, "docker engine unreachable");
                    return None;
                }
            }
        }
        let listed = match self.docker.list_containers().await {
            Ok(l) => l,
            Err(e) => {
                self.stats.error(Stage::List);
                warn!(error = %e, "listing containers failed");
                // Renegotiate on the next cycle: the engine may have been replaced.
                *self.stats.engine.lock().expect("self stats lock poisoned") = None;
                return None;
            }
        };

        let limit = self.config.concurrency.max(1);
        let results: Vec<Option<ContainerSnapshot>> = futures_util::stream::iter(listed)
            .map(|summary| self.collect_container(summary))
            .buffer_unordered(limit)
            .collect()
            .await;
        let mut containers: Vec<ContainerSnapshot> = results.into_iter().flatten().collect();
        containers.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));

        // Forget state of containers that are gone.
        let alive: std::collections::HashSet<&str> =
            containers.iter().map(|c| c.meta.id.as_str()).collect();
        self.cache
            .lock()
            .expect("cache lock poisoned")
            .retain(|id, _| alive.contains(id.as_str()));
        self.previous
            .lock()
            .expect("previous lock poisoned")
            .retain(|id, _| alive.contains(id.as_str()));
        Some(containers)
    }

    async fn collect_container(
        &self,
        summary: bollard::models::ContainerSummary,
    ) -> Option<ContainerSnapshot> {
        let id = summary.id?;
        let listed_state = summary
            .state
            .map(|s| ContainerState::parse(s.as_ref()))
            .unwrap_or(ContainerState::Exited);
        let meta = self.meta(&id, listed_state).await?;
        if !meta.state.has_usage() {
            self.previous
                .lock()
                .expect("previous lock poisoned")
                .remove(&id);
            return Some(ContainerSnapshot { meta, usage: None });
        }
        let usage = self.usage(&meta).await;
        Some(ContainerSnapshot { meta, usage })
    }

    /// Cached metadata, re-inspected when missing or when the listed state disagrees (an
    /// event may have been missed while the stream reconnected).
    async fn meta(&self, id: &str, listed_state: ContainerState) -> Option<Arc<ContainerMeta>> {
        let cached = self
            .cache
            .lock()
            .expect("cache lock poisoned")
            .get(id)
            .cloned();
        if let Some(meta) = cached.filter(|m| m.state == listed_state) {
            return Some(meta);
        }
        match self.docker.inspect_container(id).await {
            Ok(inspect) => {
                let meta = Arc::new(container::meta_from_inspect(inspect));
                self.cache
                    .lock()
                    .expect("cache lock poisoned")
                    .insert(id.to_string(), meta.clone());
                Some(meta)
            }
            Err(e) => {
                self.stats.error(Stage::Inspect);
                if e.is_gone() {
                    debug!(container = id, "container vanished before inspect");
                } else {
                    warn!(container = id, error = %e, "inspect failed");
                }
                None
            }
        }
    }

    async fn usage(&self, meta: &Arc<ContainerMeta>) -> Option<ContainerUsage> {
        // Fast-path reads run on the blocking pool, a few at a time: with one hand-off per
        // container in flight the pool grew to hundreds of threads (each with its own malloc
        // arena), and reading in place would stall an async worker for the whole batch.
        let fast = match &self.fast_path {
            Some(reader) => {
                let _slot = self.fast_slots.acquire().await.ok();
                let reader = reader.clone();
                let m = meta.clone();
                tokio::task::spawn_blocking(move || reader.read(&m))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let mut usage = match fast {
            Some(u) => u,
            None => match self.docker.stats(&meta.id).await {
                Ok(stats) => match container::usage_from_stats(&stats, meta) {
                    Some(u) => u,
                    None => {
                        self.stats.error(Stage::Stats);
                        debug!(container = %meta.name, "container stopped before stats");
                        return None;
                    }
                },
                Err(e) => {
                    self.stats.error(Stage::Stats);
                    if e.is_gone() {
                        debug!(container = %meta.name, "container vanished before stats");
                    } else {
                        warn!(container = %meta.name, error = %e, "stats failed");
                    }
                    return None;
                }
            },
        };
        let mut previous = self.previous.lock().expect("previous lock poisoned");
        usage.derive_rates(previous.get(&meta.id));
        previous.insert(meta.id.clone(), usage.clone());
        Some(usage)
    }

    /// Follows container events: invalidates cached inspect data and triggers a cycle when a
    /// container starts. Reconnects with backoff and drops the cache after a gap, since
    /// events may have been missed.
    async fn follow_events(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut stream = self.docker.events();
            let mut healthy = false;
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => item,
                };
                match item {
                    Some(Ok(event)) => {
                        healthy = true;
                        backoff = Duration::from_millis(500);
                        self.on_event(&event);
                    }
                    Some(Err(e)) => {
                        self.stats.error(Stage::Events);
                        debug!(error = %e, "event stream failed");
                        break;
                    }
                    None => break,
                }
            }
            if healthy {
                warn!("docker event stream ended, reconnecting");
            }
            self.cache.lock().expect("cache lock poisoned").clear();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn on_event(&self, event: &bollard::models::EventMessage) {
        let Some(id) = event.actor.as_ref().and_then(|a| a.id.as_deref()) else {
            return;
        };
        let action = event.action.as_deref().unwrap_or_default();
        // Exec events do not change the container itself.
        if action.starts_with("exec_") || action == "top" || action == "attach" {
            return;
        }
        debug!(container = id, action, "container event");
        self.cache.lock().expect("cache lock poisoned").remove(id);
        if action == "destroy" {
            self.previous
                .lock()
                .expect("previous lock poisoned")
                .remove(id);
        }
        if matches!(action, "start" | "unpause" | "restart" | "die" | "destroy") {
            self.trigger();
        }
    }
}

#[cfg(test)]
mod tests;
