//! The HTTP side: `/metrics`, `/healthz`, a landing page, and routes other components add.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::model::Snapshot;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every exported metric.
    pub registry: Arc<Registry>,
    /// The latest snapshot, for `/healthz`.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Path `/metrics` is served on.
    pub telemetry_path: String,
}

/// Builds the router; `extra` carries routes owned by other components (violations, reload,
/// anomaly windows) and is merged in.
pub fn router(state: AppState, extra: Router) -> Router {
    let path = state.telemetry_path.clone();
    let coalescer = Arc::new(Coalescer::default());
    let metrics = move |State(state): State<AppState>, headers: HeaderMap| {
        let coalescer = coalescer.clone();
        async move { metrics(state, headers, &coalescer).await }
    };
    Router::new()
        .route(&path, get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .with_state(state)
        .merge(extra)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
}

async fn metrics(state: AppState, headers: HeaderMap, coalescer: &Coalescer) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if wants_openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    // Prometheus asks for gzip; the body shrinks about tenfold and is compressed once per
    // encoding, however many scrapers share it.
    let wants_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    match coalescer.render(&state.registry, wants_openmetrics).await {
        Ok(rendered) if wants_gzip => match rendered.gzip() {
            Some(body) => (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CONTENT_ENCODING, "gzip"),
                    (header::VARY, "accept-encoding"),
                ],
                body,
            )
                .into_response(),
            None => (
                [(header::CONTENT_TYPE, content_type)],
                rendered.plain.clone(),
            )
                .into_response(),
        },
        Ok(rendered) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::VARY, "accept-encoding"),
            ],
            rendered.plain.clone(),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

/// Whether an `Accept-Encoding` value allows gzip (and does not refuse it with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let coding = params.next().unwrap_or("");
        let refused = params.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// One encoding of the registry, with its gzip form made on first demand.
#[derive(Debug)]
struct Rendered {
    plain: Bytes,
    gzip: std::sync::OnceLock<Option<Bytes>>,
}

impl Rendered {
    /// The body compressed with gzip (fast level), `None` if compression failed.
    fn gzip(&self) -> Option<Bytes> {
        self.gzip
            .get_or_init(|| {
                use std::io::Write;
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.plain.len() / 8),
                    flate2::Compression::fast(),
                );
                enc.write_all(&self.plain).ok()?;
                enc.finish().ok().map(Bytes::from)
            })
            .clone()
    }
}

type Rendering = Shared<BoxFuture<'static, Result<Arc<Rendered>, fmt::Error>>>;

/// Lets concurrent scrapes share one encoding: a scrape that arrives while the registry is
/// being encoded in the same format waits for that result instead of encoding again, so many
/// scrapers at once (HA Prometheus pairs, federation, dashboards) cost one encoding at a time.
/// A shared result is never older than the request by more than one encoding, and everything
/// it encodes is a background snapshot anyway. Encoding runs off the async workers.
#[derive(Debug, Default)]
struct Coalescer {
    text: Mutex<Option<(Instant, Rendering)>>,
    openmetrics: Mutex<Option<(Instant, Rendering)>>,
}

impl Coalescer {
    /// An encoding that started longer ago than this is not joined (its callers all went
    /// away before it finished, so nobody collected and cleared it).
    const JOIN_WINDOW: Duration = Duration::from_secs(1);

    async fn render(
        &self,
        registry: &Arc<Registry>,
        openmetrics: bool,
    ) -> Result<Arc<Rendered>, fmt::Error> {
        let slot = if openmetrics {
            &self.openmetrics
        } else {
            &self.text
        };
        let rendering = {
            let mut slot = slot.lock().expect("render slot lock poisoned");
            match &*slot {
                Some((started, r)) if started.elapsed() < Self::JOIN_WINDOW => r.clone(),
                _ => {
                    let registry = registry.clone();
                    let r = async move {
                        tokio::task::spawn_blocking(move || {
                            let body = if openmetrics {
                                crate::metrics::render_openmetrics(&registry)
                            } else {
                                crate::metrics::render(&registry)
                            };
                            body.map(|b| {
                                Arc::new(Rendered {
                                    plain: Bytes::from(b),
                                    gzip: std::sync::OnceLock::new(),
                                })
                            })
                        })
                        .await
                        .unwrap_or(Err(fmt::Error))
                    }
                    .boxed()
                    .shared();
                    *slot = Some((Instant::now(), r.clone()));
                    r
                }
            }
        };
        let body = rendering.clone().await;
        let mut slot = slot.lock().expect("render slot lock poisoned");
        if slot
            .as_ref()
            .is_some_and(|(_, r)| Shared::ptr_eq(r, &rendering))
        {
            *slot = None;
        }
        body
    }
}

/// 200 once a cycle has completed, whether or not Docker answered: the exporter itself is
/// healthy and `dockwatch_docker_up` tells the rest.
async fn healthz(State(state): State<AppState>) -> Response {
    let done = state.snapshot.borrow().taken_at.is_some();
    if done {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no collection cycle finished yet\n",
        )
            .into_response()
    }
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!doctype html><html><head><title>dockwatch</title></head><body>\
         <h1>dockwatch {}</h1><ul>\
         <li><a href=\"{path}\">metrics</a></li>\
         <li><a href=\"/violations\">violations</a></li>\
         <li><a href=\"/api/v1/windows\">anomaly windows</a></li>\
         <li><a href=\"/healthz\">health</a></li>\
         </ul></body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    use super::*;
    use crate::metrics::{Family, Kind};

    /// Counts encodings and takes a while, like a registry with many containers.
    #[derive(Debug)]
    struct Slow(Arc<AtomicUsize>);

    impl Collector for Slow {
        fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(100));
            Family::new("encodings", "Encodings so far", Kind::Gauge)
                .sample(&[], n as f64)
                .encode(&mut enc)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_encoding_and_later_ones_are_fresh() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Slow(count.clone())));
        let registry = Arc::new(registry);
        let coalescer = Arc::new(Coalescer::default());

        let scrapes: Vec<_> = (0..20)
            .map(|_| {
                let (c, r) = (coalescer.clone(), registry.clone());
                tokio::spawn(async move { c.render(&r, false).await.unwrap() })
            })
            .collect();
        let mut bodies = Vec::new();
        for s in scrapes {
            bodies.push(s.await.unwrap());
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one encoding for 20 concurrent scrapes"
        );
        assert!(bodies.iter().all(|b| b.plain == bodies[0].plain));
        assert!(String::from_utf8_lossy(&bodies[0].plain).contains("encodings 1.0\n"));

        // The gzip form is made once and decodes to the same text.
        let gz = bodies[0].gzip().unwrap();
        assert!(Arc::ptr_eq(&bodies[0], &bodies[1]));
        assert_eq!(bodies[1].gzip().unwrap(), gz);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        assert_eq!(text.as_bytes(), &bodies[0].plain[..]);

        // A scrape after the encoding finished gets a new one, in either format.
        let next = coalescer.render(&registry, false).await.unwrap();
        assert!(String::from_utf8_lossy(&next.plain).contains("encodings 2.0\n"));
        let om = coalescer.render(&registry, true).await.unwrap();
        assert!(String::from_utf8_lossy(&om.plain).ends_with("# EOF\n"));
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }
}
