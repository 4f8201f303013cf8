//! Wires the parts together and runs until SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::anomaly::Anomaly;
use crate::cli::RunArgs;
use crate::collector::host::HostCollector;
use crate::collector::{Collector, CollectorConfig};
use crate::docker::{BollardDocker, DockerApi};
use crate::enforce::Enforcer;
use crate::events::EventHub;
use crate::http::{AppState, router};
use crate::metrics::SnapshotCollector;
use crate::policy::{PolicyCollector, PolicyEngine};

/// Runs the exporter with `args` until a termination signal arrives.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), "starting dockwatch");
    let shutdown = CancellationToken::new();

    let hub = EventHub::new(&args.events).context("starting the event sinks")?;
    let docker: Arc<dyn DockerApi> = Arc::new(
        BollardDocker::new(&args.docker_host, args.docker_timeout)
            .with_context(|| format!("connecting to docker at {}", args.docker_host))?,
    );
    let host = if args.host {
        Some(
            HostCollector::new(args.procfs.clone(), args.rootfs.clone())
                .context("starting the host collector")?,
        )
    } else {
        None
    };
    if args.enforce.enabled && args.policy.file.is_none() {
        warn!(
            "--enforce with the built-in example policy: CRITICAL violations of any container \
             on this host (reachable mount/ptrace) will be acted on; write a policy file with \
             selectors before enforcing"
        );
    }
    // Handed to the policy engine, which calls it for CRITICAL violations.
    let enforcer = Enforcer::from_args(docker.clone(), hub.clone(), &args.enforce)
        .context("configuring quarantine")?;
    let fast_path =
        crate::collector::cgroup::fast_path(args.cgroup, &args.cgroup_root, &args.procfs)
            .context("starting the cgroup reader")?;
    let collector = Collector::new(
        docker.clone(),
        host,
        fast_path,
        CollectorConfig {
            interval: args.interval,
            concurrency: args.concurrency,
        },
    );

    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector::new(
        collector.subscribe(),
        collector.self_stats(),
        args.container_labels.clone(),
    )));
    registry.register_collector(Box::new(hub.clone()));
    let mut extra = Router::new().merge(hub.routes());

    // Security policies: evaluate every snapshot, publish violation events, reload on
    // SIGHUP, file change and POST /-/reload.
    let policy = PolicyEngine::new(
        args.policy.clone(),
        args.procfs.clone(),
        docker.clone(),
        hub.clone(),
        enforcer,
    )
    .context("loading the security policy")?;
    registry.register_collector(Box::new(PolicyCollector::new(policy.clone())));
    extra = extra.merge(policy.routes());
    let policy_task = tokio::spawn(policy.clone().run(collector.subscribe(), shutdown.clone()));
    tokio::spawn(reload_on_sighup(policy.clone(), shutdown.clone()));

    // Anomaly scoring: rolling windows over scheduled snapshots, GET /api/v1/windows.
    let anomaly = Anomaly::new(
        args.anomaly
            .config(args.interval)
            .context("checking the anomaly flags")?,
    );
    registry.register_collector(Box::new(anomaly.collector()));
    extra = extra.merge(anomaly.routes());

    let state = AppState {
        registry: Arc::new(registry),
        snapshot: collector.subscribe(),
        telemetry_path: args.telemetry_path.clone(),
    };
    let app = router(state, extra);
    let listener = tokio::net::TcpListener::bind(&args.listen_address)
        .await
        .with_context(|| format!("listening on {}", args.listen_address))?;
    info!(address = %listener.local_addr()?, path = %args.telemetry_path, "serving metrics");

    tokio::spawn(anomaly.run(collector.subscribe(), shutdown.clone()));
    let collection = tokio::spawn(collector.clone().run(shutdown.clone()));
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_termination().await;
        info!("shutting down");
        signals.cancel();
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving http")?;
    shutdown.cancel();
    let _ = collection.await;
    let _ = policy_task.await;
    hub.close(std::time::Duration::from_secs(5)).await;
    Ok(())
}

async fn reload_on_sighup(policy: Arc<PolicyEngine>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("installing the SIGHUP handler failed; reload with POST /-/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hup.recv() => { let _ = policy.reload("SIGHUP"); }
        }
    }
}

async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
