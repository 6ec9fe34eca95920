//! The end-of-test check of the delivery guarantee: compares what PostgreSQL holds with
//! what the generator says it wrote (its manifest plus the files themselves).
//!
//! The expectation is built from the generated files by this module's own small parser
//! (generated valid rows are plain, unquoted CSV), never by the worker's validation code,
//! which is what is under test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use uuid::Uuid;

/// One line of the generator's manifest (JSON lines).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    pub file: String,
    pub rows: u64,
    pub valid_rows: u64,
    /// `[line, reject reason code]`, line numbers 1-based with the header as line 1.
    #[serde(default)]
    pub bad_lines: Vec<(u64, String)>,
    /// Messy-but-valid lines (`--messy-row-share`): valid rows the worker must store
    /// cleaned.
    #[serde(default)]
    pub messy_lines: Vec<MessyLine>,
}

/// One messy-but-valid line of the manifest: `column` holds `raw` in the file and must
/// hold `cleaned` in `events`; the worker counts `rules` for it.
#[derive(Debug, Clone, Deserialize)]
pub struct MessyLine {
    pub line: u64,
    pub kind: String,
    /// The stored (lower-case, hyphenated) event id.
    pub event_id: String,
    pub column: String,
    pub raw: String,
    pub cleaned: String,
    #[serde(default)]
    pub rules: Vec<String>,
}

impl MessyLine {
    /// Puts the cleaned value into `values` (the line's values as written).
    pub fn apply(&self, values: &mut EventValues) -> Result<()> {
        let cleaned = self.cleaned.clone();
        match self.column.as_str() {
            "session_id" => values.session_id = cleaned,
            "event_type" => values.event_type = cleaned,
            "category" => values.category = cleaned,
            // The id is compared as a UUID, whatever its case.
            "event_id" => {}
            other => bail!("line {}: no cleaning expected in column {other}", self.line),
        }
        Ok(())
    }
}

pub fn read_manifest(path: &Path) -> Result<Vec<ManifestFile>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening manifest {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("manifest line {}: {line}", i + 1))?,
        );
    }
    Ok(out)
}

/// What the ledger must say about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCounts {
    pub valid_rows: u64,
    pub rejected_rows: u64,
}

/// Where a valid row comes from, and a digest of its values (see [`row_digest`]): the
/// values themselves would cost ~10x the memory for the big datasets of the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedRow {
    pub digest: u64,
    /// Index into [`Expected::file_names`].
    pub file: u32,
    pub line: u32,
}

/// What the database must hold after every file was ingested.
#[derive(Debug, Default)]
pub struct Expected {
    /// File name → what its ledger row must count.
    pub files: BTreeMap<String, FileCounts>,
    pub valid_ids: HashSet<Uuid>,
    /// Event id → digest and origin of the row's values.
    pub rows: HashMap<Uuid, ExpectedRow>,
    /// The manifest's file names, in manifest order (indexed by [`ExpectedRow::file`]).
    pub file_names: Vec<String>,
    /// (file, line) → reason code.
    pub rejects: BTreeMap<(String, i64), String>,
    /// Where the files were read from (to quote an expected line in a failure message).
    pub source_dir: PathBuf,
}

impl Expected {
    pub fn valid_rows(&self) -> usize {
        self.valid_ids.len()
    }
}

/// The values of one `events` row, as the test compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventValues {
    pub event_time: DateTime<Utc>,
    pub user_id: i64,
    pub session_id: String,
    pub event_type: String,
    pub product_id: i64,
    pub category: String,
    /// The decimal text (`12.30`), compared by value: see [`canonical_decimal`].
    pub price: String,
    pub quantity: i32,
}

impl EventValues {
    /// Parses a valid generated line (one CSV record, no terminator) into its id and
    /// values. The `csv` crate reads it (RFC 4180 quoting), so the tests' expectation
    /// does not depend on the worker's own splitter.
    pub fn parse_line(line: &str) -> Result<(Uuid, EventValues)> {
        let record = csv::ReaderBuilder::new()
            .has_headers(false)
            .buffer_capacity(line.len().max(64))
            .from_reader(line.as_bytes())
            .records()
            .next()
            .context("an empty line")?
            .context("not one CSV record")?;
        let f: Vec<&str> = record.iter().collect();
        let [
            id,
            time,
            user,
            session,
            etype,
            product,
            category,
            price,
            quantity,
        ] = f[..]
        else {
            bail!("{} fields instead of 9", f.len());
        };
        let values = EventValues {
            event_time: DateTime::parse_from_rfc3339(time)
                .with_context(|| format!("event_time {time:?}"))?
                .with_timezone(&Utc),
            user_id: user.parse().with_context(|| format!("user_id {user:?}"))?,
            session_id: session.into(),
            event_type: etype.into(),
            product_id: product
                .parse()
                .with_context(|| format!("product_id {product:?}"))?,
            category: category.into(),
            price: price.into(),
            quantity: quantity
                .parse()
                .with_context(|| format!("quantity {quantity:?}"))?,
        };
        Ok((Uuid::try_parse(id).context("event_id")?, values))
    }

    /// One string per row that is equal exactly when the values are equal: the time in
    /// UTC to the microsecond (PostgreSQL's precision), the price by numeric value.
    pub fn canonical(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.event_time.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.user_id,
            self.session_id,
            self.event_type,
            self.product_id,
            self.category,
            canonical_decimal(&self.price),
            self.quantity
        )
    }
}

/// A decimal's text with the same value always written the same way: `12.30`, `12.3`
/// and `+12.300` → `12.3`; `7.00` → `7`; `-0.00` → `0`. Text that is not a plain decimal
/// is returned unchanged (and so compares unequal to any number).
pub fn canonical_decimal(text: &str) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !plain(int) || !plain(frac) {
        return text.to_string();
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let sign = if negative && !(int.is_empty() && frac.is_empty()) {
        "-"
    } else {
        ""
    };
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// A digest of [`EventValues::canonical`] (stable within one test process).
pub fn row_digest(values: &EventValues) -> u64 {
    let mut h = DefaultHasher::new();
    values.canonical().hash(&mut h);
    h.finish()
}

/// Builds the expectation from the manifest and a copy of the files (the valid lines'
/// values are read from the files: the manifest lists only the bad lines).
pub fn expected(manifest: &[ManifestFile], files_dir: &Path) -> Result<Expected> {
    let mut exp = Expected {
        source_dir: files_dir.to_path_buf(),
        ..Expected::default()
    };
    for (file_index, m) in manifest.iter().enumerate() {
        let counts = FileCounts {
            valid_rows: m.valid_rows,
            rejected_rows: m.bad_lines.len() as u64,
        };
        if exp.files.insert(m.file.clone(), counts).is_some() {
            bail!("{}: twice in the manifest", m.file);
        }
        exp.file_names.push(m.file.clone());
        let bad: HashSet<u64> = m.bad_lines.iter().map(|(l, _)| *l).collect();
        let messy: HashMap<u64, &MessyLine> = m.messy_lines.iter().map(|l| (l.line, l)).collect();
        for (line, reason) in &m.bad_lines {
            exp.rejects
                .insert((m.file.clone(), *line as i64), reason.clone());
        }
        let path = files_dir.join(&m.file);
        let (bytes, ndjson) =
            read_decoded(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut valid_here = 0u64;
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_no = i as u64 + 1;
            if (line_no == 1 && !ndjson) || raw.is_empty() || bad.contains(&line_no) {
                continue;
            }
            let (id, mut values) = std::str::from_utf8(raw)
                .context("not UTF-8")
                .and_then(|line| {
                    if ndjson {
                        EventValues::parse_line(&json_line_to_csv(line)?)
                    } else {
                        EventValues::parse_line(line)
                    }
                })
                .with_context(|| format!("{}:{line_no}: a valid line that is not", m.file))?;
            if let Some(messy) = messy.get(&line_no) {
                messy
                    .apply(&mut values)
                    .with_context(|| format!("{}:{line_no}", m.file))?;
            }
            if !exp.valid_ids.insert(id) {
                bail!(
                    "{}:{line_no}: event id {id} appears twice in the generated data",
                    m.file
                );
            }
            let row = ExpectedRow {
                digest: row_digest(&values),
                file: u32::try_from(file_index)?,
                line: u32::try_from(line_no)?,
            };
            exp.rows.insert(id, row);
            valid_here += 1;
        }
        if valid_here != m.valid_rows {
            bail!(
                "{}: manifest says {} valid rows, file has {valid_here}",
                m.file,
                m.valid_rows
            );
        }
    }
    Ok(exp)
}

/// The decompressed content of a generated file (by its suffix) and whether it is NDJSON.
pub fn read_decoded(path: &Path) -> Result<(Vec<u8>, bool)> {
    use std::io::Read;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = sluice_core::landing::suffix_of(&name)
        .with_context(|| format!("{name} is not a landing file name"))?;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    match suffix.compression {
        sluice_core::config::InputCompression::Gzip => {
            flate2::read::MultiGzDecoder::new(file).read_to_end(&mut bytes)?;
        }
        sluice_core::config::InputCompression::Zstd => {
            zstd::stream::read::Decoder::new(file)?.read_to_end(&mut bytes)?;
        }
        _ => {
            std::io::BufReader::new(file).read_to_end(&mut bytes)?;
        }
    }
    Ok((
        bytes,
        suffix.format == sluice_core::config::InputFormat::Ndjson,
    ))
}

/// A generated NDJSON line as the CSV line with the same values (strings as they are,
/// numbers as written).
pub fn json_line_to_csv(line: &str) -> Result<String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).context("not a JSON object")?;
    let fields: Vec<String> = sluice_core::event::HEADER_FIELDS
        .iter()
        .map(|name| match object.get(*name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        })
        .collect();
    Ok(fields.join(","))
}

/// Finds where a generated file is now: the landing dir itself, its archive, or failed/.
pub fn locate(landing: &Path, name: &str) -> Option<PathBuf> {
    let direct = landing.join(name);
    if direct.exists() {
        return Some(direct);
    }
    let archive = landing.join("archive");
    std::fs::read_dir(&archive).ok()?.flatten().find_map(|day| {
        let p = day.path().join(name);
        p.exists().then_some(p)
    })
}

/// Asserts exactly-once: every valid row once in `events` with the values of its line,
/// nothing else there; every rejected line once in `quarantine` with the expected reason;
/// every file in the ledger once, as loaded, with its manifest's counts. Returns a
/// one-line summary.
pub async fn check_exactly_once(client: &tokio_postgres::Client, exp: &Expected) -> Result<String> {
    let mut problems = check_events(client, exp).await?;
    problems.extend(check_quarantine(client, exp).await?);
    problems.extend(check_ledger(client, exp).await?);
    if problems.is_empty() {
        Ok(format!(
            "exactly once: {} valid rows (values checked), {} rejected rows, {} files",
            exp.valid_ids.len(),
            exp.rejects.len(),
            exp.files.len()
        ))
    } else {
        bail!(
            "delivery guarantee violated:\n  - {}",
            problems.join("\n  - ")
        )
    }
}

/// `events` has no key (by design, for COPY speed): a duplicate is only prevented by the
/// ledger protocol, so counting ids here checks the protocol, not a constraint.
async fn check_events(client: &tokio_postgres::Client, exp: &Expected) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let stream = client
        .query_raw(
            "SELECT event_id, event_time, user_id, session_id, event_type, product_id, \
                    category, price::text, quantity FROM events",
            std::iter::empty::<i32>(),
        )
        .await?;
    futures::pin_mut!(stream);
    let mut seen: HashMap<Uuid, u32> = HashMap::with_capacity(exp.rows.len());
    let (mut wrong, mut wrong_examples) = (0usize, Vec::new());
    while let Some(r) = stream.try_next().await? {
        let id: Uuid = r.try_get(0)?;
        *seen.entry(id).or_default() += 1;
        let Some(want) = exp.rows.get(&id) else {
            continue;
        };
        let stored = EventValues {
            event_time: r.try_get(1)?,
            user_id: r.try_get(2)?,
            session_id: r.try_get(3)?,
            event_type: r.try_get(4)?,
            product_id: r.try_get(5)?,
            category: r.try_get(6)?,
            price: r.try_get(7)?,
            quantity: r.try_get(8)?,
        };
        if row_digest(&stored) != want.digest {
            wrong += 1;
            if wrong_examples.len() < 5 {
                let file = &exp.file_names[want.file as usize];
                wrong_examples.push(format!(
                    "{id} from {file}:{}: stored {}, expected {}",
                    want.line,
                    stored.canonical(),
                    expected_canonical(exp, file, want.line)
                ));
            }
        }
    }
    let dupes = seen.values().filter(|n| **n > 1).count();
    let missing = exp
        .valid_ids
        .iter()
        .filter(|id| !seen.contains_key(id))
        .count();
    let unexpected = seen.keys().filter(|id| !exp.valid_ids.contains(id)).count();
    if dupes > 0 {
        problems.push(format!("{dupes} event ids stored more than once"));
    }
    if missing > 0 {
        problems.push(format!("{missing} valid rows missing from events"));
    }
    if unexpected > 0 {
        problems.push(format!("{unexpected} unexpected event ids in events"));
    }
    if wrong > 0 {
        problems.push(format!(
            "{wrong} stored rows differ from their line, e.g.:\n      {}",
            wrong_examples.join("\n      ")
        ));
    }
    Ok(problems)
}

/// The canonical values of `file`'s line `line`, read back for a failure message from
/// where the files were generated or, once moved, from anywhere near it (landing,
/// archive). Only on the failure path, so a directory walk is fine.
fn expected_canonical(exp: &Expected, file: &str, line: u32) -> String {
    let direct = exp.source_dir.join(file);
    let found = if direct.exists() {
        Some(direct)
    } else {
        exp.source_dir
            .parent()
            .and_then(|root| find_file(root, file, 4))
    };
    let Some(path) = found else {
        return format!("(line not found: {file} moved away)");
    };
    let text = std::fs::read(&path).unwrap_or_default();
    text.split(|b| *b == b'\n')
        .nth(line as usize - 1)
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(|raw| EventValues::parse_line(raw).ok())
        .map(|(_, v)| v.canonical())
        .unwrap_or_else(|| format!("(line {line} of {} unreadable)", path.display()))
}

fn find_file(dir: &Path, name: &str, depth: u32) -> Option<PathBuf> {
    let entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    if let Some(e) = entries.iter().find(|e| e.file_name() == name) {
        return Some(e.path());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_file(&e.path(), name, depth - 1))
}

/// Since V3 the unique key of `quarantine` includes the file's digest (a reused file
/// name is a new file), so the same line of the same file twice is no longer prevented
/// by a constraint: counting duplicates checks the worker.
async fn check_quarantine(client: &tokio_postgres::Client, exp: &Expected) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let q = client
        .query(
            "SELECT source_file, line_number, reason FROM quarantine",
            &[],
        )
        .await?;
    let mut got: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for r in &q {
        got.entry((r.get(0), r.get(1))).or_default().push(r.get(2));
    }
    let q_dupes = got.values().filter(|v| v.len() > 1).count();
    let q_missing: Vec<_> = exp
        .rejects
        .keys()
        .filter(|k| !got.contains_key(*k))
        .collect();
    let q_extra: Vec<_> = got
        .keys()
        .filter(|k| !exp.rejects.contains_key(*k))
        .take(5)
        .collect();
    let q_wrong: Vec<_> = exp
        .rejects
        .iter()
        .filter_map(|(k, want)| {
            got.get(k)
                .and_then(|v| v.first())
                .filter(|have| *have != want)
                .map(|have| format!("{}:{} expected {want}, got {have}", k.0, k.1))
        })
        .take(5)
        .collect();
    if q_dupes > 0 {
        problems.push(format!(
            "{q_dupes} rejected lines quarantined more than once"
        ));
    }
    if !q_missing.is_empty() {
        problems.push(format!(
            "{} rejected lines missing from quarantine, e.g. {:?}",
            q_missing.len(),
            &q_missing[..q_missing.len().min(5)]
        ));
    }
    if !q_extra.is_empty() {
        problems.push(format!("unexpected quarantine rows, e.g. {q_extra:?}"));
    }
    if !q_wrong.is_empty() {
        problems.push(format!("wrong reasons: {q_wrong:?}"));
    }
    Ok(problems)
}

/// One ledger row per generated file, `loaded`, with the manifest's counts. Since V3 the
/// ledger's key is (pipeline, file name, content digest), so one name with two rows is
/// not prevented by a constraint: it would mean the worker saw two contents (a digest of
/// a partly read file) or left a `partial` row behind.
async fn check_ledger(client: &tokio_postgres::Client, exp: &Expected) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let ledger = client
        .query(
            "SELECT file_name, outcome, rows_loaded, rows_rejected FROM sluice_files",
            &[],
        )
        .await?;
    let mut by_name: BTreeMap<String, Vec<(String, i64, i64)>> = BTreeMap::new();
    for r in &ledger {
        by_name
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    let mut wrong = Vec::new();
    for (name, want) in &exp.files {
        match by_name.get(name).map(Vec::as_slice) {
            None => wrong.push(format!("{name}: not in the ledger")),
            Some([(outcome, loaded, rejected)]) => {
                let counts = (*loaded as u64, *rejected as u64);
                if outcome != "loaded" || counts != (want.valid_rows, want.rejected_rows) {
                    wrong.push(format!(
                        "{name}: {outcome} with {loaded} rows loaded and {rejected} rejected, \
                         expected loaded with {} and {}",
                        want.valid_rows, want.rejected_rows
                    ));
                }
            }
            Some(rows) => wrong.push(format!("{name}: {} ledger rows {rows:?}", rows.len())),
        }
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "{} files with a wrong ledger entry, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        ));
    }
    let extra: Vec<&String> = by_name
        .keys()
        .filter(|n| !exp.files.contains_key(*n))
        .collect();
    if !extra.is_empty() {
        problems.push(format!(
            "{} unexpected files in the ledger, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        ));
    }
    Ok(problems)
}

/// Nothing left behind once every file is settled and the workers are stopped or idle:
/// no claim in `sluice_claims` (a committed file's claim goes with its commit) and no
/// `plans/*.json` in the given checkpoint directories (a plan is deleted once its
/// batch's commit is recorded). Pass only directories of workers still running or
/// stopped cleanly: a worker killed for good leaves its plans for its return.
pub async fn check_no_leftovers(
    client: &tokio_postgres::Client,
    checkpoint_dirs: &[PathBuf],
) -> Result<()> {
    let mut problems = Vec::new();
    let claims = client
        .query(
            "SELECT file_name, worker_id FROM sluice_claims ORDER BY file_name",
            &[],
        )
        .await?;
    if !claims.is_empty() {
        let some: Vec<(String, String)> = claims
            .iter()
            .take(5)
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        problems.push(format!(
            "{} claims left in sluice_claims, e.g. {some:?}",
            claims.len()
        ));
    }
    for dir in checkpoint_dirs {
        let plans = dir.join("plans");
        let left: Vec<String> = match std::fs::read_dir(&plans) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => bail!("listing {}: {e}", plans.display()),
        };
        if !left.is_empty() {
            problems.push(format!(
                "{} plans left in {}: {left:?}",
                left.len(),
                plans.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("left over:\n  - {}", problems.join("\n  - "))
    }
}

/// No landing file (`*.csv`, `*.ndjson.gz`…) left at the top of the landing directory (every file archived or set
/// aside after its commit).
pub fn check_landing_drained(landing: &Path) -> Result<()> {
    let left: Vec<String> = std::fs::read_dir(landing)
        .with_context(|| format!("listing {}", landing.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| sluice_core::landing::is_landing_file_name(n))
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} files left in the landing zone, e.g. {:?}",
            left.len(),
            &left[..left.len().min(5)]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(canonical_decimal("12.30"), "12.3");
        assert_eq!(canonical_decimal("12.3"), "12.3");
        assert_eq!(canonical_decimal("+012.300"), "12.3");
        assert_eq!(canonical_decimal("7.00"), "7");
        assert_eq!(canonical_decimal("0.05"), "0.05");
        assert_eq!(canonical_decimal("-0.00"), "0");
        assert_eq!(canonical_decimal("-1.50"), "-1.5");
        assert_ne!(canonical_decimal("12.30"), canonical_decimal("12.03"));
        assert_eq!(canonical_decimal("12.30x"), "12.30x");
        assert_eq!(canonical_decimal("."), ".");
    }

    #[test]
    fn a_line_and_its_stored_row_have_one_canonical_form() {
        let line = "7f0c6a52-3f7e-4a8e-9a43-0c1d6f7d2b11,2026-11-25T00:00:01.250Z,42,\
                    00000000000000ab,purchase,9001,books,12.30,2";
        let (id, parsed) = EventValues::parse_line(line).expect("parses");
        assert_eq!(id.to_string(), "7f0c6a52-3f7e-4a8e-9a43-0c1d6f7d2b11");
        // As tokio-postgres returns it: the instant in UTC, `price::text` with its scale.
        let stored = EventValues {
            event_time: DateTime::parse_from_rfc3339("2026-11-25T01:00:01.25+01:00")
                .expect("time")
                .with_timezone(&Utc),
            price: "12.3".into(),
            ..parsed.clone()
        };
        assert_eq!(row_digest(&parsed), row_digest(&stored));
        for changed in [
            EventValues {
                quantity: 3,
                ..parsed.clone()
            },
            EventValues {
                price: "12.31".into(),
                ..parsed.clone()
            },
            EventValues {
                event_time: parsed.event_time + chrono::Duration::microseconds(1),
                ..parsed.clone()
            },
            EventValues {
                category: "book".into(),
                ..parsed.clone()
            },
        ] {
            assert_ne!(row_digest(&parsed), row_digest(&changed), "{changed:?}");
        }
    }

    #[test]
    fn quoted_fields_are_read_as_csv() {
        let line = "7f0c6a52-3f7e-4a8e-9a43-0c1d6f7d2b11,2026-11-25T10:00:00Z,42,\
                    \"s,1 \"\"x\"\"\",purchase,9001,books,12.30,2";
        let (_, v) = EventValues::parse_line(line).expect("parses");
        assert_eq!(v.session_id, "s,1 \"x\"");
    }

    #[test]
    fn malformed_valid_lines_are_refused() {
        assert!(EventValues::parse_line("a,b,c").is_err());
        let bad_time = "7f0c6a52-3f7e-4a8e-9a43-0c1d6f7d2b11,2026-13-45 25:61,42,\
                        00000000000000ab,purchase,9001,books,12.30,2";
        assert!(EventValues::parse_line(bad_time).is_err());
    }
}
