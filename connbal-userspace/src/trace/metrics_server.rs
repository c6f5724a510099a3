//! The `--metrics` HTTP endpoint: transport only. A scrape asks the trace
//! loop, which owns the aggregator, for the current text (a
//! `sinks::Scrape`, rendered by `output::openmetrics`), so nothing is kept
//! up to date per packet.

use super::sinks::{Due, Scrape};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scraper that cannot send its request line in this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves `GET /metrics` (and `/`) on `listener` until the process ends.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Due>, max_series: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let scrapes = scrapes.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(respond(request, scrapes, max_series).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    scrapes: mpsc::Sender<Due>,
    max_series: usize,
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
    if !matches!(request.uri().path(), "/metrics" | "/") {
        return plain(StatusCode::NOT_FOUND, "see /metrics\n");
    }
    let (reply, text) = oneshot::channel();
    if scrapes
        .send(Box::new(Scrape { reply, max_series }))
        .await
        .is_err()
    {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "connbal is stopping\n");
    }
    match text.await {
        Ok(text) => Response::builder()
            .header("content-type", CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .expect("a text response is valid"),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "connbal is stopping\n"),
    }
}
