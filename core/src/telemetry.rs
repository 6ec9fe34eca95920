//! Logging setup and the HTTP endpoint every Sluice process serves:
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (the process can do its job, e.g. the worker reaches PostgreSQL).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use thiserror::Error;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid log filter {filter:?}: {message}")]
    LogFilter { filter: String, message: String },
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// [`init_logging`] from the raw `--log-format` and `--log-level` flag values; the error
/// names the flag to fix.
pub fn init_logging_from_flags(format: &str, level: &str) -> Result<(), String> {
    let format = format
        .parse::<LogFormat>()
        .map_err(|e| format!("--log-format: {e}"))?;
    init_logging(format, level).map_err(|e| e.to_string())
}

/// Installs the global tracing subscriber writing to stderr.
///
/// `level` is an `EnvFilter` directive such as `info` or `sluice_worker=debug,info`;
/// `RUST_LOG`, when set, wins so operators can turn up one module without a redeploy.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), TelemetryError> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = EnvFilter::try_new(&directive).map_err(|e| TelemetryError::LogFilter {
        filter: directive.clone(),
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)
}

/// Liveness and readiness flags, flipped by the component and read by the HTTP server.
#[derive(Debug)]
pub struct Health {
    live: AtomicBool,
    ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            live: AtomicBool::new(true),
            ready: AtomicBool::new(false),
        }
    }
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

/// How long a client may take to send a request's headers (also the longest an idle
/// keep-alive connection stays open): a scraper sends them at once.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most connections served at once; more are closed on accept, so slow or idle clients
/// cannot pile up (Prometheus and the operator need one or two each).
pub const MAX_CONNECTIONS: usize = 32;

/// A bound metrics/health server, ready to [`serve`](TelemetryServer::serve).
pub struct TelemetryServer {
    listener: TcpListener,
    registry: Registry,
    health: Arc<Health>,
    header_read_timeout: std::time::Duration,
    max_connections: usize,
}

impl TelemetryServer {
    /// Binds the listening socket now, so a port conflict is reported at start-up.
    pub async fn bind(
        addr: SocketAddr,
        registry: Registry,
        health: Arc<Health>,
    ) -> Result<TelemetryServer, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        Ok(TelemetryServer {
            listener,
            registry,
            health,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        })
    }

    /// Other limits than [`HEADER_READ_TIMEOUT`] and [`MAX_CONNECTIONS`] (tests).
    pub fn with_limits(
        mut self,
        header_read_timeout: std::time::Duration,
        max_connections: usize,
    ) -> Self {
        self.header_read_timeout = header_read_timeout;
        self.max_connections = max_connections.max(1);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes. Connection errors are logged, never fatal.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let TelemetryServer {
            listener,
            registry,
            health,
            header_read_timeout,
            max_connections,
        } = self;
        let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(
                    max_connections,
                    "metrics server: connection limit reached; closing a new connection"
                );
                drop(stream);
                continue;
            };
            let registry = registry.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |req| {
                    let response = route(&req, &registry, &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics server: connection ended with error");
                }
            });
        }
    }
}

fn route(req: &Request<Incoming>, registry: &Registry, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => metrics_response(registry),
        "/healthz" | "/livez" => flag_response(health.is_live(), "alive\n", "not alive\n"),
        "/readyz" => flag_response(health.is_ready(), "ready\n", "not ready\n"),
        "/" => text(
            StatusCode::OK,
            "sluice: see /metrics, /healthz and /readyz\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn flag_response(ok: bool, yes: &'static str, no: &'static str) -> Response<Full<Bytes>> {
    if ok {
        text(StatusCode::OK, yes)
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, no)
    }
}

fn metrics_response(registry: &Registry) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode metrics: {e}\n"),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(buf)));
    if let Ok(v) = encoder.format_type().parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

/// A stop flag that turns true on SIGTERM or SIGINT, for all of a binary's tasks.
pub fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Binds `/metrics`, `/healthz` and `/readyz` on `addr` (none: no server) and serves
/// them on a task until `stop` turns true.
pub async fn spawn_server(
    addr: Option<SocketAddr>,
    registry: Registry,
    health: Arc<Health>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, TelemetryError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let server = TelemetryServer::bind(addr, registry, health).await?;
    tracing::info!(addr = %addr, "serving /metrics, /healthz, /readyz");
    Ok(Some(tokio::spawn(server.serve(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    }))))
}

/// Completes on SIGTERM or SIGINT (Ctrl-C), whichever comes first.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("sluice_test_total", "test").expect("metric");
        registry
            .register(Box::new(counter.clone()))
            .expect("register");
        counter.inc_by(3);
        let health = Health::new();
        let server = TelemetryServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            registry,
            health.clone(),
        )
        .await
        .expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stop_rx.await;
        }));

        assert!(get(addr, "/metrics").await.contains("sluice_test_total 3"));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        let _ = stop_tx.send(());
        task.await.expect("server task");
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(s: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_and_connections_are_capped() {
        let server = TelemetryServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Registry::new(),
            Health::new(),
        )
        .await
        .expect("bind")
        .with_limits(std::time::Duration::from_millis(300), 2);
        let addr = server.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stop_rx.await;
        }));

        // A client that starts a request and never finishes its headers is closed.
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let answer = until_closed(&mut slow).await;
        assert!(!answer.contains("200 OK"), "{answer}");

        // Two open connections fill the slots: a third is closed without an answer...
        let _a = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _b = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let answer = until_closed(&mut third).await;
        assert_eq!(answer, "", "refused while the slots are full");
        // ...and once the idle ones are cut off, requests are served again.
        drop((_a, _b));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));

        let _ = stop_tx.send(());
        task.await.expect("server task");
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
