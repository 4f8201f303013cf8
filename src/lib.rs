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

/// An error followed by its sources, joined with `: ` (`stats of "db": connection refused`),
/// for log fields and messages that would otherwise show only the outermost step.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("read config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_every_source() {
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(super::error_chain(&e), "read config: permission denied");
        let plain = std::io::Error::other("plain");
        assert_eq!(super::error_chain(&plain), "plain");
    }
}
