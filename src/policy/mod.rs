//! The security policy engine: evaluates every snapshot against the image, runtime and
//! network policies of the policy file and turns conditions into violation episodes.
//!
//! An episode is keyed by (container, policy, rule, subject). It starts when its condition
//! first holds (a `ViolationStarted` event, one count on `dockwatch_policy_violations_total`,
//! and a quarantine request for CRITICAL violations, which the enforcer carries out only for
//! `enforce` policies with `--enforce` and otherwise reports as a dry run) and ends when the condition
//! clears or the container goes (`ViolationEnded` with the duration). Rules that depend only on
//! inspect data are cached per container until its metadata changes, so evaluating an
//! unchanged host costs a few map lookups per container plus the dynamic checks.

pub mod config;
pub mod image;
pub mod network;
pub mod rules;
pub mod runtime;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use clap::Args;
use futures_util::StreamExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cli::parse_duration;
use crate::docker::DockerApi;
use crate::enforce::Enforcer;
use crate::events::{EventHub, EventKind, Severity, ViolationEvent};
use crate::metrics::{Family, Kind, label};
use crate::model::{ContainerMeta, ContainerSnapshot, ContainerState, Snapshot};

use config::{PolicyFile, PolicyFileError};
use image::ReportIndex;
use network::{Resolved, Resolver, SystemResolver};
use rules::{Finding, Rule};

/// Policy flags.
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Policy file (YAML). Without it a built-in default policy applies.
    #[arg(long = "policy.file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Directory of Trivy or Grype JSON reports (`*.json`), matched to containers by image id
    /// or repo digest and re-read when files change.
    #[arg(long = "policy.reports-dir", value_name = "DIR")]
    pub reports_dir: Option<PathBuf>,

    /// How often blocked domains are resolved to addresses.
    #[arg(long = "policy.resolve-interval", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub resolve_interval: Duration,

    /// How often the policy file and the reports dir are checked for changes.
    #[arg(long = "policy.watch-interval", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub watch_interval: Duration,

    /// Shortest time between two process listings (`docker top`) of one container.
    #[arg(long = "policy.process-interval", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub process_interval: Duration,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        Self {
            file: None,
            reports_dir: None,
            resolve_interval: Duration::from_secs(300),
            watch_interval: Duration::from_secs(5),
            process_interval: Duration::from_secs(10),
        }
    }
}

/// Loads the policy of `args` (the file, or the built-in default).
pub fn load(args: &PolicyArgs) -> Result<(PolicyFile, String), PolicyFileError> {
    match &args.file {
        Some(path) => Ok((config::load_file(path)?, path.display().to_string())),
        None => Ok((
            config::parse(config::DEFAULT_SOURCE, config::DEFAULT_POLICY)?,
            config::DEFAULT_SOURCE.to_string(),
        )),
    }
}

/// `dockwatch check-policy FILE`: the summary on success, the error otherwise.
pub fn check_policy(file: &Path, reports_dir: bool) -> Result<String, PolicyFileError> {
    let policy = config::load_file(file)?;
    Ok(config::describe(
        &file.display().to_string(),
        &policy,
        reports_dir,
    ))
}

struct Loaded {
    policy: PolicyFile,
    generation: u64,
}

type Key = (String, String, Rule, String);

#[derive(Debug, Clone)]
struct Episode {
    finding: Finding,
    meta: Arc<ContainerMeta>,
    started: SystemTime,
    started_mono: Instant,
}

struct StaticEntry {
    meta: Arc<ContainerMeta>,
    policy_generation: u64,
    reports_generation: u64,
    findings: Vec<Finding>,
}

#[derive(Default)]
struct EvalState {
    statics: HashMap<String, StaticEntry>,
    image_digests: HashMap<String, Vec<String>>,
    processes: HashMap<String, (Instant, BTreeSet<String>)>,
    pending: HashMap<(String, String, Rule), Instant>,
}

#[derive(Default)]
struct Exported {
    episodes: BTreeMap<Key, Episode>,
    counters: BTreeMap<(String, Rule, Severity, String), u64>,
    last_seen: HashMap<String, Instant>,
    rules: Vec<(String, &'static str, usize)>,
    eval_seconds: Option<f64>,
    reports: usize,
    reload_ok: bool,
    reload_success: Option<f64>,
}

/// How long the violation counter of a removed container is kept.
const COUNTER_RETENTION: Duration = Duration::from_secs(3600);

/// The engine; shared by the evaluation loop, the reload triggers and `/metrics`.
pub struct PolicyEngine {
    args: PolicyArgs,
    procfs: PathBuf,
    docker: Arc<dyn DockerApi>,
    hub: EventHub,
    enforcer: Enforcer,
    resolver: Arc<dyn Resolver>,
    loaded: RwLock<Arc<Loaded>>,
    reports: RwLock<(Arc<ReportIndex>, u64)>,
    resolved: RwLock<Arc<Resolved>>,
    last_file_text: Mutex<Option<Vec<u8>>>,
    state: tokio::sync::Mutex<EvalState>,
    exported: Mutex<Exported>,
    wake: Notify,
    resolve_now: Notify,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PolicyEngine {
    /// Loads the policy and the reports; fails when the policy file is invalid.
    pub fn new(
        args: PolicyArgs,
        procfs: PathBuf,
        docker: Arc<dyn DockerApi>,
        hub: EventHub,
        enforcer: Enforcer,
    ) -> Result<Arc<Self>, PolicyFileError> {
        Self::with_resolver(
            args,
            procfs,
            docker,
            hub,
            enforcer,
            Arc::new(SystemResolver),
        )
    }

    /// Like [`PolicyEngine::new`] with a chosen resolver.
    pub fn with_resolver(
        args: PolicyArgs,
        procfs: PathBuf,
        docker: Arc<dyn DockerApi>,
        hub: EventHub,
        enforcer: Enforcer,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Arc<Self>, PolicyFileError> {
        let (policy, source) = load(&args)?;
        let text = args.file.as_ref().and_then(|p| std::fs::read(p).ok());
        let engine = Arc::new(Self {
            args,
            procfs,
            docker,
            hub,
            enforcer,
            resolver,
            loaded: RwLock::new(Arc::new(Loaded {
                policy: PolicyFile::default(),
                generation: 0,
            })),
            reports: RwLock::new((Arc::new(ReportIndex::default()), 0)),
            resolved: RwLock::new(Arc::new(Resolved::new())),
            last_file_text: Mutex::new(text),
            state: tokio::sync::Mutex::new(EvalState::default()),
            exported: Mutex::new(Exported::default()),
            wake: Notify::new(),
            resolve_now: Notify::new(),
        });
        engine.install(policy, &source, "startup");
        engine.reload_reports();
        Ok(engine)
    }

    fn install(&self, policy: PolicyFile, source: &str, trigger: &str) {
        let reports = self.args.reports_dir.is_some();
        let mut rules = Vec::new();
        for p in &policy.image_policies {
            rules.push((p.name.clone(), "image", p.rules(reports).len()));
        }
        for p in &policy.runtime_policies {
            rules.push((p.name.clone(), "runtime", p.rules().len()));
        }
        for p in &policy.network_policies {
            rules.push((p.name.clone(), "network", p.rules().len()));
        }
        let total: usize = rules.iter().map(|r| r.2).sum();
        info!(
            source,
            trigger,
            policies = rules.len(),
            rules = total,
            "policy loaded"
        );
        {
            let mut w = self.loaded.write().unwrap_or_else(|e| e.into_inner());
            let generation = w.generation + 1;
            *w = Arc::new(Loaded { policy, generation });
        }
        let mut ex = lock(&self.exported);
        ex.rules = rules;
        ex.reload_ok = true;
        ex.reload_success = Some(unix_now());
        drop(ex);
        self.resolve_now.notify_one();
        self.wake.notify_one();
    }

    /// Re-reads the policy (file or built-in). A bad file is refused and logged; the last good
    /// policy stays.
    pub fn reload(&self, trigger: &str) -> Result<String, PolicyFileError> {
        if let Some(path) = &self.args.file {
            *lock(&self.last_file_text) = std::fs::read(path).ok();
        }
        match load(&self.args) {
            Ok((policy, source)) => {
                let summary = config::describe(&source, &policy, self.args.reports_dir.is_some());
                self.install(policy, &source, trigger);
                Ok(summary)
            }
            Err(e) => {
                error!(error = %e, trigger, "policy reload refused; the last good policy stays");
                lock(&self.exported).reload_ok = false;
                Err(e)
            }
        }
    }

    /// Reloads the vulnerability reports.
    pub fn reload_reports(&self) {
        let Some(dir) = &self.args.reports_dir else {
            return;
        };
        let (index, errors) = image::load_dir(dir);
        for e in &errors {
            warn!(error = %e, "vulnerability report skipped");
        }
        info!(dir = %dir.display(), reports = index.len(), "vulnerability reports loaded");
        lock(&self.exported).reports = index.len();
        let mut w = self.reports.write().unwrap_or_else(|e| e.into_inner());
        let generation = w.1 + 1;
        *w = (Arc::new(index), generation);
        drop(w);
        self.wake.notify_one();
    }

    /// Checks the policy file and the reports dir for changes once.
    pub fn poll_changes(&self) {
        if let Some(path) = &self.args.file {
            let now = std::fs::read(path).ok();
            let changed = *lock(&self.last_file_text) != now;
            if changed && now.is_some() {
                let _ = self.reload("file change");
            }
        }
        if let Some(dir) = &self.args.reports_dir {
            let current = self
                .reports
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .fingerprint
                .clone();
            if image::fingerprint(dir) != current {
                self.reload_reports();
            }
        }
    }

    /// Routes: `POST /-/reload`.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/-/reload", post(reload_handler).put(reload_handler))
            .with_state(self.clone())
    }

    /// Runs the evaluation loop, the change watcher and the resolver until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut rx: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        let watcher = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(this.args.watch_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => this.poll_changes(),
                    }
                }
            })
        };
        let resolver = tokio::spawn(self.clone().resolve_loop(shutdown.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
                _ = self.wake.notified() => {}
            }
            let snapshot = rx.borrow_and_update().clone();
            if snapshot.taken_at.is_none() {
                continue;
            }
            self.evaluate(&snapshot).await;
        }
        let _ = watcher.await;
        let _ = resolver.await;
    }

    async fn resolve_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.resolve_once().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.args.resolve_interval) => {}
                _ = self.resolve_now.notified() => {}
            }
        }
    }

    /// Resolves every blocked domain of the current policy; a domain that fails keeps its
    /// previous addresses.
    pub async fn resolve_once(&self) {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let domains: BTreeSet<String> = loaded
            .policy
            .network_policies
            .iter()
            .flat_map(|p| p.blocked_domains.iter().map(|d| d.to_ascii_lowercase()))
            .collect();
        let previous = self
            .resolved
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next = Resolved::new();
        for d in &domains {
            match self.resolver.resolve(d).await {
                Ok(ips) => {
                    debug!(domain = %d, addresses = ips.len(), "blocked domain resolved");
                    next.extend(ips.into_iter().map(|ip| (ip, d.clone())));
                }
                Err(e) => {
                    debug!(domain = %d, error = %e, "resolving a blocked domain failed");
                    next.extend(
                        previous
                            .iter()
                            .filter(|(_, v)| *v == d)
                            .map(|(k, v)| (*k, v.clone())),
                    );
                }
            }
        }
        *self.resolved.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// Evaluates one snapshot and updates episodes and metrics; returns the events it
    /// published.
    pub async fn evaluate(&self, snapshot: &Snapshot) -> Vec<ViolationEvent> {
        if !snapshot.docker_up {
            return Vec::new();
        }
        let started = Instant::now();
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (reports, reports_gen) = self
            .reports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let resolved = self
            .resolved
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let policy = &loaded.policy;
        let reports = self.args.reports_dir.is_some().then_some(&*reports);

        let candidates: Vec<&ContainerSnapshot> = snapshot
            .containers
            .iter()
            .filter(|c| {
                matches!(
                    c.meta.state,
                    ContainerState::Created
                        | ContainerState::Running
                        | ContainerState::Paused
                        | ContainerState::Restarting
                )
            })
            .collect();

        let mut st = self.state.lock().await;
        let present: BTreeSet<&str> = snapshot
            .containers
            .iter()
            .map(|c| c.meta.id.as_str())
            .collect();
        st.statics.retain(|id, _| present.contains(id.as_str()));
        st.processes.retain(|id, _| present.contains(id.as_str()));
        st.pending.retain(|k, _| present.contains(k.0.as_str()));
        let images: BTreeSet<&str> = snapshot
            .containers
            .iter()
            .map(|c| c.meta.image_id.as_str())
            .collect();
        st.image_digests
            .retain(|id, _| images.contains(id.as_str()));

        let mut findings: BTreeMap<Key, (Finding, Arc<ContainerMeta>)> = BTreeMap::new();
        let mut add = |meta: &Arc<ContainerMeta>, f: Finding| {
            let key = (meta.id.clone(), f.policy.clone(), f.rule, f.subject.clone());
            findings.entry(key).or_insert((f, meta.clone()));
        };

        // Rules over inspect data, cached until the metadata, policy or reports change.
        for c in &candidates {
            let fresh = st.statics.get(&c.meta.id).is_some_and(|e| {
                Arc::ptr_eq(&e.meta, &c.meta)
                    && e.policy_generation == loaded.generation
                    && e.reports_generation == reports_gen
            });
            if !fresh {
                let digests = if reports.is_some_and(|r| !r.is_empty()) {
                    self.repo_digests(&mut st, &c.meta).await
                } else {
                    Vec::new()
                };
                let findings = static_findings(policy, &c.meta, &digests, reports);
                st.statics.insert(
                    c.meta.id.clone(),
                    StaticEntry {
                        meta: c.meta.clone(),
                        policy_generation: loaded.generation,
                        reports_generation: reports_gen,
                        findings,
                    },
                );
            }
            if let Some(e) = st.statics.get(&c.meta.id) {
                for f in &e.findings {
                    add(&c.meta, f.clone());
                }
            }
        }

        // Process listings, at most one per container per process interval.
        let running: Vec<&ContainerSnapshot> = candidates
            .iter()
            .copied()
            .filter(|c| c.meta.state == ContainerState::Running)
            .collect();
        let now = Instant::now();
        let need_top: Vec<String> = running
            .iter()
            .filter(|c| {
                policy
                    .runtime_policies
                    .iter()
                    .any(|p| p.allowed_processes.is_some() && p.selector.matches(&c.meta))
            })
            .filter(|c| {
                st.processes
                    .get(&c.meta.id)
                    .is_none_or(|(at, _)| now.duration_since(*at) >= self.args.process_interval)
            })
            .map(|c| c.meta.id.clone())
            .collect();
        let docker = self.docker.clone();
        let listings: Vec<_> = futures_util::stream::iter(need_top)
            .map(|id| {
                let docker = docker.clone();
                async move {
                    let r = docker.top(&id).await;
                    (id, r)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (id, r) in listings {
            match r {
                Ok(top) => {
                    st.processes.insert(id, (now, runtime::process_names(&top)));
                }
                Err(e) => {
                    debug!(container = %id, error = %e, "listing processes failed");
                    if let Some(entry) = st.processes.get_mut(&id) {
                        entry.0 = now;
                    }
                }
            }
        }

        // Dynamic rules.
        for c in &running {
            let meta = &c.meta;
            for p in policy
                .runtime_policies
                .iter()
                .filter(|p| p.selector.matches(meta))
            {
                if let Some((_, names)) = st.processes.get(&meta.id) {
                    for f in runtime::check_processes(p, names) {
                        add(meta, f);
                    }
                }
                let usage = c.usage.as_ref();
                let cpu = usage.and_then(|u| u.rates.cpu_cores);
                let mem = usage.map(|u| u.memory.working_set_bytes);
                let checks = [
                    (
                        Rule::RuntimeCpu,
                        p.max_cpu_percent.is_some(),
                        cpu.is_some(),
                        runtime::cpu_over(p, cpu),
                    ),
                    (
                        Rule::RuntimeMemory,
                        p.max_memory_mb.is_some(),
                        mem.is_some(),
                        runtime::memory_over(p, mem),
                    ),
                ];
                for (rule, enabled, known, over) in checks {
                    if !enabled {
                        continue;
                    }
                    let key = (meta.id.clone(), p.name.clone(), rule);
                    match over {
                        Some((value, max)) => {
                            let since = *st.pending.entry(key).or_insert(now);
                            if now.duration_since(since) >= p.hold() {
                                add(meta, ceiling_finding(p, rule, value, max));
                            }
                        }
                        None if known => {
                            st.pending.remove(&key);
                        }
                        None => {
                            // No sample this cycle: an ongoing condition carries on.
                            let held = st
                                .pending
                                .get(&key)
                                .is_some_and(|since| now.duration_since(*since) >= p.hold());
                            let prev = held
                                .then(|| {
                                    lock(&self.exported)
                                        .episodes
                                        .iter()
                                        .find(|(k, _)| {
                                            k.0 == meta.id && k.1 == p.name && k.2 == rule
                                        })
                                        .map(|(_, e)| e.finding.clone())
                                })
                                .flatten();
                            if let Some(f) = prev {
                                add(meta, f);
                            }
                        }
                    }
                }
            }
            let net: Vec<_> = policy
                .network_policies
                .iter()
                .filter(|p| {
                    (!p.blocked_ips.is_empty() || !p.blocked_domains.is_empty())
                        && p.selector.matches(meta)
                })
                .collect();
            if net.is_empty() || meta.network_mode == "host" {
                continue;
            }
            let Some(pid) = meta.pid else {
                continue;
            };
            match network::read_connections(&self.procfs, pid) {
                Ok(conns) => {
                    for p in net {
                        for f in network::check_destinations(p, &conns, &resolved) {
                            add(meta, f);
                        }
                    }
                }
                Err(e) => debug!(container = %meta.name, error = %e, "reading connections failed"),
            }
        }
        drop(st);

        let elapsed = started.elapsed().as_secs_f64();
        let (events, quarantines) = self.apply(findings, snapshot, elapsed);
        for e in &events {
            self.hub.publish(e.clone());
        }
        for (meta, event) in quarantines {
            let enforcer = self.enforcer.clone();
            tokio::spawn(async move { enforcer.quarantine(&meta, &event).await });
        }
        events
    }

    async fn repo_digests(&self, st: &mut EvalState, meta: &ContainerMeta) -> Vec<String> {
        if let Some(d) = st.image_digests.get(&meta.image_id) {
            return d.clone();
        }
        match self.docker.inspect_image(&meta.image_id).await {
            Ok(img) => {
                let d = img.repo_digests.unwrap_or_default();
                st.image_digests.insert(meta.image_id.clone(), d.clone());
                d
            }
            Err(e) => {
                debug!(image = %meta.image_id, error = %e, "inspecting image failed");
                Vec::new()
            }
        }
    }

    /// Diffs `findings` against the active episodes; returns events and quarantine requests.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        findings: BTreeMap<Key, (Finding, Arc<ContainerMeta>)>,
        snapshot: &Snapshot,
        elapsed: f64,
    ) -> (
        Vec<ViolationEvent>,
        Vec<(Arc<ContainerMeta>, ViolationEvent)>,
    ) {
        let now = SystemTime::now();
        let mono = Instant::now();
        let mut events = Vec::new();
        let mut quarantines = Vec::new();
        let mut ex = lock(&self.exported);
        ex.eval_seconds = Some(elapsed);
        let ended: Vec<Key> = ex
            .episodes
            .keys()
            .filter(|k| !findings.contains_key(*k))
            .cloned()
            .collect();
        for key in ended {
            if let Some(ep) = ex.episodes.remove(&key) {
                let duration = mono.duration_since(ep.started_mono).as_secs_f64();
                let why = match snapshot.container(&ep.meta.id) {
                    None => "container removed",
                    Some(c)
                        if matches!(
                            c.meta.state,
                            ContainerState::Exited
                                | ContainerState::Dead
                                | ContainerState::Removing
                        ) =>
                    {
                        "container stopped"
                    }
                    Some(_) => "condition cleared",
                };
                let mut e = event(EventKind::ViolationEnded, &ep.finding, &ep.meta, now);
                e.duration_seconds = Some(duration);
                e.message = format!("{why} after {duration:.0}s: {}", ep.finding.message);
                events.push(e);
            }
        }
        for (key, (finding, meta)) in findings {
            if let Some(ep) = ex.episodes.get_mut(&key) {
                // Still the same episode; a reload may have changed its severity or mode, and
                // the latest message (current figures) is what the end event repeats.
                ep.finding = finding;
                ep.meta = meta;
                continue;
            }
            let e = event(EventKind::ViolationStarted, &finding, &meta, now);
            *ex.counters
                .entry((
                    finding.policy.clone(),
                    finding.rule,
                    finding.severity,
                    meta.name.clone(),
                ))
                .or_default() += 1;
            // Dry-run policies go to the enforcer too: it reports what it would have done.
            if finding.severity == Severity::Critical {
                quarantines.push((meta.clone(), e.clone()));
            }
            events.push(e);
            ex.episodes.insert(
                key,
                Episode {
                    finding,
                    meta,
                    started: now,
                    started_mono: mono,
                },
            );
        }
        for c in &snapshot.containers {
            ex.last_seen.insert(c.meta.name.clone(), mono);
        }
        let Exported {
            last_seen,
            counters,
            ..
        } = &mut *ex;
        last_seen.retain(|_, t| mono.duration_since(*t) < COUNTER_RETENTION);
        counters.retain(|k, _| last_seen.contains_key(&k.3));
        (events, quarantines)
    }

    /// Active episodes as (policy, rule id, container name, subject, started), for tests and
    /// diagnostics.
    pub fn active(&self) -> Vec<(String, &'static str, String, String, SystemTime)> {
        lock(&self.exported)
            .episodes
            .values()
            .map(|e| {
                (
                    e.finding.policy.clone(),
                    e.finding.rule.id(),
                    e.meta.name.clone(),
                    e.finding.subject.clone(),
                    e.started,
                )
            })
            .collect()
    }
}

fn ceiling_finding(p: &config::RuntimePolicy, rule: Rule, value: f64, max: f64) -> Finding {
    let hold = if p.hold().is_zero() {
        String::new()
    } else {
        format!(" for at least {}", humantime::format_duration(p.hold()))
    };
    let (subject, message) = if rule == Rule::RuntimeCpu {
        (
            "cpu".to_string(),
            format!("cpu at {value:.1}% (100% = one core) is above max_cpu_percent {max}{hold}"),
        )
    } else {
        (
            "memory".to_string(),
            format!(
                "memory working set {:.1} MiB is above max_memory_mb {}{hold}",
                value / 1048576.0,
                max / 1048576.0
            ),
        )
    };
    Finding {
        policy: p.name.clone(),
        rule,
        severity: p.severity(rule),
        mode: p.mode,
        subject,
        message,
    }
}

/// Findings of the rules that only read inspect data and reports.
fn static_findings(
    policy: &PolicyFile,
    meta: &ContainerMeta,
    repo_digests: &[String],
    reports: Option<&ReportIndex>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in policy
        .image_policies
        .iter()
        .filter(|p| p.selector.matches(meta))
    {
        out.extend(image::check_tag(p, meta));
        out.extend(image::check_vulnerabilities(p, meta, repo_digests, reports));
    }
    for p in policy
        .runtime_policies
        .iter()
        .filter(|p| p.selector.matches(meta))
    {
        out.extend(runtime::check_syscalls(p, meta));
    }
    for p in policy
        .network_policies
        .iter()
        .filter(|p| p.selector.matches(meta))
    {
        out.extend(network::check_ports(p, meta));
    }
    out
}

fn event(kind: EventKind, f: &Finding, meta: &ContainerMeta, at: SystemTime) -> ViolationEvent {
    ViolationEvent {
        time: humantime::format_rfc3339_millis(at).to_string(),
        timestamp: at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
        kind,
        policy: f.policy.clone(),
        rule: f.rule.id().to_string(),
        category: f.rule.category().to_string(),
        severity: f.severity,
        mode: f.mode,
        container_id: meta.id.clone(),
        container: meta.name.clone(),
        image: meta.image.clone(),
        subject: f.subject.clone(),
        message: f.message.clone(),
        action: None,
        result: None,
        duration_seconds: None,
    }
}

async fn reload_handler(State(engine): State<Arc<PolicyEngine>>) -> impl IntoResponse {
    match engine.reload("http") {
        Ok(summary) => (StatusCode::OK, summary),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload refused: {e}\n"),
        ),
    }
}

/// Exports the engine's state on `/metrics`.
#[derive(Debug)]
pub struct PolicyCollector {
    engine: Arc<PolicyEngine>,
}

impl PolicyCollector {
    /// A collector over `engine`.
    pub fn new(engine: Arc<PolicyEngine>) -> Self {
        Self { engine }
    }
}

impl Collector for PolicyCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let ex = lock(&self.engine.exported);
        let mut total = Family::new(
            "dockwatch_policy_violations",
            "Violation episodes started, by policy, rule, severity and container",
            Kind::Counter,
        );
        for ((policy, rule, severity, container), n) in &ex.counters {
            total.push(
                vec![
                    label("policy", policy),
                    label("rule", rule.id()),
                    label("severity", severity.as_str()),
                    label("container", container),
                ],
                *n as f64,
            );
        }
        total.encode(&mut enc)?;
        let mut active = Family::new(
            "dockwatch_policy_violation_active",
            "1 while a violation episode is active",
            Kind::Gauge,
        );
        for ep in ex.episodes.values() {
            let f = &ep.finding;
            active.push(
                vec![
                    label("policy", &f.policy),
                    label("rule", f.rule.id()),
                    label("category", f.rule.category()),
                    label("severity", f.severity.as_str()),
                    label("mode", f.mode.as_str()),
                    label("container", &ep.meta.name),
                    label("subject", &f.subject),
                ],
                1.0,
            );
        }
        active.encode(&mut enc)?;
        let mut rules = Family::new(
            "dockwatch_policy_rules",
            "Rules loaded, by policy and category",
            Kind::Gauge,
        );
        for (policy, category, n) in &ex.rules {
            rules.push(
                vec![label("policy", policy), label("category", category)],
                *n as f64,
            );
        }
        rules.encode(&mut enc)?;
        Family::new(
            "dockwatch_config_last_reload_successful",
            "Whether the last policy reload succeeded (1) or was refused (0)",
            Kind::Gauge,
        )
        .sample(&[], if ex.reload_ok { 1.0 } else { 0.0 })
        .encode(&mut enc)?;
        if let Some(ts) = ex.reload_success {
            Family::new(
                "dockwatch_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful policy load",
                Kind::Gauge,
            )
            .sample(&[], ts)
            .encode(&mut enc)?;
        }
        Family::new(
            "dockwatch_vulnerability_reports",
            "Vulnerability reports loaded from the reports directory",
            Kind::Gauge,
        )
        .sample(&[], ex.reports as f64)
        .encode(&mut enc)?;
        if let Some(s) = ex.eval_seconds {
            Family::new(
                "dockwatch_policy_evaluation_duration_seconds",
                "Time the last policy evaluation took",
                Kind::Gauge,
            )
            .sample(&[], s)
            .encode(&mut enc)?;
        }
        Ok(())
    }
}

/// Keeps the resolver type reachable for callers that inject one.
pub type SharedResolver = Arc<dyn Resolver>;

/// Addresses one domain resolves to in a fixed table; for tests and air-gapped hosts.
#[derive(Debug, Default)]
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

#[async_trait::async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, domain: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0.get(domain).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no address for {domain}"),
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collector::container::meta_from_inspect;
    use crate::docker::ContainerAction;
    use crate::docker::fake::{FakeDocker, fixture};
    use crate::model::{ContainerUsage, MemoryUsage, UsageRates};
    use bollard::models::ContainerInspectResponse;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) fn fixture_meta(name: &str) -> ContainerMeta {
        meta_from_inspect(fixture(name))
    }

    pub(crate) fn meta_with(f: impl FnOnce(&mut ContainerInspectResponse)) -> ContainerMeta {
        let mut i = fixture("inspect-policy-plain.json");
        f(&mut i);
        meta_from_inspect(i)
    }

    pub(crate) fn meta_named(name: &str, image: &str, labels: &[(&str, &str)]) -> ContainerMeta {
        let mut m = fixture_meta("inspect-policy-plain.json");
        m.name = name.into();
        m.image = image.into();
        m.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m
    }

    fn fake_docker() -> Arc<FakeDocker> {
        Arc::new(FakeDocker::default().with_top(fixture("top-policy-plain.json")))
    }

    fn engine(yaml: &str) -> (Arc<PolicyEngine>, Arc<FakeDocker>, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "dockwatch-policy-unit-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, yaml).unwrap();
        let docker = fake_docker();
        let hub = EventHub::default();
        let enforcer = Enforcer::new(docker.clone(), hub.clone(), false, ContainerAction::Stop);
        let args = PolicyArgs {
            file: Some(file.clone()),
            process_interval: Duration::from_secs(3600),
            ..PolicyArgs::default()
        };
        let e = PolicyEngine::new(
            args,
            PathBuf::from("/nonexistent"),
            docker.clone(),
            hub,
            enforcer,
        )
        .unwrap();
        (e, docker, file)
    }

    fn rand_suffix() -> u64 {
        static N: AtomicUsize = AtomicUsize::new(0);
        N.fetch_add(1, Ordering::Relaxed) as u64
    }

    fn snapshot(containers: Vec<ContainerSnapshot>) -> Snapshot {
        Snapshot {
            taken_at: Some(SystemTime::now()),
            scheduled: true,
            docker_up: true,
            containers,
            host: None,
            duration: Duration::ZERO,
        }
    }

    fn running(meta: &Arc<ContainerMeta>, working_set: u64) -> ContainerSnapshot {
        ContainerSnapshot {
            meta: meta.clone(),
            usage: Some(ContainerUsage {
                memory: MemoryUsage {
                    working_set_bytes: working_set,
                    ..Default::default()
                },
                rates: UsageRates {
                    cpu_cores: Some(0.1),
                    ..Default::default()
                },
                ..Default::default()
            }),
        }
    }

    fn render(e: &Arc<PolicyEngine>) -> String {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(PolicyCollector::new(e.clone())));
        crate::metrics::render(&r).unwrap()
    }

    const POLICY: &str = "image_policies:
  - name: tags
    allowed_tags: [\"v*\"]
runtime_policies:
  - name: rt
    allowed_processes: [sleep]
    max_memory_mb: 1
";

    #[tokio::test]
    async fn same_condition_for_ten_cycles_is_one_episode() {
        let (e, docker, _) = engine(POLICY);
        let mut meta = fixture_meta("inspect-policy-plain.json");
        meta.image = "dwt/app:dev".into();
        let meta = Arc::new(meta);
        let mut events = Vec::new();
        for _ in 0..10 {
            events.extend(e.evaluate(&snapshot(vec![running(&meta, 2 << 20)])).await);
        }
        // Three conditions held for ten cycles: three start events, nothing else.
        let mut started: Vec<(EventKind, String, String)> = events
            .iter()
            .map(|e| (e.kind, e.rule.clone(), e.subject.clone()))
            .collect();
        started.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            started,
            vec![
                (
                    EventKind::ViolationStarted,
                    "image_tag".into(),
                    "dev".into()
                ),
                (
                    EventKind::ViolationStarted,
                    "runtime_memory".into(),
                    "memory".into()
                ),
                (
                    EventKind::ViolationStarted,
                    "runtime_process".into(),
                    "yes".into()
                ),
            ]
        );
        assert_eq!(events[0].container_id, meta.id);
        assert_eq!(events[0].image, "dwt/app:dev");
        // One process listing: the cache holds for the process interval.
        assert_eq!(docker.calls("top"), 1);
        let mut active: Vec<(String, &str, String)> =
            e.active().into_iter().map(|a| (a.0, a.1, a.3)).collect();
        active.sort();
        assert_eq!(
            active,
            vec![
                ("rt".to_string(), "runtime_memory", "memory".to_string()),
                ("rt".to_string(), "runtime_process", "yes".to_string()),
                ("tags".to_string(), "image_tag", "dev".to_string()),
            ]
        );
        let text = render(&e);
        let name = &meta.name;
        assert!(text.contains(&format!(
            "dockwatch_policy_violations_total{{policy=\"tags\",rule=\"image_tag\",severity=\"MEDIUM\",container=\"{name}\"}} 1.0\n"
        )), "{text}");
        assert!(text.contains(&format!(
            "dockwatch_policy_violation_active{{policy=\"rt\",rule=\"runtime_process\",category=\"runtime\",severity=\"HIGH\",mode=\"enforce\",container=\"{name}\",subject=\"yes\"}} 1.0\n"
        )), "{text}");

        // Memory drops: that episode ends, with its duration; the others go on.
        let ended = e.evaluate(&snapshot(vec![running(&meta, 1 << 19)])).await;
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].kind, ended[0].rule.as_str()),
            (EventKind::ViolationEnded, "runtime_memory")
        );
        assert!(ended[0].duration_seconds.is_some_and(|d| d >= 0.0));
        assert!(
            ended[0]
                .message
                .starts_with("condition cleared after 0s: memory working set 2.0 MiB"),
            "{}",
            ended[0].message
        );
        assert_eq!(e.active().len(), 2);
        // Back above: a second episode, counted once more.
        e.evaluate(&snapshot(vec![running(&meta, 2 << 20)])).await;
        let text = render(&e);
        assert!(text.contains(&format!(
            "dockwatch_policy_violations_total{{policy=\"rt\",rule=\"runtime_memory\",severity=\"MEDIUM\",container=\"{name}\"}} 2.0\n"
        )), "{text}");
        // Container gone: every episode ends, the counter stays, the gauge goes.
        let ended = e.evaluate(&snapshot(vec![])).await;
        assert_eq!(ended.len(), 3);
        assert!(
            ended.iter().all(|e| e.kind == EventKind::ViolationEnded
                && e.message.starts_with("container removed"))
        );
        assert!(e.active().is_empty());
        let text = render(&e);
        assert!(
            !text.contains("dockwatch_policy_violation_active{"),
            "{text}"
        );
        assert!(
            text.contains("dockwatch_policy_violations_total{policy=\"rt\""),
            "{text}"
        );
        assert!(text.contains("dockwatch_config_last_reload_successful 1.0\n"));
        assert!(
            text.contains("dockwatch_policy_rules{policy=\"rt\",category=\"runtime\"} 2.0\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn new_metadata_recomputes_static_rules() {
        let (e, _, _) = engine(POLICY);
        let mut meta = fixture_meta("inspect-policy-plain.json");
        meta.image = "dwt/app:dev".into();
        e.evaluate(&snapshot(vec![running(&Arc::new(meta.clone()), 0)]))
            .await;
        assert!(e.active().iter().any(|a| a.1 == "image_tag"));
        meta.image = "dwt/app:v2".into();
        e.evaluate(&snapshot(vec![running(&Arc::new(meta), 0)]))
            .await;
        assert!(!e.active().iter().any(|a| a.1 == "image_tag"));
    }

    #[tokio::test]
    async fn bad_reload_keeps_the_last_good_policy() {
        let (e, _, file) = engine(POLICY);
        std::fs::write(
            &file,
            "runtime_policies:\n  - name: rt\n    max_cpu_percent: x\n",
        )
        .unwrap();
        let err = e.reload("test").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:3:22: runtime_policies[0].max_cpu_percent: invalid type: string \"x\", expected a number",
                file.display()
            )
        );
        let text = render(&e);
        assert!(
            text.contains("dockwatch_config_last_reload_successful 0.0\n"),
            "{text}"
        );
        assert!(
            text.contains("dockwatch_policy_rules{policy=\"tags\",category=\"image\"} 1.0\n"),
            "{text}"
        );
        std::fs::write(
            &file,
            "image_policies:\n  - name: only\n    allowed_tags: [x]\n",
        )
        .unwrap();
        e.poll_changes();
        let text = render(&e);
        assert!(
            text.contains("dockwatch_config_last_reload_successful 1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("dockwatch_policy_rules{policy=\"only\",category=\"image\"} 1.0\n"),
            "{text}"
        );
        assert!(!text.contains("policy=\"tags\""), "{text}");
    }

    #[tokio::test]
    async fn cpu_ceiling_needs_to_hold_for_the_duration() {
        let (e, _, _) =
            engine("runtime_policies:\n  - name: rt\n    max_cpu_percent: 50\n    for: 200ms\n");
        let meta = Arc::new(fixture_meta("inspect-policy-plain.json"));
        let mut busy = running(&meta, 0);
        busy.usage.as_mut().unwrap().rates.cpu_cores = Some(0.9);
        e.evaluate(&snapshot(vec![busy.clone()])).await;
        assert!(e.active().is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
        e.evaluate(&snapshot(vec![busy.clone()])).await;
        assert_eq!(e.active().len(), 1);
        // A cycle without a sample does not end it; a sample below does.
        let mut unknown = busy.clone();
        unknown.usage = None;
        e.evaluate(&snapshot(vec![unknown])).await;
        assert_eq!(e.active().len(), 1);
        e.evaluate(&snapshot(vec![running(&meta, 0)])).await;
        assert!(e.active().is_empty());
    }

    #[tokio::test]
    async fn resolved_domains_are_kept_when_resolution_fails() {
        let docker = fake_docker();
        let hub = EventHub::default();
        let enforcer = Enforcer::new(docker.clone(), hub.clone(), false, ContainerAction::Stop);
        let resolver = StaticResolver(
            [(
                "malicious.com".to_string(),
                vec!["127.0.0.9".parse().unwrap()],
            )]
            .into(),
        );
        let e = PolicyEngine::with_resolver(
            PolicyArgs::default(),
            PathBuf::from("/proc"),
            docker,
            hub,
            enforcer,
            Arc::new(resolver),
        )
        .unwrap();
        e.resolve_once().await;
        let r = e.resolved.read().unwrap().clone();
        assert_eq!(
            r.get(&"127.0.0.9".parse::<IpAddr>().unwrap())
                .map(String::as_str),
            Some("malicious.com")
        );
        assert_eq!(r.len(), 1, "suspicious.net has no address in the table");
    }

    #[tokio::test]
    async fn evaluating_an_unchanged_host_is_cheap() {
        let (e, docker, _) = engine(config::DEFAULT_POLICY);
        let metas: Vec<Arc<ContainerMeta>> = (0..300)
            .map(|i| {
                let mut m = fixture_meta("inspect-policy-plain.json");
                m.id = format!("{i:064x}");
                m.name = format!("c{i}");
                Arc::new(m)
            })
            .collect();
        let snap = snapshot(metas.iter().map(|m| running(m, 1 << 20)).collect());
        e.evaluate(&snap).await;
        assert_eq!(docker.calls("top"), 300);
        let start = Instant::now();
        for _ in 0..20 {
            e.evaluate(&snap).await;
        }
        let each = start.elapsed() / 20;
        eprintln!("evaluation of 300 unchanged containers: {each:?}");
        assert_eq!(docker.calls("top"), 300, "process listings are cached");
        // 300 containers x (2 processes, 1 published and 1 exposed port), every one still open.
        assert_eq!(e.active().len(), 300 * 4);
        assert!(each < Duration::from_millis(100), "{each:?}");
    }
}
