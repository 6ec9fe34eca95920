//! Ingestion figures for the status, read from the workers' own `/metrics` endpoints
//! through the addresses of the pipeline's headless Service (its Endpoints object).
//!
//! Failure-tolerant by design: a worker that does not answer within the timeout is left
//! out; when no worker answers the figures are `None` and the status keeps the previous
//! (stale) ones with their `figuresTime`. Reconciling never waits on this for more than
//! [`SCRAPE_TIMEOUT`]. Without a kubelet (tests) there are no endpoints, hence no figures.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use sluice_core::metric_names::{self as names, DegradedCause};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Per-worker budget for connect + request + response.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read (the worker's metrics are a few kB).
const MAX_BODY: usize = 1 << 20;

/// Figures summed or maxed over the workers that answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Σ sluice_worker_rows_total{outcome="loaded"}.
    pub rows_loaded: u64,
    /// Σ sluice_worker_rows_total{outcome="rejected"}.
    pub rows_rejected: u64,
    /// max sluice_worker_backlog_files (every worker lists the whole landing zone).
    pub backlog_files: u64,
    /// max sluice_worker_lag_seconds.
    pub lag_seconds: f64,
    /// max sluice_worker_last_commit_timestamp_seconds, None when no worker committed.
    pub last_commit_unix: Option<f64>,
    /// Causes any worker reports in sluice_worker_degraded (value 1).
    pub degraded: BTreeSet<DegradedCause>,
}

/// One worker's figures, from its metrics text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerFigures {
    pub rows_loaded: f64,
    pub rows_rejected: f64,
    pub backlog_files: f64,
    pub lag_seconds: f64,
    pub last_commit_unix: f64,
    pub degraded: BTreeSet<DegradedCause>,
}

/// Parses the Prometheus text format, picking the series the status needs.
pub fn parse(text: &str) -> WorkerFigures {
    let mut f = WorkerFigures::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('}') {
            Some(i) => line.split_at(i + 1),
            None => match line.split_once(char::is_whitespace) {
                Some((s, r)) => (s, r),
                None => continue,
            },
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            names::DEGRADED => {
                if value >= 1.0
                    && let Some(cause) = label(labels, "cause").and_then(DegradedCause::from_code)
                {
                    f.degraded.insert(cause);
                }
            }
            names::ROWS_TOTAL => {
                if has_label(labels, "outcome", "loaded") {
                    f.rows_loaded += value;
                } else if has_label(labels, "outcome", "rejected") {
                    f.rows_rejected += value;
                }
            }
            names::BACKLOG_FILES => f.backlog_files = value,
            names::LAG_SECONDS => f.lag_seconds = value,
            names::LAST_COMMIT_TIMESTAMP => f.last_commit_unix = value,
            _ => {}
        }
    }
    f
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"'))
    })
}

fn has_label(labels: &str, key: &str, value: &str) -> bool {
    labels.split(',').any(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, v)| k.trim() == key && v.trim().trim_matches('"') == value)
    })
}

/// Combines the workers that answered; None when none did.
pub fn combine(workers: &[WorkerFigures]) -> Option<Figures> {
    if workers.is_empty() {
        return None;
    }
    let mut out = Figures::default();
    let mut last = 0.0f64;
    for w in workers {
        out.rows_loaded += w.rows_loaded.max(0.0) as u64;
        out.rows_rejected += w.rows_rejected.max(0.0) as u64;
        out.backlog_files = out.backlog_files.max(w.backlog_files.max(0.0) as u64);
        out.lag_seconds = out.lag_seconds.max(w.lag_seconds);
        last = last.max(w.last_commit_unix);
        out.degraded.extend(w.degraded.iter().copied());
    }
    out.last_commit_unix = (last > 0.0).then_some(last);
    Some(out)
}

/// The workers' metrics addresses listed in an Endpoints object (ready and not ready).
pub fn addresses(ep: &Endpoints, port_name: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let Some(port) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .map(|p| p.port)
        else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for a in subset
            .addresses
            .iter()
            .flatten()
            .chain(subset.not_ready_addresses.iter().flatten())
        {
            if let Ok(ip) = a.ip.parse() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// Fetches `http://addr/metrics` with a plain HTTP/1.0 request.
pub async fn fetch(addr: SocketAddr) -> Option<String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: sluice\r\nAccept: text/plain\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY {
                return None;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let ok = head
            .lines()
            .next()
            .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
        ok.then(|| body.to_string())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}

/// Scrapes every address concurrently; None when no worker answered.
pub async fn scrape(addrs: &[SocketAddr]) -> Option<Figures> {
    let results = futures::future::join_all(addrs.iter().map(|a| fetch(*a))).await;
    let workers: Vec<WorkerFigures> = results.into_iter().flatten().map(|t| parse(&t)).collect();
    combine(&workers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

    const SAMPLE: &str = r#"# HELP sluice_worker_rows_total Rows committed by this worker.
# TYPE sluice_worker_rows_total counter
sluice_worker_rows_total{outcome="deduplicated"} 5
sluice_worker_rows_total{outcome="loaded"} 1200
sluice_worker_rows_total{outcome="rejected"} 12
sluice_worker_backlog_files 3
sluice_worker_lag_seconds 0.25
sluice_worker_last_commit_timestamp_seconds 1700000000.5
sluice_worker_rejected_rows_total{reason="bad_price"} 12
sluice_worker_degraded{cause="lock_timeout"} 1
sluice_worker_degraded{cause="disk_full"} 0
sluice_worker_degraded{cause="no_such_cause"} 1
"#;

    #[test]
    fn parses_the_series_it_needs() {
        let f = parse(SAMPLE);
        assert_eq!(f.rows_loaded, 1200.0);
        assert_eq!(f.rows_rejected, 12.0);
        assert_eq!(f.backlog_files, 3.0);
        assert_eq!(f.lag_seconds, 0.25);
        assert_eq!(f.last_commit_unix, 1_700_000_000.5);
        assert_eq!(
            f.degraded.iter().copied().collect::<Vec<_>>(),
            vec![DegradedCause::LockTimeout],
            "only causes at 1, and only known ones"
        );
        assert_eq!(parse("garbage\n{}\nx y z"), WorkerFigures::default());
    }

    #[test]
    fn combines_sums_and_maxima() {
        let a = parse(SAMPLE);
        let mut b = a.clone();
        b.degraded = [DegradedCause::DiskFull].into();
        b.backlog_files = 7.0;
        b.lag_seconds = 0.1;
        b.last_commit_unix = 0.0;
        let c = combine(&[a, b]).expect("figures");
        assert_eq!(c.rows_loaded, 2400);
        assert_eq!(c.rows_rejected, 24);
        assert_eq!(c.backlog_files, 7);
        assert_eq!(c.lag_seconds, 0.25);
        assert_eq!(c.last_commit_unix, Some(1_700_000_000.5));
        assert_eq!(c.degraded.len(), 2, "causes of every worker");
        assert_eq!(combine(&[]), None);
        assert_eq!(
            combine(&[WorkerFigures::default()]).and_then(|f| f.last_commit_unix),
            None
        );
    }

    #[test]
    fn addresses_from_endpoints() {
        let ep = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.5".into(),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.6".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![EndpointPort {
                    name: Some("metrics".into()),
                    port: 9100,
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        };
        let a = addresses(&ep, "metrics");
        assert_eq!(
            a,
            vec![
                "10.0.0.5:9100".parse().expect("addr"),
                "10.0.0.6:9100".parse().expect("addr")
            ]
        );
        assert!(addresses(&Endpoints::default(), "metrics").is_empty());
    }

    #[tokio::test]
    async fn scrapes_a_live_endpoint_and_tolerates_dead_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = SAMPLE;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        // Port 9 on localhost: nothing listens, connection refused.
        let dead: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let f = scrape(&[addr, dead]).await.expect("one answered");
        assert_eq!(f.rows_loaded, 1200);
        assert_eq!(scrape(&[dead]).await, None);
        assert_eq!(scrape(&[]).await, None);
    }
}
