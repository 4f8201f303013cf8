//! dockwatch: a Docker-host exporter for Prometheus.
//!
//! A background loop ([`collector`]) reads the Docker Engine and the host every interval into a
//! [`model::Snapshot`]; [`metrics`] encodes the latest snapshot on `/metrics` ([`http`]).

pub mod anomaly;
pub mod app;
pub mod cli;
pub mod collector;
pub mod docker;
pub mod enforce;
pub mod events;
pub mod http;
pub mod metrics;
pub mod model;
pub mod policy;
