//! Configuration shared by the operator (it embeds these types in the `IngestPipeline`
//! custom resource) and the pods (they read them from the pipeline's ConfigMap and
//! from flags). Doc comments become `kubectl explain` text, so they are written for users.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration value that cannot work, with what to fix.
#[derive(Debug, Error, PartialEq)]
#[error("invalid {field}: {problem}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

/// Settings of the synthetic event generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GeneratorConfig {
    /// Events written per second; 0 writes as fast as the disk allows.
    pub events_per_second: u64,
    /// A file is closed once it holds this many rows.
    #[schemars(range(min = 1))]
    pub rows_per_file: u64,
    /// A file is also closed after this many seconds even if not full, so a slow trickle
    /// of events still lands promptly; 0 turns the time limit off.
    #[schemars(range(min = 0.0))]
    pub seconds_per_file: f64,
    /// Share of deliberately bad rows, from 0.0 (none) to 1.0 (all).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub bad_row_share: f64,
    /// Share of messy but valid rows, 0.0 to 1.0: padded fields, odd-case event types
    /// and categories, upper-case event ids. The worker's cleaning makes them valid; the
    /// manifest lists them with their cleaned values (docs/generator.md).
    pub messy_row_share: f64,
    /// Seed of the random generator: the same seed and options give byte-identical files.
    pub seed: u64,
    /// Stop after writing this many rows; unset runs until stopped.
    pub total_rows: Option<u64>,
    /// Stop after writing this many files; unset runs until stopped.
    pub total_files: Option<u64>,
    /// Pause writing while the landing directory holds more than this many unprocessed files.
    #[schemars(range(min = 1))]
    pub max_pending_files: u64,
    /// Pause writing while unprocessed files in the landing directory exceed this many bytes.
    #[schemars(range(min = 1))]
    pub max_pending_bytes: u64,
    /// Share of viewing sessions in which the user adds a product to the cart.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub view_to_cart_rate: f64,
    /// Share of add-to-cart events followed by a purchase.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub cart_to_purchase_rate: f64,
    /// Format of the files written: `csv` (`*.csv`) or `ndjson` (`*.ndjson`).
    pub format: OutputFormat,
    /// Compression of the files written: `none`, `gzip` (`*.gz`) or `zstd` (`*.zst`).
    pub compression: OutputCompression,
}

/// The format of generated files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutputFormat {
    /// CSV with a header line, `*.csv`.
    #[default]
    Csv,
    /// One JSON object per line, `*.ndjson`.
    Ndjson,
}

impl OutputFormat {
    /// The file name extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => ".csv",
            OutputFormat::Ndjson => ".ndjson",
        }
    }
}

/// The compression of generated files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutputCompression {
    /// Not compressed.
    #[default]
    None,
    /// gzip, `*.gz`.
    Gzip,
    /// Zstandard, `*.zst`.
    Zstd,
}

impl OutputCompression {
    /// The file name extension added after the format's, with its dot (empty for none).
    pub fn extension(self) -> &'static str {
        match self {
            OutputCompression::None => "",
            OutputCompression::Gzip => ".gz",
            OutputCompression::Zstd => ".zst",
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events_per_second: 1_000,
            rows_per_file: 10_000,
            seconds_per_file: 1.0,
            bad_row_share: 0.01,
            messy_row_share: 0.0,
            seed: 1,
            total_rows: None,
            total_files: None,
            max_pending_files: 1_000,
            max_pending_bytes: 1 << 30,
            view_to_cart_rate: 0.3,
            cart_to_purchase_rate: 0.5,
            format: OutputFormat::Csv,
            compression: OutputCompression::None,
        }
    }
}

impl GeneratorConfig {
    /// Checks what the schema cannot express; returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rows_per_file == 0 {
            return Err(invalid("rowsPerFile", "must be at least 1"));
        }
        for (field, share) in [
            ("badRowShare", self.bad_row_share),
            ("messyRowShare", self.messy_row_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(invalid(field, format!("{share} is outside 0.0..=1.0")));
            }
        }
        if !self.seconds_per_file.is_finite() || self.seconds_per_file < 0.0 {
            return Err(invalid("secondsPerFile", "must be a number ≥ 0"));
        }
        for (field, rate) in [
            ("viewToCartRate", self.view_to_cart_rate),
            ("cartToPurchaseRate", self.cart_to_purchase_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(field, format!("{rate} is outside 0.0..=1.0")));
            }
        }
        if self.max_pending_files == 0 || self.max_pending_bytes == 0 {
            return Err(invalid(
                "maxPendingFiles/maxPendingBytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// When a micro-batch closes: whichever limit is reached first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchLimits {
    /// Most files in one batch.
    #[schemars(range(min = 1))]
    pub max_files: u64,
    /// Most rows in one batch (estimated from file sizes before parsing).
    #[schemars(range(min = 1))]
    pub max_rows: u64,
    /// Most bytes of input in one batch.
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
    /// After the first file of a batch is seen, wait at most this many milliseconds for
    /// more before processing. Small values give low latency, larger ones bigger batches.
    pub max_wait_ms: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_files: 256,
            max_rows: 50_000,
            max_bytes: 6 << 20,
            max_wait_ms: 5,
        }
    }
}

/// What happens to a landing file after its rows are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AfterCommit {
    /// Move it into `archive/YYYY-MM-DD/` under the landing directory.
    #[default]
    Archive,
    /// Delete it.
    Delete,
    /// Leave it where it is (the ledger still prevents a second load). Every listing of
    /// the landing directory then walks every file kept so far: for small volumes and
    /// debugging, not for a steady stream.
    Keep,
}

/// The wire format of the workers' `COPY … FROM STDIN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CopyFormat {
    /// PostgreSQL's binary format: the worker sends the values it has already parsed, so
    /// the server skips its text input functions (about twice as fast on the server).
    #[default]
    Binary,
    /// The text format (tab-separated, `\N` for NULL); slower on the server, readable
    /// in a packet capture.
    Text,
}

/// Settings of the ingestion workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerConfig {
    /// Micro-batch limits.
    pub batch: BatchLimits,
    /// What to do with a file once it is committed.
    pub after_commit: AfterCommit,
    /// Archived files older than this many hours are deleted; 0 keeps them forever.
    pub archive_retention_hours: u64,
    /// Skip rows whose event_id is already stored (counted as duplicates) instead of
    /// storing them again. Off by default: it costs an index lookup per row.
    pub dedupe_by_event_id: bool,
    /// Rows whose event_time is further than this many seconds in the future are rejected.
    pub future_tolerance_seconds: u64,
    /// Interval of the periodic directory listing that backs up file-system notifications
    /// (needed on network file systems without inotify), in milliseconds.
    #[schemars(range(min = 10))]
    pub poll_interval_ms: u64,
    /// A claim on a file by a worker that has not renewed it for this many seconds is
    /// considered orphaned and taken over by another worker.
    #[schemars(range(min = 1))]
    pub claim_timeout_seconds: u64,
    /// On SIGTERM, how long the batch in flight may take to finish before it is abandoned
    /// (it is replayed on restart).
    pub shutdown_grace_seconds: u64,
    /// Load a file whose content is identical to a file already loaded under another
    /// name. Off by default: such a file is a re-delivery, recorded in the ledger and
    /// counted, but its rows are not written a second time.
    pub load_redeliveries: bool,
    /// Files larger than this many bytes are loaded in parts of about this size, one
    /// transaction per part, so that memory stays bounded and a restart resumes at the
    /// last committed part.
    #[schemars(range(min = 65536))]
    pub part_bytes: u64,
    /// A row longer than this many bytes is quarantined as `row_too_long` (its first
    /// `maxRowBytes` bytes are kept as evidence) instead of being held in memory.
    #[schemars(range(min = 1024))]
    pub max_row_bytes: u64,
    /// The worker reports itself not live (`/healthz` fails, so Kubernetes restarts it)
    /// when its planner, committer or claim heartbeat has been stuck in one step for
    /// longer than this many seconds.
    #[schemars(range(min = 1))]
    pub liveness_timeout_seconds: u64,
    /// Reject tolerance, 0.0 to 1.0: a file whose share of rejected rows exceeds it is set
    /// aside whole (reason `reject_share_exceeded`) instead of filling quarantine: a
    /// producer that changed its format should stop the file. Unset: off (every valid row
    /// loads, every bad one is quarantined). A large file is judged part by part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_reject_share: Option<f64>,
    /// How rows travel to PostgreSQL: `binary` (default, the fastest) or `text`.
    pub copy_format: CopyFormat,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: BatchLimits::default(),
            after_commit: AfterCommit::Archive,
            archive_retention_hours: 168,
            dedupe_by_event_id: false,
            future_tolerance_seconds: 86_400,
            poll_interval_ms: 1_000,
            claim_timeout_seconds: 30,
            shutdown_grace_seconds: 20,
            load_redeliveries: false,
            part_bytes: 64 << 20,
            max_row_bytes: 1 << 20,
            liveness_timeout_seconds: 120,
            max_reject_share: None,
            copy_format: CopyFormat::Binary,
        }
    }
}

impl WorkerConfig {
    /// Checks what the schema cannot express; returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.batch;
        if b.max_files == 0 || b.max_rows == 0 || b.max_bytes == 0 {
            return Err(invalid(
                "batch",
                "maxFiles, maxRows and maxBytes must each be at least 1",
            ));
        }
        if self.poll_interval_ms < 10 {
            return Err(invalid("pollIntervalMs", "must be at least 10"));
        }
        if self.claim_timeout_seconds == 0 {
            return Err(invalid("claimTimeoutSeconds", "must be at least 1"));
        }
        if self.part_bytes < 65_536 {
            return Err(invalid("partBytes", "must be at least 65536"));
        }
        if self.max_row_bytes < 1024 {
            return Err(invalid("maxRowBytes", "must be at least 1024"));
        }
        if self.liveness_timeout_seconds == 0 {
            return Err(invalid("livenessTimeoutSeconds", "must be at least 1"));
        }
        if let Some(share) = self.max_reject_share
            && !(0.0..=1.0).contains(&share)
        {
            return Err(invalid(
                "maxRejectShare",
                format!("{share} is outside 0.0..=1.0 (leave it unset to turn it off)"),
            ));
        }
        Ok(())
    }
}

/// How the worker's connection to PostgreSQL is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, plain otherwise (PostgreSQL's default).
    #[default]
    Prefer,
    /// TLS, without checking the server certificate.
    Require,
    /// TLS, checking the certificate chain and that it names the host.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Table names in PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TableNames {
    /// Table receiving valid rows.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub events: String,
    /// Table receiving rejected rows with their reasons.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub quarantine: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            events: "events".into(),
            quarantine: "quarantine".into(),
        }
    }
}

impl TableNames {
    /// Table names are spliced into SQL, so only plain lower-case identifiers are allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, name) in [
            ("tables.events", &self.events),
            ("tables.quarantine", &self.quarantine),
        ] {
            if !is_plain_identifier(name) {
                return Err(invalid(
                    field,
                    format!("{name:?} must match ^[a-z_][a-z0-9_]{{0,62}}$"),
                ));
            }
        }
        if self.events == self.quarantine {
            return Err(invalid("tables", "events and quarantine must differ"));
        }
        Ok(())
    }
}

/// True for identifiers that need no quoting in PostgreSQL: `^[a-z_][a-z0-9_]{0,62}$`.
pub fn is_plain_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// How landing files are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InputFormat {
    /// From the file name: `*.csv` is CSV, `*.ndjson` and `*.jsonl` are NDJSON (before
    /// an optional `.gz` or `.zst`).
    #[default]
    Auto,
    /// CSV with a header line (docs/validation.md).
    Csv,
    /// Newline-delimited JSON: one JSON object per line, fields matched to columns by
    /// name; nested objects and arrays go into `jsonb` columns as JSON text.
    Ndjson,
}

/// How landing files are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InputCompression {
    /// From the file name: `*.gz` is gzip, `*.zst` is Zstandard, anything else is not
    /// compressed.
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip (also several concatenated gzip members).
    Gzip,
    /// Zstandard (also several concatenated frames).
    Zstd,
}

/// How the workers read landing files: their format and compression. Both default to
/// `auto` (from the file name: `events-1.csv`, `events-1.ndjson.gz`,
/// `events-1.jsonl.zst`…). A compressed file is decoded as a stream in bounded memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SourceConfig {
    /// `auto` (from the file name), `csv` or `ndjson`.
    pub format: InputFormat,
    /// `auto` (from the file name), `none`, `gzip` or `zstd`.
    pub compression: InputCompression,
    /// How CSV files are written: delimiter, quote character, header line.
    pub csv: CsvOptions,
}

/// The CSV dialect of landing files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CsvOptions {
    /// Field delimiter: one ASCII character, e.g. `,` (default), `;`, `|` or a tab.
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: String,
    /// Quote character: one ASCII character, `"` by default. It opens a quoted field only
    /// at the start of a field; doubled inside one it stands for itself.
    #[schemars(length(min = 1, max = 1))]
    pub quote: String,
    /// Files start with a header line (default). Without one, line 1 is data and fields
    /// are matched to columns by position (a declared schema then needs matchBy: position).
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ",".into(),
            quote: "\"".into(),
            header: true,
        }
    }
}

impl CsvOptions {
    /// The delimiter and quote as bytes, once [`SourceConfig::validate`] passed.
    pub fn bytes(&self) -> (u8, u8) {
        let first = |s: &str, fallback: u8| s.bytes().next().unwrap_or(fallback);
        (first(&self.delimiter, b','), first(&self.quote, b'"'))
    }
}

impl SourceConfig {
    /// Checks what the schema cannot express; returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let csv = &self.csv;
        for (field, value) in [
            ("source.csv.delimiter", &csv.delimiter),
            ("source.csv.quote", &csv.quote),
        ] {
            let ok = value.len() == 1 && value.is_ascii() && !matches!(value.as_str(), "\n" | "\r");
            if !ok {
                return Err(invalid(
                    field,
                    format!(
                        "{value:?} must be exactly one ASCII character other than a line break"
                    ),
                ));
            }
        }
        if csv.delimiter == csv.quote {
            return Err(invalid(
                "source.csv",
                "delimiter and quote must be different characters",
            ));
        }
        Ok(())
    }

    /// The format of the landing file `name`: the configured one, or (auto) the one its
    /// name says; None when auto cannot tell (not a landing file name).
    pub fn format_of(&self, name: &str) -> Option<InputFormat> {
        match self.format {
            InputFormat::Auto => crate::landing::suffix_of(name).map(|s| s.format),
            f => Some(f),
        }
    }

    /// The compression of the landing file `name`: the configured one, or (auto) the one
    /// its name says (`None` when it names none).
    pub fn compression_of(&self, name: &str) -> InputCompression {
        match self.compression {
            InputCompression::Auto => {
                crate::landing::suffix_of(name).map_or(InputCompression::None, |s| s.compression)
            }
            c => c,
        }
    }
}

/// Everything a pipeline's pods need besides credentials; the operator writes it into
/// the pipeline's ConfigMap as JSON and the pods read it with `--config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineConfig {
    /// The ledger namespace: pipelines sharing one database never see each other's
    /// files, claims or batches. The operator sets `<namespace>/<name>`.
    pub pipeline: String,
    pub generator: GeneratorConfig,
    pub worker: WorkerConfig,
    pub tables: TableNames,
    pub sslmode: SslMode,
    /// The format and compression of landing files (default: both from the file name).
    pub source: SourceConfig,
    /// PostgreSQL schema (namespace) of every table the workers use: the target table,
    /// quarantine and the ledger. Every session sets its search_path to exactly this
    /// schema, and the worker creates it when missing. Unset: the connection's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_schema: Option<String>,
    /// The target table's columns, cleaning and rules (see docs/schema.md). Unset: the
    /// built-in e-commerce table named by `tables.events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<crate::schema::TableSchema>,
}

/// The ledger namespace of a worker started without one.
pub const DEFAULT_PIPELINE: &str = "default";

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            pipeline: DEFAULT_PIPELINE.into(),
            generator: GeneratorConfig::default(),
            worker: WorkerConfig::default(),
            tables: TableNames::default(),
            sslmode: SslMode::default(),
            source: SourceConfig::default(),
            postgres_schema: None,
            schema: None,
        }
    }
}

/// A pipeline id is stored in every ledger row: printable, 1–253 bytes.
pub fn validate_pipeline_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > 253 || id.chars().any(|c| c.is_control()) {
        return Err(invalid(
            "pipeline",
            format!("{id:?} must be 1-253 printable characters (e.g. shop or prod/shop)"),
        ));
    }
    Ok(())
}

impl PipelineConfig {
    /// What a worker checks (the generator's part is not its concern).
    pub fn validate_for_worker(&self) -> Result<(), ConfigError> {
        validate_pipeline_id(&self.pipeline)?;
        self.worker.validate()?;
        self.tables.validate()?;
        self.source.validate()?;
        self.validate_postgres_schema()?;
        self.validate_schema()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.generator.validate()?;
        self.validate_for_worker()
    }

    fn validate_postgres_schema(&self) -> Result<(), ConfigError> {
        let Some(name) = &self.postgres_schema else {
            return Ok(());
        };
        if name.is_empty() || name.len() > 63 || name.contains('\0') || name.starts_with("pg_") {
            return Err(invalid(
                "postgres.schema",
                format!("{name:?} must be 1-63 bytes, without NUL, not starting with pg_"),
            ));
        }
        Ok(())
    }

    fn validate_schema(&self) -> Result<(), ConfigError> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        schema
            .check()
            .map_err(|e| invalid("schema", e.to_string()))?;
        if schema.table == self.tables.quarantine {
            return Err(invalid(
                "schema.table",
                "must differ from tables.quarantine",
            ));
        }
        if !self.source.csv.header && schema.match_by == crate::schema::MatchBy::Header {
            return Err(invalid(
                "schema.matchBy",
                "files without a header line (source.csv.header: false) need matchBy: position",
            ));
        }
        if self.worker.dedupe_by_event_id && schema.key.is_none() {
            return Err(invalid(
                "schema.key",
                "dedupe (worker.dedupeByEventId) needs a key column: set schema.key",
            ));
        }
        Ok(())
    }

    /// The schema in force: the declared one, or the built-in e-commerce table.
    pub fn effective_schema(&self) -> crate::schema::TableSchema {
        self.schema.clone().unwrap_or_else(|| {
            crate::schema::TableSchema::ecommerce(
                &self.tables.events,
                self.worker.future_tolerance_seconds,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PipelineConfig::default()
            .validate()
            .expect("defaults must validate");
    }

    #[test]
    fn empty_json_gives_defaults() {
        let cfg: PipelineConfig = serde_json::from_str("{}").expect("parse");
        assert_eq!(cfg, PipelineConfig::default());
    }

    #[test]
    fn partial_json_keeps_other_defaults() {
        let cfg: PipelineConfig =
            serde_json::from_str(r#"{"worker":{"batch":{"maxFiles":3}},"sslmode":"verify-full"}"#)
                .expect("parse");
        assert_eq!(cfg.worker.batch.max_files, 3);
        assert_eq!(cfg.worker.batch.max_rows, BatchLimits::default().max_rows);
        assert_eq!(cfg.sslmode, SslMode::VerifyFull);
    }

    #[test]
    fn csv_dialect_is_one_ascii_character_each_and_headerless_needs_position() {
        let mut cfg: PipelineConfig =
            serde_json::from_str(r#"{"source": {"csv": {"delimiter": ";", "quote": "'"}}}"#)
                .expect("parse");
        cfg.validate_for_worker().expect("valid");
        assert_eq!(cfg.source.csv.bytes(), (b';', b'\''));
        for (delimiter, quote) in [(",,", "\""), ("\n", "\""), ("é", "\""), (",", ",")] {
            cfg.source.csv.delimiter = delimiter.into();
            cfg.source.csv.quote = quote.into();
            let e = cfg.validate_for_worker().expect_err("invalid dialect");
            assert!(e.field.starts_with("source.csv"), "{e}");
        }
        cfg.source.csv = CsvOptions {
            header: false,
            ..CsvOptions::default()
        };
        cfg.schema = Some(crate::schema::TableSchema {
            match_by: crate::schema::MatchBy::Header,
            ..crate::schema::TableSchema::ecommerce("t", 0)
        });
        assert_eq!(
            cfg.validate_for_worker()
                .expect_err("header matching")
                .field,
            "schema.matchBy"
        );
    }

    #[test]
    fn bad_share_names_the_field() {
        let cfg = GeneratorConfig {
            bad_row_share: 1.5,
            ..Default::default()
        };
        let err = cfg.validate().expect_err("must fail");
        assert_eq!(err.field, "badRowShare");
        assert!(err.to_string().contains("1.5"));
    }

    #[test]
    fn table_names_must_be_plain_identifiers() {
        let t = TableNames {
            events: "events; drop table x".into(),
            ..Default::default()
        };
        assert!(t.validate().is_err());
        assert!(is_plain_identifier("events_2026"));
        assert!(!is_plain_identifier("Events"));
        assert!(!is_plain_identifier("1events"));
        assert!(!is_plain_identifier(""));
    }

    #[test]
    fn source_defaults_to_auto_and_reads_camel_case() {
        let cfg: PipelineConfig =
            serde_json::from_str(r#"{"source":{"format":"ndjson"}}"#).expect("parse");
        assert_eq!(cfg.source.format, InputFormat::Ndjson);
        assert_eq!(cfg.source.compression, InputCompression::Auto);
        assert_eq!(cfg.source.format_of("a.csv.gz"), Some(InputFormat::Ndjson));
        assert_eq!(
            cfg.source.compression_of("a.csv.gz"),
            InputCompression::Gzip
        );
        let auto = SourceConfig::default();
        assert_eq!(auto.format_of("a.jsonl.zst"), Some(InputFormat::Ndjson));
        assert_eq!(auto.compression_of("a.jsonl.zst"), InputCompression::Zstd);
        assert_eq!(auto.format_of("a.csv"), Some(InputFormat::Csv));
        assert_eq!(auto.compression_of("a.csv"), InputCompression::None);
        assert_eq!(auto.format_of("a.txt"), None);
        let forced = SourceConfig {
            compression: InputCompression::None,
            ..SourceConfig::default()
        };
        assert_eq!(forced.compression_of("a.csv.gz"), InputCompression::None);
        assert!(serde_json::from_str::<SourceConfig>(r#"{"format":"xml"}"#).is_err());
    }

    #[test]
    fn zero_batch_limit_rejected() {
        let mut cfg = WorkerConfig::default();
        cfg.batch.max_rows = 0;
        assert_eq!(cfg.validate().expect_err("must fail").field, "batch");
    }
}
