//! The `--metrics` HTTP endpoint: transport only. A scrape asks the trace
//! loop, which owns the aggregator, for the current text (a
//! `sinks::Scrape`, rendered by `output::openmetrics`), so nothing is kept
//! up to date per packet.
//!
//! Bounded whatever the scrapers do: scrapes within `FRESH_FOR` of a
//! rendering share it (one report per second at most, however many
//! scrapers, and one buffer that every response refers to, so a slow
//! reader holds no copy of its own); at most `MAX_CONNECTIONS` at once
//! (more are closed as they come); and a connection lives at most
//! `CONNECTION_LIFETIME`, so one that never reads lets go of its buffer.

use super::sinks::{Due, Scrape};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scraper that cannot send its request line in this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes this close to a rendering are answered with it.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Connections served at once: many more than scrapers (Prometheus keeps
/// one per target), and few enough for the descriptors connbal has.
const MAX_CONNECTIONS: usize = 512;
/// A connection, keep-alive and all, is closed after this long; scrapers
/// reconnect.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// What every connection of the endpoint shares.
struct Endpoint {
    scrapes: mpsc::Sender<Due>,
    max_series: usize,
    /// The last rendering and when it was made.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Bytes)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding the metrics endpoint to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` (and `/`), `/healthz` and `/readyz` on
/// `listener` until the process ends.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Due>, max_series: usize) {
    let endpoint = Arc::new(Endpoint {
        scrapes,
        max_series,
        last: tokio::sync::Mutex::new(None),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Full: this one is closed at once (dropped), the others go on.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(request, &endpoint).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    endpoint: &Endpoint,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .expect("a static response is valid")
    };
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" | "/" => {}
        // Liveness: the endpoint answers.
        "/healthz" => return plain(StatusCode::OK, "ok\n"),
        // Readiness: the programs are attached (the endpoint starts after
        // that) and the trace loop still takes requests.
        "/readyz" if endpoint.scrapes.is_closed() => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "connbal is stopping\n")
        }
        "/readyz" => return plain(StatusCode::OK, "ready\n"),
        _ => return plain(StatusCode::NOT_FOUND, "see /metrics, /healthz, /readyz\n"),
    }
    match exposition(endpoint).await {
        Some(text) => Response::builder()
            .header("content-type", CONTENT_TYPE)
            .body(Full::new(text))
            .expect("a text response is valid"),
        None => plain(StatusCode::SERVICE_UNAVAILABLE, "connbal is stopping\n"),
    }
}

/// The current text: the last rendering while it is fresh, or a new one
/// from the trace loop. Scrapes that come while one is being made wait for
/// it and share it. `None` once the loop is gone.
async fn exposition(endpoint: &Endpoint) -> Option<Bytes> {
    let mut last = endpoint.last.lock().await;
    if let Some((made, text)) = last.as_ref() {
        if made.elapsed() < FRESH_FOR {
            return Some(text.clone());
        }
    }
    let (reply, text) = oneshot::channel();
    let scrape = Scrape {
        reply,
        max_series: endpoint.max_series,
    };
    endpoint.scrapes.send(Box::new(scrape)).await.ok()?;
    let text = Bytes::from(text.await.ok()?);
    *last = Some((tokio::time::Instant::now(), text.clone()));
    Some(text)
}
