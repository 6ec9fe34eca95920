//! A PostgreSQL connection that reconnects (backoff + jitter) when it breaks, keeping
//! `/readyz` and `sluice_worker_db_up` truthful meanwhile, plus the backoff used between
//! retries of work that failed for a reason other than the data.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::shared::Shared;

pub struct Db {
    client: Option<Client>,
    shared: Arc<Shared>,
    role: &'static str,
}

impl Db {
    pub fn new(shared: &Arc<Shared>, role: &'static str) -> Db {
        Db {
            client: None,
            shared: shared.clone(),
            role,
        }
    }

    /// A working connection, connecting (and retrying forever) if needed.
    pub async fn get(&mut self) -> &mut Client {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.broken();
        }
        let client = match self.client.take() {
            Some(c) => c,
            None => self.connect_until_up().await,
        };
        self.client.insert(client)
    }

    /// The current connection, if one is open (no connecting).
    pub fn current(&self) -> Option<&Client> {
        self.client.as_ref().filter(|c| !c.is_closed())
    }

    pub fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }

    async fn connect_until_up(&mut self) -> Client {
        let shared = self.shared.clone();
        let role = self.role;
        let target = shared.settings.db.describe();
        let client = loop {
            let attempt = shared
                .settings
                .db
                .connect_with_retry(None, |e, wait| {
                    shared
                        .metrics
                        .db_errors
                        .with_label_values(&["connect"])
                        .inc();
                    shared.set_db_up(false);
                    tracing::warn!(%role, %target, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "PostgreSQL unreachable; retrying");
                })
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) => {
                    // Only configuration errors end the retry loop; report them and keep
                    // trying slowly, since a crash loop would not fix them either.
                    tracing::error!(%role, error = %e, "cannot connect to PostgreSQL");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        tracing::info!(%role, %target, "connected to PostgreSQL");
        self.shared.set_db_up(true);
        client
    }

    /// Drops the connection after an error that may have broken it.
    pub fn broken(&mut self) {
        if self.client.take().is_some() {
            self.shared.set_db_up(false);
        }
    }
}

/// Exponential backoff with jitter for retrying work: 100 ms doubling to 30 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(30);

    /// The next wait (with up to 10% jitter), doubling the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = rand::random_range(0..=wait.as_millis() as u64 / 10 + 1);
        wait + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let mut b = Backoff::default();
        let first = b.next_wait();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(120));
        let waits: Vec<Duration> = (0..20).map(|_| b.next_wait()).collect();
        assert!(
            waits
                .windows(2)
                .all(|w| w[1] + Duration::from_secs(4) >= w[0])
        );
        let last = waits.last().copied().unwrap_or_default();
        assert!(last >= Duration::from_secs(30) && last <= Duration::from_secs(34));
    }
}
