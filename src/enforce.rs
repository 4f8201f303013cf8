//! Quarantine: what happens to a container with a CRITICAL violation of an `enforce` policy.
//!
//! Nothing is done unless dockwatch runs with `--enforce`, and never for a `dry-run` policy;
//! then the action it would have taken is logged and published as a `dry_run` enforcement
//! event. Each violation episode leads to at most one attempt, and dockwatch's own container
//! and containers matching `--enforce.exclude` are never touched (`excluded`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::docker::{ContainerAction, DockerApi};
use crate::error_chain;
use crate::events::{EpisodeKey, EventHub, EventKind, Mode, Severity, ViolationEvent};
use crate::model::ContainerMeta;

/// Quarantine flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Quarantine")]
pub struct EnforceArgs {
    /// Act on CRITICAL violations of `enforce` policies. Without it, actions are only logged
    /// and published as dry-run events.
    #[arg(id = "enforce", long = "enforce")]
    pub enabled: bool,

    /// What quarantine does: stop, pause or disconnect (from every network).
    #[arg(id = "enforce.action", long = "enforce.action", value_name = "ACTION", default_value = "stop", value_parser = parse_action)]
    pub action: ContainerAction,

    /// Container names never acted on, as globs (comma-separated or repeated), e.g.
    /// `traefik,db-*`. dockwatch's own container is always excluded.
    #[arg(
        id = "enforce.exclude",
        long = "enforce.exclude",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    pub exclude: Vec<String>,
}

impl Default for EnforceArgs {
    fn default() -> Self {
        Self {
            enabled: false,
            action: ContainerAction::Stop,
            exclude: Vec::new(),
        }
    }
}

/// Parses `stop`, `pause` or `disconnect`.
pub fn parse_action(s: &str) -> Result<ContainerAction, String> {
    match s {
        "stop" => Ok(ContainerAction::Stop),
        "pause" => Ok(ContainerAction::Pause),
        "disconnect" => Ok(ContainerAction::Disconnect),
        _ => Err(format!(
            "invalid action {s:?}: expected stop, pause or disconnect"
        )),
    }
}

/// The action's name in events and labels.
pub fn action_name(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Stop => "stop",
        ContainerAction::Pause => "pause",
        ContainerAction::Disconnect => "disconnect",
    }
}

fn action_done(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Stop => "stopped",
        ContainerAction::Pause => "paused",
        ContainerAction::Disconnect => "disconnected from every network",
    }
}

/// Errors building an [`Enforcer`] from flags.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// An `--enforce.exclude` pattern is not a valid glob.
    #[error("invalid --enforce.exclude glob {glob:?}")]
    Glob {
        /// The pattern.
        glob: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
}

/// Past this many remembered episodes, those no longer open are forgotten.
const REMEMBERED: usize = 1024;

/// Carries out (or only reports) quarantine actions.
#[derive(Debug, Clone)]
pub struct Enforcer {
    docker: Arc<dyn DockerApi>,
    hub: EventHub,
    enabled: bool,
    action: ContainerAction,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
    /// Ids (or 12-character prefixes) of the container dockwatch itself runs in.
    own_ids: Vec<String>,
    /// Episodes already handled, with the start time that identifies the episode.
    handled: Arc<Mutex<HashMap<EpisodeKey, f64>>>,
    /// Containers acted on and the episode that caused it: while that episode is open, other
    /// violations of the same container do not act again.
    acted: Arc<Mutex<HashMap<String, EpisodeKey>>>,
}

impl Enforcer {
    /// `enabled` is the `--enforce` flag; `action` what quarantine means. dockwatch's own
    /// container is found from `/proc/self` and the hostname.
    pub fn new(
        docker: Arc<dyn DockerApi>,
        hub: EventHub,
        enabled: bool,
        action: ContainerAction,
    ) -> Self {
        Self {
            docker,
            hub,
            enabled,
            action,
            exclude: GlobSet::empty(),
            exclude_patterns: Vec::new(),
            own_ids: own_container_ids(
                Path::new("/proc/self"),
                Path::new("/proc/sys/kernel/hostname"),
            ),
            handled: Arc::new(Mutex::new(HashMap::new())),
            acted: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// An enforcer configured by the `--enforce*` flags.
    pub fn from_args(
        docker: Arc<dyn DockerApi>,
        hub: EventHub,
        args: &EnforceArgs,
    ) -> Result<Self, EnforceError> {
        let enforcer =
            Self::new(docker, hub, args.enabled, args.action).with_exclude(&args.exclude)?;
        let action = action_name(args.action);
        if args.enabled {
            tracing::info!(action, exclude = ?args.exclude, own_ids = ?enforcer.own_ids, "quarantine enabled");
        } else {
            tracing::debug!(action, own_ids = ?enforcer.own_ids, "quarantine disabled; actions are reported as dry runs");
        }
        Ok(enforcer)
    }

    /// Never acts on containers whose name matches one of `globs`.
    pub fn with_exclude(mut self, globs: &[String]) -> Result<Self, EnforceError> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let parsed = Glob::new(glob).map_err(|source| EnforceError::Glob {
                glob: glob.clone(),
                source,
            })?;
            set.add(parsed);
        }
        self.exclude = set.build().map_err(|source| EnforceError::Glob {
            glob: globs.join(","),
            source,
        })?;
        self.exclude_patterns = globs.to_vec();
        Ok(self)
    }

    /// Replaces the detected ids of dockwatch's own container.
    pub fn with_own_ids(mut self, ids: Vec<String>) -> Self {
        self.own_ids = ids;
        self
    }

    /// Whether `--enforce` is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Ids (full or 12-character prefixes) taken for dockwatch's own container.
    pub fn own_ids(&self) -> &[String] {
        &self.own_ids
    }

    /// Quarantines `meta` for `violation` (a CRITICAL violation of an `enforce` policy), or
    /// reports what would have been done. Publishes exactly one enforcement event per episode;
    /// later calls for the same episode do nothing.
    pub async fn quarantine(&self, meta: &ContainerMeta, violation: &ViolationEvent) {
        if violation.severity != Severity::Critical || violation.kind == EventKind::Enforcement {
            tracing::debug!(container = %meta.name, severity = violation.severity.as_str(), kind = violation.kind.as_str(), "not a critical violation; no quarantine");
            return;
        }
        if !self.claim(violation) {
            tracing::debug!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, "episode already handled");
            return;
        }
        let action = action_name(self.action);
        if let Some(reason) = self.excluded(meta) {
            tracing::warn!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, action, reason, "quarantine skipped for an excluded container");
            let message = format!("{action} of container {} skipped: {reason}", meta.name);
            self.publish(violation, "excluded", message);
            return;
        }
        if !self.enabled || violation.mode == Mode::DryRun {
            let why = if self.enabled {
                "the policy is dry-run"
            } else {
                "--enforce is off"
            };
            tracing::warn!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, action, reason = why, "quarantine dry run: container left alone");
            let message = format!(
                "would have {} container {} ({why}): {}",
                action_done(self.action),
                meta.name,
                violation.message
            );
            self.publish(violation, "dry_run", message);
            return;
        }
        let key = violation.episode_key();
        {
            let mut acted = self.acted.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(earlier) = acted.get(&meta.id)
                && *earlier != key
                && self.hub.open_episode(earlier).is_some()
            {
                tracing::debug!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, earlier_rule = %earlier.rule, "container already quarantined for another open violation");
                return;
            }
            acted.insert(meta.id.clone(), key.clone());
        }
        match self.docker.act(&meta.id, self.action).await {
            Ok(()) => {
                tracing::warn!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, action, "container quarantined");
                let message = format!(
                    "{} container {}: {}",
                    action_done(self.action),
                    meta.name,
                    violation.message
                );
                self.publish(violation, "success", message);
            }
            Err(e) => {
                let mut acted = self.acted.lock().unwrap_or_else(PoisonError::into_inner);
                if acted.get(&meta.id) == Some(&key) {
                    acted.remove(&meta.id);
                }
                drop(acted);
                let error = error_chain(&e);
                tracing::error!(container = %meta.name, policy = %violation.policy, rule = %violation.rule, action, error = %error, "quarantine failed");
                let message = format!("{action} of container {} failed: {error}", meta.name);
                self.publish(violation, "failure", message);
            }
        }
    }

    /// Records that the episode of `violation` is being handled; false when it already was.
    ///
    /// An episode is identified by its key and start time: the start event the hub holds
    /// while the episode is open, else the violation's own time.
    fn claim(&self, violation: &ViolationEvent) -> bool {
        let key = violation.episode_key();
        let started = self
            .hub
            .open_episode(&key)
            .map_or(violation.timestamp, |e| e.timestamp);
        let mut handled = self.handled.lock().unwrap_or_else(PoisonError::into_inner);
        if handled.get(&key) == Some(&started) {
            return false;
        }
        if handled.len() >= REMEMBERED {
            handled.retain(|k, _| self.hub.open_episode(k).is_some());
        }
        handled.insert(key, started);
        true
    }

    fn excluded(&self, meta: &ContainerMeta) -> Option<String> {
        if let Some(own) = self
            .own_ids
            .iter()
            .find(|id| meta.id.starts_with(id.as_str()))
        {
            return Some(format!("it is dockwatch's own container ({own})"));
        }
        let matched = self.exclude.matches(&meta.name);
        matched.first().map(|&i| {
            format!(
                "its name matches --enforce.exclude {:?}",
                self.exclude_patterns[i]
            )
        })
    }

    fn publish(&self, violation: &ViolationEvent, result: &str, message: String) {
        let (time, timestamp) = crate::events::timestamp_now();
        self.hub.publish(ViolationEvent {
            time,
            timestamp,
            kind: EventKind::Enforcement,
            message,
            action: Some(action_name(self.action).to_string()),
            result: Some(result.to_string()),
            duration_seconds: None,
            ..violation.clone()
        });
    }
}

/// Ids of the container this process runs in, from the cgroup paths (`/docker/<id>`,
/// `docker-<id>.scope`), the files Docker bind-mounts into every container
/// (`/var/lib/docker/containers/<id>/hostname` on `/etc/hostname`), and the hostname when it
/// looks like Docker's default 12-hex-digit one. Empty outside a container.
pub fn own_container_ids(proc_self: &Path, hostname: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    let mut add = |id: &str| {
        if !ids.iter().any(|known: &String| known == id) {
            ids.push(id.to_string());
        }
    };
    if let Ok(text) = std::fs::read_to_string(proc_self.join("cgroup")) {
        for line in text.lines().filter(|l| l.contains("docker")) {
            hex_ids(line).for_each(&mut add);
        }
    }
    // Only the container's own bind mounts: on the host, the mount table lists every running
    // container's shm and overlay mounts, which must not count.
    if let Ok(text) = std::fs::read_to_string(proc_self.join("mountinfo")) {
        for line in text.lines() {
            let mut fields = line.split_whitespace().skip(3);
            let (Some(root), Some(mount_point)) = (fields.next(), fields.next()) else {
                continue;
            };
            if matches!(
                mount_point,
                "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
            ) && root.contains("/containers/")
            {
                hex_ids(root).for_each(&mut add);
            }
        }
    }
    if let Ok(name) = std::fs::read_to_string(hostname) {
        let name = name.trim();
        if name.len() == 12
            && name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            add(name);
        }
    }
    ids
}

/// The 64-hex-digit words of `text`.
fn hex_ids(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;
    use crate::events::tests::{event, render};

    fn meta(e: &ViolationEvent) -> ContainerMeta {
        ContainerMeta {
            image: e.image.clone(),
            image_id: String::new(),
            ..ContainerMeta::for_tests(&e.container_id, &e.container)
        }
    }

    fn setup(enabled: bool, fail: bool) -> (Arc<FakeDocker>, EventHub, Enforcer) {
        let docker = Arc::new(FakeDocker::default().with_failing_acts(fail));
        let hub = EventHub::default();
        let enforcer = Enforcer::new(docker.clone(), hub.clone(), enabled, ContainerAction::Pause)
            .with_own_ids(Vec::new());
        (docker, hub, enforcer)
    }

    fn enforcement_events(hub: &EventHub) -> Vec<Arc<ViolationEvent>> {
        hub.recent_events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Enforcement)
            .collect()
    }

    #[tokio::test]
    async fn without_enforce_only_reports() {
        let (docker, hub, enforcer) = setup(false, false);
        let v = event(EventKind::ViolationStarted, "web", 10.0);
        hub.publish(v.clone());
        enforcer.quarantine(&meta(&v), &v).await;

        assert_eq!(docker.calls("act"), 0);
        let events = enforcement_events(&hub);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.result.as_deref(), Some("dry_run"));
        assert_eq!(e.action.as_deref(), Some("pause"));
        assert_eq!(e.container, "web");
        assert_eq!(e.policy, "prod");
        assert_eq!(e.subject, "xmrig");
        assert_eq!(
            e.message,
            "would have paused container web (--enforce is off): process xmrig runs in web"
        );
        assert!(render(&hub).contains(
            "dockwatch_enforcement_actions_total{action=\"pause\",result=\"dry_run\"} 1.0\n"
        ));
    }

    #[tokio::test]
    async fn dry_run_policy_is_never_acted_on() {
        let (docker, hub, enforcer) = setup(true, false);
        let v = ViolationEvent {
            mode: Mode::DryRun,
            ..event(EventKind::ViolationStarted, "web", 10.0)
        };
        enforcer.quarantine(&meta(&v), &v).await;
        assert_eq!(docker.calls("act"), 0);
        let events = enforcement_events(&hub);
        assert_eq!(events[0].result.as_deref(), Some("dry_run"));
        assert!(
            events[0].message.contains("(the policy is dry-run)"),
            "{}",
            events[0].message
        );
        assert_eq!(events[0].mode, Mode::DryRun);
    }

    #[tokio::test]
    async fn acts_once_per_episode() {
        let (docker, hub, enforcer) = setup(true, false);
        let v = event(EventKind::ViolationStarted, "web", 10.0);
        hub.publish(v.clone());
        enforcer.quarantine(&meta(&v), &v).await;
        // The same episode again, also as seen by a later cycle with a newer time.
        enforcer.quarantine(&meta(&v), &v).await;
        let later = ViolationEvent {
            timestamp: 25.0,
            ..v.clone()
        };
        enforcer.quarantine(&meta(&v), &later).await;

        assert_eq!(
            *docker.acts.lock().unwrap(),
            vec![(v.container_id.clone(), ContainerAction::Pause)]
        );
        let events = enforcement_events(&hub);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].result.as_deref(), Some("success"));
        assert_eq!(
            events[0].message,
            "paused container web: process xmrig runs in web"
        );
        assert!(render(&hub).contains(
            "dockwatch_enforcement_actions_total{action=\"pause\",result=\"success\"} 1.0\n"
        ));

        // After the episode ends, a new one is acted on again.
        hub.publish(event(EventKind::ViolationEnded, "web", 30.0));
        let again = event(EventKind::ViolationStarted, "web", 40.0);
        hub.publish(again.clone());
        enforcer.quarantine(&meta(&again), &again).await;
        assert_eq!(docker.acts.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn one_action_per_container_while_its_first_episode_is_open() {
        let (docker, hub, enforcer) = setup(true, false);
        let mount = ViolationEvent {
            subject: "mount".into(),
            ..event(EventKind::ViolationStarted, "web", 10.0)
        };
        let ptrace = ViolationEvent {
            subject: "ptrace".into(),
            ..event(EventKind::ViolationStarted, "web", 10.0)
        };
        hub.publish(mount.clone());
        hub.publish(ptrace.clone());
        enforcer.quarantine(&meta(&mount), &mount).await;
        enforcer.quarantine(&meta(&ptrace), &ptrace).await;
        assert_eq!(docker.acts.lock().unwrap().len(), 1);
        assert_eq!(enforcement_events(&hub).len(), 1);

        // Once the episode that caused the action is over, another one acts again.
        hub.publish(ViolationEvent {
            kind: EventKind::ViolationEnded,
            ..mount.clone()
        });
        let again = ViolationEvent {
            subject: "umount".into(),
            ..event(EventKind::ViolationStarted, "web", 20.0)
        };
        hub.publish(again.clone());
        enforcer.quarantine(&meta(&again), &again).await;
        assert_eq!(docker.acts.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn failure_is_published_with_the_error() {
        let (docker, hub, enforcer) = setup(true, true);
        let v = event(EventKind::ViolationStarted, "web", 10.0);
        enforcer.quarantine(&meta(&v), &v).await;
        enforcer.quarantine(&meta(&v), &v).await;
        assert_eq!(docker.calls("act"), 1, "no retry within the episode");
        let events = enforcement_events(&hub);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].result.as_deref(), Some("failure"));
        let id = &v.container_id;
        assert_eq!(
            events[0].message,
            format!(
                "pause of container web failed: conflict on container {id}: container is not running"
            )
        );
        assert!(render(&hub).contains(
            "dockwatch_enforcement_actions_total{action=\"pause\",result=\"failure\"} 1.0\n"
        ));
    }

    #[tokio::test]
    async fn never_acts_on_itself_or_excluded_names() {
        let (docker, hub, enforcer) = setup(true, false);
        let own = event(EventKind::ViolationStarted, "dockwatch", 10.0);
        let enforcer = enforcer
            .with_own_ids(vec![own.container_id[..12].to_string()])
            .with_exclude(&["db-*".to_string()])
            .unwrap();
        enforcer.quarantine(&meta(&own), &own).await;
        let db = event(EventKind::ViolationStarted, "db-primary", 10.0);
        enforcer.quarantine(&meta(&db), &db).await;
        let web = event(EventKind::ViolationStarted, "web", 10.0);
        enforcer.quarantine(&meta(&web), &web).await;

        assert_eq!(
            *docker.acts.lock().unwrap(),
            vec![(web.container_id.clone(), ContainerAction::Pause)]
        );
        let results: Vec<(String, String)> = enforcement_events(&hub)
            .iter()
            .map(|e| (e.container.clone(), e.result.clone().unwrap()))
            .collect();
        assert_eq!(
            results,
            vec![
                ("dockwatch".into(), "excluded".into()),
                ("db-primary".into(), "excluded".into()),
                ("web".into(), "success".into()),
            ]
        );
        let events = enforcement_events(&hub);
        assert_eq!(
            events[1].message,
            "pause of container db-primary skipped: its name matches --enforce.exclude \"db-*\""
        );
    }

    #[tokio::test]
    async fn ignores_non_critical_violations() {
        let (docker, hub, enforcer) = setup(true, false);
        let v = ViolationEvent {
            severity: Severity::High,
            ..event(EventKind::ViolationStarted, "web", 10.0)
        };
        enforcer.quarantine(&meta(&v), &v).await;
        assert_eq!(docker.calls("act"), 0);
        assert!(enforcement_events(&hub).is_empty());
    }

    #[test]
    fn finds_own_container_id() {
        let id = "3f4e8b2a9c1d".repeat(6)[..64].to_string();
        let dir = std::env::temp_dir().join(format!("dockwatch-self-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            format!("12:memory:/docker/{id}\n11:cpu,cpuacct:/docker/{id}\n1:name=systemd:/\n"),
        )
        .unwrap();
        std::fs::write(dir.join("hostname"), "web-1\n").unwrap();
        assert_eq!(
            own_container_ids(&dir, &dir.join("hostname")),
            vec![id.clone()]
        );

        // cgroup v2 with a private namespace shows only "/": the mount table still tells.
        std::fs::write(dir.join("cgroup"), "0::/\n").unwrap();
        std::fs::write(
            dir.join("mountinfo"),
            format!("612 590 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n"),
        )
        .unwrap();
        std::fs::write(dir.join("hostname"), "3f4e8b2a9c1d\n").unwrap();
        assert_eq!(
            own_container_ids(&dir, &dir.join("hostname")),
            vec![id, "3f4e8b2a9c1d".to_string()]
        );

        // On the host, other containers' mounts are in the table but not on /etc/hostname.
        let other = "9a8b7c6d5e4f".repeat(6)[..64].to_string();
        std::fs::write(
            dir.join("mountinfo"),
            format!(
                "25 1 254:1 / / rw - ext4 /dev/vda1 rw\n\
                 700 25 0:55 / /var/lib/docker/containers/{other}/mounts/shm rw - tmpfs shm rw\n\
                 701 25 0:56 / /var/lib/docker/overlay2/{other}/merged rw - overlay overlay rw\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("hostname"), "buildhost\n").unwrap();
        assert!(own_container_ids(&dir, &dir.join("hostname")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_actions_and_rejects_bad_globs() {
        assert_eq!(parse_action("disconnect"), Ok(ContainerAction::Disconnect));
        assert_eq!(
            parse_action("kill").unwrap_err(),
            "invalid action \"kill\": expected stop, pause or disconnect"
        );
        let (_, _, enforcer) = setup(true, false);
        let err = enforcer.with_exclude(&["web-[".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "invalid --enforce.exclude glob \"web-[\"");
    }
}
