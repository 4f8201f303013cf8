//! Wires the parts together and runs until SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::RunArgs;
use crate::collector::host::HostCollector;
use crate::collector::{Collector, CollectorConfig};
use crate::docker::{BollardDocker, DockerApi};
use crate::http::{AppState, router};
use crate::metrics::SnapshotCollector;

/// Runs the exporter with `args` until a termination signal arrives.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), "starting dockwatch");
    let shutdown = CancellationToken::new();

    let docker: Arc<dyn DockerApi> = Arc::new(
        BollardDocker::new(&args.docker_host, args.docker_timeout)
            .with_context(|| format!("connecting to docker at {}", args.docker_host))?,
    );
    let host = if args.host {
        Some(HostCollector::new(args.procfs.clone()).context("starting the host collector")?)
    } else {
        None
    };
    let collector = Collector::new(
        docker,
        host,
        None,
        CollectorConfig {
            interval: args.interval,
            concurrency: args.concurrency,
            host: args.host,
        },
    );

    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector::new(
        collector.subscribe(),
        collector.self_stats(),
        args.container_labels.clone(),
    )));
    let extra = Router::new();

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
    Ok(())
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
