//! Command-line flags (each also an `SLUICE_GENERATOR_*` environment variable) and how
//! they combine with the `--config` file: flags > environment > config file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Utc};
use clap::Parser;
use serde::de::DeserializeOwned;
use sluice_core::config::{ConfigError, GeneratorConfig, OutputCompression, OutputFormat};
use sluice_core::telemetry::LogFormat;
use thiserror::Error;

use crate::run::RunOptions;

/// Default address of the metrics and health server.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9102";

/// A flag or config value that cannot work; the binary exits with code 2.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot read config file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("invalid {flag}: {problem}")]
    Flag {
        flag: &'static str,
        problem: &'static str,
    },
}

/// Where to serve `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Listen(SocketAddr),
    Disabled,
}

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(MetricsAddr::Disabled);
    }
    s.parse().map(MetricsAddr::Listen).map_err(|_| {
        format!("{s:?} is not an address like 0.0.0.0:9102 (or `none` to turn the server off)")
    })
}

fn parse_start_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-11-25T00:00:00Z ({e})"))?;
    // Event times must stay storable (PostgreSQL: years 1..=9999) and in nanosecond range.
    if t.timestamp_nanos_opt().is_none() || t.year() < 1970 {
        return Err(format!("{s:?} must lie between 1970 and 2262"));
    }
    Ok(t)
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} must be a number from 0.0 to 1.0")),
    }
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    match s {
        "csv" => Ok(OutputFormat::Csv),
        "ndjson" => Ok(OutputFormat::Ndjson),
        _ => Err(format!("{s:?} must be csv or ndjson")),
    }
}

fn parse_compression(s: &str) -> Result<OutputCompression, String> {
    match s {
        "none" => Ok(OutputCompression::None),
        "gzip" => Ok(OutputCompression::Gzip),
        "zstd" => Ok(OutputCompression::Zstd),
        _ => Err(format!("{s:?} must be none, gzip or zstd")),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} must be a number of seconds ≥ 0")),
    }
}

/// Writes synthetic e-commerce events (view → add_to_cart → purchase funnels over a
/// seeded product catalogue) as CSV files into a landing directory, atomically, at a
/// given rate, with a share of deliberately bad rows.
///
/// Every option can also be set with an environment variable SLUICE_GENERATOR_<NAME>
/// (e.g. SLUICE_GENERATOR_EVENTS_PER_SECOND) or in the --config file; flags win over
/// the environment, which wins over the file, which wins over the defaults.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-generator", version, about, long_about)]
pub struct Args {
    /// Directory the CSV files appear in (created if missing).
    #[arg(long, env = "SLUICE_GENERATOR_LANDING_DIR", value_name = "DIR")]
    pub landing_dir: PathBuf,

    /// Events written per second; 0 writes as fast as possible. [default: 1000]
    #[arg(long, env = "SLUICE_GENERATOR_EVENTS_PER_SECOND", value_name = "N")]
    pub events_per_second: Option<u64>,

    /// A file is closed once it holds this many rows (at least 1). [default: 10000]
    #[arg(long, env = "SLUICE_GENERATOR_ROWS_PER_FILE", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rows_per_file: Option<u64>,

    /// A file is also closed once its events span this many seconds, so a slow trickle
    /// lands promptly; 0 turns this off. Measured on event time, which follows the wall
    /// clock when throttled. [default: 1.0]
    #[arg(long, env = "SLUICE_GENERATOR_SECONDS_PER_FILE", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub seconds_per_file: Option<f64>,

    /// Share of deliberately bad rows, 0.0 to 1.0; each bad row has one of eight defects
    /// chosen uniformly. [default: 0.01]
    #[arg(long, env = "SLUICE_GENERATOR_BAD_ROW_SHARE", value_name = "SHARE",
          value_parser = parse_share)]
    pub bad_row_share: Option<f64>,

    /// Share of the valid rows written messy but valid, 0.0 to 1.0: padded session ids,
    /// event types and categories in odd case and padded (` VIEW `, `Add_To_Cart`,
    /// `  Books `), upper-case event ids. The worker cleans them and loads them
    /// normalised; the manifest lists each with the value the worker must store.
    /// [default: 0.0]
    #[arg(long, env = "SLUICE_GENERATOR_MESSY_ROW_SHARE", value_name = "SHARE",
          value_parser = parse_share)]
    pub messy_row_share: Option<f64>,

    /// Random seed. The same seed, options and --start-time give byte-identical files.
    /// [default: 1]
    #[arg(long, env = "SLUICE_GENERATOR_SEED", value_name = "N")]
    pub seed: Option<u64>,

    /// Stop after this many rows (the last file may be short). [default: run until stopped]
    #[arg(long, env = "SLUICE_GENERATOR_TOTAL_ROWS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub total_rows: Option<u64>,

    /// Stop after this many files. [default: run until stopped]
    #[arg(long, env = "SLUICE_GENERATOR_TOTAL_FILES", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub total_files: Option<u64>,

    /// Pause while the landing directory holds this many unprocessed landing files.
    /// [default: 1000]
    #[arg(long, env = "SLUICE_GENERATOR_MAX_PENDING_FILES", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_files: Option<u64>,

    /// Pause while the unprocessed landing files hold this many bytes. [default: 1073741824]
    #[arg(long, env = "SLUICE_GENERATOR_MAX_PENDING_BYTES", value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_bytes: Option<u64>,

    /// Share of sessions that add a viewed product to the cart, 0.0 to 1.0. [default: 0.3]
    #[arg(long, env = "SLUICE_GENERATOR_VIEW_TO_CART_RATE", value_name = "RATE",
          value_parser = parse_share)]
    pub view_to_cart_rate: Option<f64>,

    /// Share of add-to-cart events followed by a purchase, 0.0 to 1.0. [default: 0.5]
    #[arg(long, env = "SLUICE_GENERATOR_CART_TO_PURCHASE_RATE", value_name = "RATE",
          value_parser = parse_share)]
    pub cart_to_purchase_rate: Option<f64>,

    /// Format of the files: csv (`*.csv`, with a header line) or ndjson (`*.ndjson`,
    /// one JSON object per line, keys named like the CSV header). [default: csv]
    #[arg(long, env = "SLUICE_GENERATOR_FORMAT", value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<OutputFormat>,

    /// Compression of the files: none, gzip (adds `.gz`) or zstd (adds `.zst`).
    /// [default: none]
    #[arg(long, env = "SLUICE_GENERATOR_COMPRESS", value_name = "KIND", value_parser = parse_compression)]
    pub compress: Option<OutputCompression>,

    /// Time of the first event, RFC 3339 (e.g. 2026-11-25T00:00:00Z). Event times then
    /// advance by 1/events-per-second each (1 µs when unthrottled), independent of the
    /// wall clock, so runs are reproducible. [default: now]
    #[arg(long, env = "SLUICE_GENERATOR_START_TIME", value_name = "TIME",
          value_parser = parse_start_time)]
    pub start_time: Option<DateTime<Utc>>,

    /// Append one JSON line per finished file to this file: name, rows, valid rows, bad
    /// rows by kind, and each bad line with the reason the worker will give it.
    #[arg(long, env = "SLUICE_GENERATOR_MANIFEST", value_name = "PATH")]
    pub manifest: Option<PathBuf>,

    /// Do not fsync files and the directory. For throwaway test and benchmark data only:
    /// files still appear atomically (rename), but a machine crash may lose them.
    #[arg(long, env = "SLUICE_GENERATOR_NO_FSYNC")]
    pub no_fsync: bool,

    /// YAML or JSON file with generator settings (camelCase keys as in the
    /// IngestPipeline resource, e.g. eventsPerSecond), either at the top level or under
    /// a `generator` key (the pipeline ConfigMap). Flags override it.
    #[arg(long, env = "SLUICE_GENERATOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address of the /metrics, /healthz and /readyz server; `none` turns it off.
    #[arg(long, env = "SLUICE_GENERATOR_METRICS_ADDR", value_name = "ADDR",
          default_value = DEFAULT_METRICS_ADDR, value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    /// Log line format: text or json.
    #[arg(long, env = "SLUICE_GENERATOR_LOG_FORMAT", value_name = "FORMAT",
          default_value = "text", value_parser = clap::value_parser!(LogFormat))]
    pub log_format: LogFormat,

    /// Log filter, e.g. info, debug or sluice_generator=debug,info (RUST_LOG wins).
    #[arg(
        long,
        env = "SLUICE_GENERATOR_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,
}

/// The validated settings of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub run: RunOptions,
    pub metrics_addr: MetricsAddr,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Args {
    /// Applies the config file and the flags over the defaults, then validates.
    pub fn resolve(self) -> Result<Settings, CliError> {
        let mut cfg = match &self.config {
            Some(path) => load_config(path)?,
            None => GeneratorConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = self.$field { cfg.$field = v; })*
            };
        }
        set!(
            events_per_second,
            rows_per_file,
            seconds_per_file,
            bad_row_share,
            messy_row_share,
            seed,
            max_pending_files,
            max_pending_bytes,
            view_to_cart_rate,
            cart_to_purchase_rate,
        );
        if let Some(v) = self.format {
            cfg.format = v;
        }
        if let Some(v) = self.compress {
            cfg.compression = v;
        }
        if self.total_rows.is_some() {
            cfg.total_rows = self.total_rows;
        }
        if self.total_files.is_some() {
            cfg.total_files = self.total_files;
        }
        cfg.validate()?;
        if cfg.total_rows == Some(0) {
            return Err(CliError::Flag {
                flag: "totalRows",
                problem: "must be at least 1; leave it unset to run until stopped",
            });
        }
        if cfg.total_files == Some(0) {
            return Err(CliError::Flag {
                flag: "totalFiles",
                problem: "must be at least 1; leave it unset to run until stopped",
            });
        }
        Ok(Settings {
            run: RunOptions {
                landing_dir: self.landing_dir,
                config: cfg,
                start_time: self.start_time,
                manifest: self.manifest,
                fsync: !self.no_fsync,
            },
            metrics_addr: self.metrics_addr,
            log_format: self.log_format,
            log_level: self.log_level,
        })
    }
}

/// Reads a `GeneratorConfig` from YAML or JSON, at the top level or under `generator`.
pub fn load_config(path: &Path) -> Result<GeneratorConfig, CliError> {
    let err = |message: String| CliError::ConfigFile {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_config(&text).map_err(err)
}

fn parse_config(text: &str) -> Result<GeneratorConfig, String> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let value = match value {
        serde_yaml::Value::Null => return Ok(GeneratorConfig::default()),
        serde_yaml::Value::Mapping(ref m) => match m.get("generator") {
            Some(inner) => inner.clone(),
            None => value,
        },
        other => other,
    };
    from_value(value)
}

fn from_value<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    serde_yaml::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut full = vec!["sluice-generator", "--landing-dir", "/tmp/x"];
        full.extend_from_slice(args);
        Args::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .resolve()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_come_from_generator_config() {
        let s = parse(&[]).expect("parse");
        assert_eq!(s.run.config, GeneratorConfig::default());
        assert_eq!(
            s.metrics_addr,
            MetricsAddr::Listen(DEFAULT_METRICS_ADDR.parse().expect("addr"))
        );
    }

    #[test]
    fn flags_set_fields_and_none_disables_metrics() {
        let s = parse(&[
            "--events-per-second",
            "0",
            "--total-rows",
            "5",
            "--metrics-addr",
            "none",
            "--start-time",
            "2026-11-25T01:02:03+01:00",
        ])
        .expect("parse");
        assert_eq!(s.run.config.events_per_second, 0);
        assert_eq!(s.run.config.total_rows, Some(5));
        assert_eq!(s.run.config.messy_row_share, 0.0);
        let messy = parse(&["--messy-row-share", "0.03"]).expect("parse");
        assert_eq!(messy.run.config.messy_row_share, 0.03);
        let e = parse(&["--messy-row-share", "2"]).expect_err("must fail");
        assert!(e.contains("0.0 to 1.0"), "{e}");
        assert_eq!(s.metrics_addr, MetricsAddr::Disabled);
        assert_eq!(
            s.run.start_time.map(|t| t.to_rfc3339()),
            Some("2026-11-25T00:02:03+00:00".to_string())
        );
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let e = parse(&["--bad-row-share", "1.5"]).expect_err("must fail");
        assert!(e.contains("0.0 to 1.0"), "{e}");
        let e = parse(&["--start-time", "yesterday"]).expect_err("must fail");
        assert!(e.contains("RFC 3339"), "{e}");
        let e = parse(&["--start-time", "0000-01-01T00:00:00Z"]).expect_err("must fail");
        assert!(e.contains("between 1970 and 2262"), "{e}");
        let e = parse(&["--rows-per-file", "0"]).expect_err("must fail");
        assert!(e.contains("rows-per-file"), "{e}");
        let e = parse(&["--metrics-addr", "nowhere"]).expect_err("must fail");
        assert!(e.contains("none"), "{e}");
    }

    #[test]
    fn config_file_top_level_or_under_generator() {
        let c = parse_config("eventsPerSecond: 7\nseed: 3\n").expect("yaml");
        assert_eq!((c.events_per_second, c.seed), (7, 3));
        let c = parse_config(r#"{"generator":{"rowsPerFile":9},"worker":{}}"#).expect("json");
        assert_eq!(c.rows_per_file, 9);
        assert_eq!(c.seed, GeneratorConfig::default().seed);
        assert!(parse_config("eventsPerSecond: lots").is_err());
        assert_eq!(parse_config("").expect("empty"), GeneratorConfig::default());
    }

    #[test]
    fn flags_override_config_file_and_file_is_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "seed: 3\nbadRowShare: 0.5\n").expect("write");
        let p = path.to_str().expect("utf8 path");
        let s = parse(&["--config", p, "--seed", "4"]).expect("parse");
        assert_eq!((s.run.config.seed, s.run.config.bad_row_share), (4, 0.5));
        std::fs::write(&path, "badRowShare: 2\n").expect("write");
        let e = parse(&["--config", p]).expect_err("must fail");
        assert!(e.contains("badRowShare"), "{e}");
    }
}
