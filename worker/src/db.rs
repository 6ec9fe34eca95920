//! Connecting to PostgreSQL: settings from a URL or the libpq `PG*` environment
//! variables (credentials may come from files, for Kubernetes Secrets), TLS per
//! `sslmode`, and reconnection with exponential backoff and jitter.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sluice_core::config::SslMode;
use sluice_core::metric_names::DegradedCause;
use thiserror::Error;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode as PgSslMode;

use crate::tls::{self, TlsError};

#[derive(Debug, Error)]
pub enum DbError {
    #[error("invalid database URL: {0} (expected postgres://user:password@host:port/dbname)")]
    BadUrl(String),
    #[error("cannot read {what} from {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sslmode=verify-full needs root certificates: set PGSSLROOTCERT or --ssl-root-cert")]
    MissingRootCert,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to PostgreSQL at {target}: {}", error_chain(.source))]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
}

/// An error and its causes, e.g. "error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer" — the top-level text alone rarely says what to fix.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Where and how to connect. Its `Debug` and [`DbSettings::describe`] never show the password.
#[derive(Clone)]
pub struct DbSettings {
    config: tokio_postgres::Config,
    sslmode: SslMode,
    root_cert: Option<PathBuf>,
    /// statement_timeout, lock_timeout and idle_in_transaction_session_timeout of every
    /// session: bounds how long a frozen worker's transaction can hold its locks.
    session_timeout: Duration,
    /// The schema every session's search_path is set to (`postgres.schema`), so that the
    /// role's or database's own search_path never decides where tables go.
    search_path: Option<String>,
}

const KEEPALIVE_IDLE_SECS: u64 = 5;
const KEEPALIVE_INTERVAL_SECS: u64 = 2;
const KEEPALIVE_PROBES: u32 = 3;
const TCP_USER_TIMEOUT_SECS: u64 = 10;

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Reads a value from the environment variable `name`, or from the file named by
/// `name_FILE` (trailing newline stripped).
fn env_or_file(name: &'static str) -> Result<Option<String>, DbError> {
    var_or_file(name, &|k| std::env::var(k).ok())
}

/// [`env_or_file`] with the variables looked up by `var`.
fn var_or_file(
    name: &'static str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, DbError> {
    if let Some(v) = var(name) {
        return Ok(Some(v));
    }
    match var(&format!("{name}_FILE")) {
        Some(path) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|source| DbError::SecretFile {
                what: name,
                path,
                source,
            })?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        None => Ok(None),
    }
}

/// tokio-postgres understands sslmode disable/prefer/require only; the stronger libpq
/// modes are taken out of the URL here and enforced by our TLS connector.
fn split_sslmode(url: &str) -> (String, Option<SslMode>) {
    let mut mode = None;
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" => Some(SslMode::Disable),
                    "prefer" | "allow" => Some(SslMode::Prefer),
                    "require" => Some(SslMode::Require),
                    "verify-full" | "verify-ca" => Some(SslMode::VerifyFull),
                    _ => None,
                };
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, mode)
}

/// The connection from the libpq variables looked up by `var`: PGHOST, PGPORT, and
/// PGUSER, PGDATABASE, PGPASSWORD, each of these three also as a file (`*_FILE`, e.g.
/// the keys of a Kubernetes Secret mounted as files).
fn config_from_vars(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, DbError> {
    let mut config = tokio_postgres::Config::new();
    config.host(var("PGHOST").as_deref().unwrap_or("localhost"));
    let port = match var("PGPORT") {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| DbError::BadUrl(format!("PGPORT={p:?} is not a port number")))?,
        None => 5432,
    };
    config.port(port);
    let user = var_or_file("PGUSER", var)?.unwrap_or_else(|| "postgres".into());
    config.user(&user);
    config.dbname(var_or_file("PGDATABASE", var)?.unwrap_or(user));
    if let Some(password) = var_or_file("PGPASSWORD", var)? {
        config.password(password);
    }
    Ok(config)
}

impl DbSettings {
    /// Builds the settings from, in order of precedence: `url` (flag), `DATABASE_URL`
    /// (or `DATABASE_URL_FILE`), else `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`,
    /// `PGPASSWORD` (the last three also as `*_FILE`). `sslmode` from the flag/config wins over the
    /// URL's, and `PGSSLMODE` is used when neither sets one.
    pub fn resolve(
        url: Option<String>,
        sslmode: Option<SslMode>,
        root_cert: Option<PathBuf>,
    ) -> Result<DbSettings, DbError> {
        let url = match url {
            Some(u) => Some(u),
            None => env_or_file("DATABASE_URL")?,
        };
        let (config, url_mode) = match url {
            Some(url) => {
                let (url, mode) = split_sslmode(&url);
                let config = tokio_postgres::Config::from_str(&url)
                    // The parser's message never contains the password; ours neither.
                    .map_err(|e| DbError::BadUrl(e.to_string()))?;
                (config, mode)
            }
            None => (config_from_vars(&|k| std::env::var(k).ok())?, None),
        };
        let env_mode = std::env::var("PGSSLMODE")
            .ok()
            .and_then(|m| split_sslmode(&format!("x?sslmode={m}")).1);
        let sslmode = sslmode.or(url_mode).or(env_mode).unwrap_or_default();
        let root_cert = root_cert.or_else(|| std::env::var_os("PGSSLROOTCERT").map(PathBuf::from));
        if sslmode == SslMode::VerifyFull && root_cert.is_none() {
            return Err(DbError::MissingRootCert);
        }
        let mut config = config;
        config.ssl_mode(match sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
        });
        config.application_name("sluice-worker");
        config.connect_timeout(Duration::from_secs(10));
        // A peer that vanished (dead node, partition) is noticed in ~11 s by the client.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(KEEPALIVE_IDLE_SECS));
        config.keepalives_interval(Duration::from_secs(KEEPALIVE_INTERVAL_SECS));
        config.keepalives_retries(KEEPALIVE_PROBES);
        config.tcp_user_timeout(Duration::from_secs(TCP_USER_TIMEOUT_SECS));
        Ok(DbSettings {
            config,
            sslmode,
            root_cert,
            session_timeout: Duration::from_secs(30),
            search_path: None,
        })
    }

    /// Sets the per-session timeouts (normally the claim timeout), see
    /// docs/delivery-guarantee.md, "Frozen peers".
    pub fn with_session_timeout(mut self, timeout: Duration) -> DbSettings {
        self.session_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    pub fn with_search_path(mut self, schema: Option<String>) -> DbSettings {
        self.search_path = schema;
        self
    }

    /// The configured schema, if any.
    pub fn search_path(&self) -> Option<&str> {
        self.search_path.as_deref()
    }

    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The SET statements every session runs first. The server-side keepalives and
    /// tcp_user_timeout end the session of a peer whose host vanished; the timeouts end
    /// the transaction of a peer that stopped (SIGSTOP, paused VM) while holding locks.
    fn session_setup(&self) -> String {
        let ms = self.session_timeout.as_millis();
        let search_path = self
            .search_path
            .as_deref()
            .map(|s| {
                format!(
                    "SET search_path TO {}; ",
                    sluice_core::schema::quote_ident(s)
                )
            })
            .unwrap_or_default();
        search_path
            + &format!(
                "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
             SET idle_in_transaction_session_timeout = {ms}; \
             SET tcp_keepalives_idle = {KEEPALIVE_IDLE_SECS}; \
             SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_SECS}; \
             SET tcp_keepalives_count = {KEEPALIVE_PROBES}; \
             SET tcp_user_timeout = {}",
                TCP_USER_TIMEOUT_SECS * 1000
            )
    }

    /// `user@host:port/dbname (sslmode)`, for logs; never the password.
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{} (sslmode={})",
            self.config.get_user().unwrap_or("?"),
            host,
            port,
            self.config.get_dbname().unwrap_or("?"),
            self.sslmode.as_str()
        )
    }

    /// Opens one connection with the session settings applied; its driver task runs in
    /// the background until it breaks.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let client = self.connect_raw().await?;
        client
            .batch_execute(&self.session_setup())
            .await
            .map_err(|source| DbError::Connect {
                target: self.describe(),
                source,
            })?;
        Ok(client)
    }

    async fn connect_raw(&self) -> Result<Client, DbError> {
        let target = self.describe();
        let map = |source| DbError::Connect {
            target: target.clone(),
            source,
        };
        match self.sslmode {
            SslMode::Disable => {
                let (client, conn) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(map)?;
                spawn_driver(conn);
                Ok(client)
            }
            SslMode::Prefer | SslMode::Require => {
                let (client, conn) = self
                    .config
                    .connect(tls::encrypt_only()?)
                    .await
                    .map_err(map)?;
                spawn_driver(conn);
                Ok(client)
            }
            SslMode::VerifyFull => {
                let root = self.root_cert.as_ref().ok_or(DbError::MissingRootCert)?;
                let (client, conn) = self
                    .config
                    .connect(tls::verify_full(root)?)
                    .await
                    .map_err(map)?;
                spawn_driver(conn);
                Ok(client)
            }
        }
    }

    /// Connects, retrying with exponential backoff and jitter (100 ms doubling to 10 s)
    /// until it works or `attempts` is exhausted (`None` = forever).
    pub async fn connect_with_retry(
        &self,
        attempts: Option<usize>,
        on_error: impl Fn(&DbError, Duration),
    ) -> Result<Client, DbError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter();
        let backoff = match attempts {
            Some(n) => backoff.with_max_times(n),
            None => backoff.without_max_times(),
        };
        (|| self.connect())
            .retry(backoff)
            .when(|e| {
                !matches!(
                    e,
                    DbError::MissingRootCert | DbError::Tls(_) | DbError::BadUrl(_)
                )
            })
            .notify(|e, d| on_error(e, d))
            .await
    }
}

fn spawn_driver<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
}

/// A PostgreSQL error as a person needs it: the server's message, detail and the
/// constraint involved, not just "db error".
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return error_chain(e);
    };
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(constraint) = db.constraint() {
        text.push_str(&format!(" [constraint {constraint}]"));
    }
    text
}

/// What an error from PostgreSQL means for the file being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection or server went away (or a deadlock/serialization failure): retry
    /// on a new connection at once, with backoff.
    Connection,
    /// Caused by the rows' content (SQLSTATE classes 22 and 23): the only kind of error
    /// that may fail a file.
    Data,
    /// Not about the data and not going away by reconnecting at once: retry with
    /// backoff, report the cause, leave the ledger untouched.
    Environment(DegradedCause),
}

/// Sorts an error into [`ErrorClass`]. Unknown SQLSTATEs are environment errors: a file
/// is only failed for a reason that certainly lies in its content.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    match e.code() {
        Some(code) if !e.is_closed() => classify_sqlstate(code.code()),
        _ => ErrorClass::Connection,
    }
}

/// [`classify`] by SQLSTATE.
pub fn classify_sqlstate(c: &str) -> ErrorClass {
    if c.starts_with("22") || c.starts_with("23") {
        return ErrorClass::Data;
    }
    if c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01" || c == "53300" {
        return ErrorClass::Connection;
    }
    ErrorClass::Environment(match c {
        "55P03" => DegradedCause::LockTimeout,
        "57014" => DegradedCause::StatementTimeout,
        "53100" => DegradedCause::DiskFull,
        "53200" => DegradedCause::OutOfMemory,
        "42501" => DegradedCause::PermissionDenied,
        "42P01" | "3F000" => DegradedCause::TableMissing,
        "42703" | "42804" | "42P10" => DegradedCause::TableChanged,
        _ => DegradedCause::DatabaseError,
    })
}

/// True for errors after which the same work can simply be retried on a new connection
/// or a new transaction (connection loss, server restart, deadlock, serialization).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O-level failure: the connection is gone.
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "40001" // serialization failure
                || c == "40P01" // deadlock detected
                || c == "53300" // too many connections
                || c.starts_with("58") // system error (I/O)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (url, mode) =
            split_sslmode("postgres://u:p@h/db?sslmode=verify-full&application_name=x");
        assert_eq!(url, "postgres://u:p@h/db?application_name=x");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        let (url, mode) = split_sslmode("postgres://u@h/db?sslmode=disable");
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(mode, Some(SslMode::Disable));
        assert_eq!(split_sslmode("postgres://h/db").1, None);
    }

    #[test]
    fn user_database_and_password_can_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p.to_string_lossy().into_owned()
        };
        let vars: std::collections::HashMap<&str, String> = [
            ("PGHOST", "pg-rw.data.svc".to_string()),
            ("PGPORT", "5432".into()),
            ("PGUSER_FILE", file("username", "app\n")),
            ("PGDATABASE_FILE", file("dbname", "shop")),
            ("PGPASSWORD_FILE", file("password", "s3cret\n")),
        ]
        .into();
        let c = config_from_vars(&|k| vars.get(k).cloned()).expect("config");
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.get_ports(), [5432]);
        // A variable wins over its file; a missing file is an error naming it.
        let mut vars = vars;
        vars.insert("PGUSER", "bob".into());
        vars.insert(
            "PGDATABASE_FILE",
            dir.path().join("nope").to_string_lossy().into(),
        );
        let err = config_from_vars(&|k| vars.get(k).cloned()).expect_err("missing file");
        assert!(err.to_string().contains("PGDATABASE"), "{err}");
        vars.remove("PGDATABASE_FILE");
        let c = config_from_vars(&|k| vars.get(k).cloned()).expect("config");
        assert_eq!((c.get_user(), c.get_dbname()), (Some("bob"), Some("bob")));
    }

    #[test]
    fn description_never_shows_the_password() {
        let s = DbSettings::resolve(
            Some("postgres://alice:s3cret@db.example:5433/shop".into()),
            Some(SslMode::Disable),
            None,
        )
        .expect("settings");
        let d = s.describe();
        assert_eq!(d, "alice@db.example:5433/shop (sslmode=disable)");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn verify_full_without_roots_is_a_clear_error() {
        let err = DbSettings::resolve(
            Some("postgres://u@h/db".into()),
            Some(SslMode::VerifyFull),
            None,
        );
        // PGSSLROOTCERT could be set in the environment of whoever runs the tests.
        if std::env::var_os("PGSSLROOTCERT").is_none() {
            assert!(matches!(err, Err(DbError::MissingRootCert)));
        }
    }

    #[test]
    fn only_data_errors_can_fail_a_file() {
        use DegradedCause::*;
        assert_eq!(classify_sqlstate("22P02"), ErrorClass::Data); // invalid text
        assert_eq!(classify_sqlstate("23514"), ErrorClass::Data); // check violation
        assert_eq!(classify_sqlstate("23505"), ErrorClass::Data); // unique violation
        assert_eq!(classify_sqlstate("08006"), ErrorClass::Connection);
        assert_eq!(classify_sqlstate("57P01"), ErrorClass::Connection);
        assert_eq!(classify_sqlstate("40P01"), ErrorClass::Connection);
        for (code, cause) in [
            ("55P03", LockTimeout),
            ("57014", StatementTimeout),
            ("53100", DiskFull),
            ("53200", OutOfMemory),
            ("42501", PermissionDenied),
            ("42P01", TableMissing),
            ("42703", TableChanged),
            ("XX000", DatabaseError),
            ("25P02", DatabaseError),
        ] {
            assert_eq!(
                classify_sqlstate(code),
                ErrorClass::Environment(cause),
                "{code}"
            );
        }
    }

    #[test]
    fn session_setup_bounds_every_wait_by_the_session_timeout() {
        let s = DbSettings::resolve(
            Some("postgres://u@h/db".into()),
            Some(SslMode::Disable),
            None,
        )
        .expect("settings")
        .with_session_timeout(Duration::from_secs(3));
        let sql = s.session_setup();
        for want in [
            "statement_timeout = 3000",
            "lock_timeout = 3000",
            "idle_in_transaction_session_timeout = 3000",
            "tcp_keepalives_idle = 5",
            "tcp_user_timeout = 10000",
        ] {
            assert!(sql.contains(want), "{want} missing from {sql}");
        }
        assert!(!sql.contains("search_path"), "left alone unless configured");
        let sql = s
            .with_search_path(Some("My \"Shop\"".into()))
            .session_setup();
        assert!(
            sql.starts_with("SET search_path TO \"My \"\"Shop\"\"\"; "),
            "{sql}"
        );
    }

    #[test]
    fn garbage_url_is_rejected() {
        let err = DbSettings::resolve(Some("postgres://h:notaport/db".into()), None, None)
            .expect_err("bad url");
        assert!(err.to_string().contains("invalid database URL"));
    }
}
