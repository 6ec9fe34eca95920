//! The IoT example's data set (`sluice-local --example iot`): sensor readings for the
//! declared table of `deploy/examples/schema/sensors.yaml`, written as gzip'd NDJSON.
//!
//! The example resource is the one source of truth: its `spec.schema` and `spec.source`
//! are read from the YAML (compiled in, parsed at run time) and handed to the workers in
//! their config file, exactly as the operator would. [`Reading`] is one generated row
//! with the outcome the worker must give it: loaded as is, loaded after cleaning (a
//! messy-but-valid spelling, [`Messy`]) or quarantined with a reason ([`Bad`]). The
//! producer that writes them is [`producer`].

pub mod producer;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sluice_core::config::{PipelineConfig, SourceConfig};
use sluice_core::reject::RejectReason;
use sluice_core::schema::TableSchema;
use thiserror::Error;

/// The example resource, `deploy/examples/schema/sensors.yaml`, as compiled in.
pub const EXAMPLE_YAML: &str = include_str!("../../deploy/examples/schema/sensors.yaml");
/// Where [`EXAMPLE_YAML`] lives in the repository (for messages).
pub const EXAMPLE_PATH: &str = "deploy/examples/schema/sensors.yaml";

/// Sites the example's `site` column allows (canonical spelling).
pub const SITES: [&str; 2] = ["north", "south"];

/// The example resource cannot be used.
#[derive(Debug, Error)]
pub enum ExampleError {
    #[error("{EXAMPLE_PATH}: not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{EXAMPLE_PATH}: has no {0}")]
    Missing(&'static str),
    #[error("{EXAMPLE_PATH}: {0}")]
    Schema(#[from] sluice_core::schema::SchemaError),
    #[error("{EXAMPLE_PATH}: {0}")]
    Config(#[from] sluice_core::config::ConfigError),
}

/// What the workers of the IoT example need from its resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// `spec.schema`: the declared table.
    pub schema: TableSchema,
    /// `spec.source`: format and compression of the landing files.
    pub source: SourceConfig,
}

impl Example {
    /// Parses the compiled-in example resource and checks its schema and source.
    pub fn load() -> Result<Example, ExampleError> {
        Example::parse(EXAMPLE_YAML)
    }

    /// Parses an `IngestPipeline` document's `spec.schema` and `spec.source`.
    pub fn parse(yaml: &str) -> Result<Example, ExampleError> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml)?;
        let spec = doc.get("spec").ok_or(ExampleError::Missing("spec"))?;
        let schema: TableSchema = serde_yaml::from_value(
            spec.get("schema")
                .cloned()
                .ok_or(ExampleError::Missing("spec.schema"))?,
        )?;
        schema.check()?;
        let source: SourceConfig = match spec.get("source") {
            Some(s) => serde_yaml::from_value(s.clone())?,
            None => SourceConfig::default(),
        };
        source.validate()?;
        Ok(Example { schema, source })
    }

    /// The workers' config file (`--config`): the pipeline config with this schema and
    /// source, everything else at its default.
    pub fn worker_config(&self) -> PipelineConfig {
        PipelineConfig {
            schema: Some(self.schema.clone()),
            source: self.source.clone(),
            ..PipelineConfig::default()
        }
    }

    /// The target table's name, quoted for SQL.
    pub fn quoted_table(&self) -> String {
        sluice_core::schema::quote_ident(&self.schema.table)
    }
}

/// A messy-but-valid spelling; each exercises one cleaning rule of the example schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Messy {
    /// `" north "`: `site` trimmed.
    PaddedSite,
    /// `"NORTH"`: `site` matched ignoring case, stored as `north`.
    ShoutedSite,
    /// `"urn:uuid:…"`: `reading_id` without its URN prefix.
    UrnId,
    /// `"+12.5"` (a string): `celsius` without its plus sign.
    PlusCelsius,
    /// `"ok": ""`: empty, so absent, so the default `true`.
    EmptyOk,
}

impl Messy {
    /// Every kind, in the order they are drawn.
    pub const ALL: [Messy; 5] = [
        Messy::PaddedSite,
        Messy::ShoutedSite,
        Messy::UrnId,
        Messy::PlusCelsius,
        Messy::EmptyOk,
    ];

    /// The column and rule code (`sluice_rows_cleaned_total{column,rule}`) it counts under.
    pub fn counted_as(self) -> (&'static str, &'static str) {
        match self {
            Messy::PaddedSite => ("site", "trim"),
            Messy::ShoutedSite => ("site", "ignore_case"),
            Messy::UrnId => ("reading_id", "normalize_uuid"),
            Messy::PlusCelsius => ("celsius", "normalize_number"),
            Messy::EmptyOk => ("ok", "empty_to_null"),
        }
    }
}

/// A deliberately bad row and the reason it must be quarantined with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bad {
    /// `celsius` above 60 or below -90: `out_of_range`.
    CelsiusOutOfRange,
    /// `site` neither north nor south: `not_allowed`.
    UnknownSite,
    /// The line is cut off inside the object: `bad_json`.
    TruncatedJson,
}

impl Bad {
    /// Every kind, in the order they are drawn.
    pub const ALL: [Bad; 3] = [Bad::CelsiusOutOfRange, Bad::UnknownSite, Bad::TruncatedJson];

    /// The quarantine reason the worker must give.
    pub fn reason(self) -> RejectReason {
        match self {
            Bad::CelsiusOutOfRange => RejectReason::OutOfRange,
            Bad::UnknownSite => RejectReason::NotAllowed,
            Bad::TruncatedJson => RejectReason::BadJson,
        }
    }
}

/// What a reading is meant to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Valid,
    Messy(Messy),
    Bad(Bad),
}

/// One generated reading: the values the table must hold for it (cleaned, canonical) and
/// what it tests. Serialized as one line of the producer's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Lower-case hyphenated UUID.
    pub reading_id: String,
    /// Milliseconds since the Unix epoch.
    pub taken_at_ms: i64,
    /// Canonical site (a bad `UnknownSite` row holds the unknown one).
    pub site: String,
    /// Tenths of a degree.
    pub deci_celsius: i32,
    /// The stored `ok`; `None` when the field is left out (the default `true` applies).
    pub ok: Option<bool>,
    pub samples: Option<i16>,
    /// JSON text of `meta`, when present.
    pub meta: Option<String>,
    pub kind: Kind,
}

impl Reading {
    /// Draws one reading taken at `taken_at_ms`: `bad_share` of them bad, `messy_share`
    /// of them messy (each kind equally likely), the rest plain.
    pub fn draw(rng: &mut impl Rng, taken_at_ms: i64, bad_share: f64, messy_share: f64) -> Self {
        let roll: f64 = rng.random();
        let kind = if roll < bad_share {
            Kind::Bad(Bad::ALL[rng.random_range(0..Bad::ALL.len())])
        } else if roll < bad_share + messy_share {
            Kind::Messy(Messy::ALL[rng.random_range(0..Messy::ALL.len())])
        } else {
            Kind::Valid
        };
        let site = SITES[rng.random_range(0..SITES.len())];
        let deci_celsius = match kind {
            Kind::Bad(Bad::CelsiusOutOfRange) if rng.random_bool(0.5) => {
                rng.random_range(601..=999)
            }
            Kind::Bad(Bad::CelsiusOutOfRange) => rng.random_range(-999..=-901),
            // A plus sign needs a number that is not negative.
            Kind::Messy(Messy::PlusCelsius) => rng.random_range(0..=450),
            _ => rng.random_range(-250..=450),
        };
        Reading {
            reading_id: uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string(),
            taken_at_ms,
            site: match kind {
                Kind::Bad(Bad::UnknownSite) => ["east", "west", "nord"][rng.random_range(0..3)],
                _ => site,
            }
            .to_string(),
            deci_celsius,
            ok: match kind {
                Kind::Messy(Messy::EmptyOk) => None,
                _ if rng.random_bool(0.1) => None,
                _ => Some(rng.random_bool(0.97)),
            },
            samples: rng.random_bool(0.8).then(|| rng.random_range(1..=64)),
            meta: rng.random_bool(0.3).then(|| {
                format!(
                    r#"{{"fw": "1.{}.{}", "battery": 0.{:02}}}"#,
                    rng.random_range(0..5),
                    rng.random_range(0..10),
                    rng.random_range(10..100)
                )
            }),
            kind,
        }
    }

    /// True when the row must reach the table.
    pub fn loads(&self) -> bool {
        !matches!(self.kind, Kind::Bad(_))
    }

    /// `celsius` as PostgreSQL prints a numeric(5,1): `-0.5`, `21.0`.
    pub fn celsius_text(&self) -> String {
        let sign = if self.deci_celsius < 0 { "-" } else { "" };
        let abs = self.deci_celsius.unsigned_abs();
        format!("{sign}{}.{}", abs / 10, abs % 10)
    }

    /// The stored `ok`: the written value, else the column's default `true`.
    pub fn stored_ok(&self) -> bool {
        self.ok.unwrap_or(true)
    }

    /// The NDJSON line (without its line break), written with this reading's quirks.
    pub fn to_ndjson(&self) -> String {
        let time = chrono::DateTime::from_timestamp_millis(self.taken_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let id = match self.kind {
            Kind::Messy(Messy::UrnId) => format!("urn:uuid:{}", self.reading_id),
            _ => self.reading_id.clone(),
        };
        let site = match self.kind {
            Kind::Messy(Messy::PaddedSite) => format!(" {} ", self.site),
            Kind::Messy(Messy::ShoutedSite) => self.site.to_uppercase(),
            _ => self.site.clone(),
        };
        let celsius = match self.kind {
            // A string, so the plus sign reaches the column as written.
            Kind::Messy(Messy::PlusCelsius) => format!("\"+{}\"", self.celsius_text()),
            _ => self.celsius_text(),
        };
        let mut line = format!(
            r#"{{"reading_id": "{id}", "time": "{time}", "site": "{site}", "celsius": {celsius}"#
        );
        match (self.kind, self.ok) {
            (Kind::Messy(Messy::EmptyOk), _) => line.push_str(r#", "ok": """#),
            (_, Some(ok)) => line.push_str(&format!(r#", "ok": {ok}"#)),
            (_, None) => {}
        }
        if let Some(n) = self.samples {
            line.push_str(&format!(r#", "samples": {n}"#));
        }
        if let Some(meta) = &self.meta {
            line.push_str(&format!(r#", "meta": {meta}"#));
        }
        if self.kind == Kind::Bad(Bad::TruncatedJson) {
            // Cut inside the object: no closing brace.
            return line;
        }
        line.push('}');
        line
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn the_example_resource_gives_a_checked_schema_and_gzip_ndjson() {
        let example = Example::load().expect("example");
        assert_eq!(example.schema.table, "Sensor Readings");
        assert_eq!(
            example.source.format,
            sluice_core::config::InputFormat::Ndjson
        );
        assert_eq!(
            example.source.compression,
            sluice_core::config::InputCompression::Gzip
        );
        let config = serde_json::to_value(example.worker_config()).expect("json");
        assert_eq!(config["schema"]["table"], "Sensor Readings");
        assert_eq!(config["source"]["format"], "ndjson");
        // Every column the producer writes is in the schema, under its source name.
        for field in [
            "reading_id",
            "time",
            "site",
            "celsius",
            "ok",
            "samples",
            "meta",
        ] {
            assert!(
                example
                    .schema
                    .columns
                    .iter()
                    .any(|c| c.source_name() == field),
                "{field} is not a column source"
            );
        }
    }

    #[test]
    fn a_broken_example_names_what_is_missing() {
        let err = Example::parse("spec: {}").expect_err("no schema");
        assert!(err.to_string().contains("spec.schema"), "{err}");
    }

    #[test]
    fn lines_are_json_objects_except_truncated_ones() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen_messy = 0;
        for _ in 0..2_000 {
            let r = Reading::draw(&mut rng, 1_764_000_000_123, 0.1, 0.3);
            let line = r.to_ndjson();
            let parsed = serde_json::from_str::<serde_json::Value>(&line);
            if r.kind == Kind::Bad(Bad::TruncatedJson) {
                assert!(parsed.is_err(), "{line}");
                continue;
            }
            let v = parsed.unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(v["time"], "2025-11-24T16:00:00.123Z", "{line}");
            if let Kind::Messy(m) = r.kind {
                seen_messy += 1;
                match m {
                    Messy::PaddedSite => assert_eq!(v["site"], format!(" {} ", r.site)),
                    Messy::ShoutedSite => assert_eq!(v["site"], r.site.to_uppercase()),
                    Messy::UrnId => {
                        assert!(v["reading_id"].as_str().is_some_and(
                            |s| s.strip_prefix("urn:uuid:") == Some(r.reading_id.as_str())
                        ))
                    }
                    Messy::PlusCelsius => {
                        assert_eq!(v["celsius"], format!("+{}", r.celsius_text()))
                    }
                    Messy::EmptyOk => assert_eq!(v["ok"], ""),
                }
            }
        }
        assert!(seen_messy > 400, "{seen_messy}");
    }

    #[test]
    fn celsius_is_printed_like_numeric_5_1() {
        let mut r = Reading::draw(&mut StdRng::seed_from_u64(1), 0, 0.0, 0.0);
        for (deci, text) in [(-5, "-0.5"), (210, "21.0"), (-901, "-90.1"), (7, "0.7")] {
            r.deci_celsius = deci;
            assert_eq!(r.celsius_text(), text);
        }
    }
}
