//! The end-of-test check of the delivery guarantee: compares what PostgreSQL holds with
//! what the generator says it wrote (its manifest plus the files themselves).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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

/// What the database must hold after every file was ingested.
#[derive(Debug, Default)]
pub struct Expected {
    pub files: BTreeSet<String>,
    pub valid_ids: HashSet<Uuid>,
    /// (file, line) → reason code.
    pub rejects: BTreeMap<(String, i64), String>,
}

impl Expected {
    pub fn valid_rows(&self) -> usize {
        self.valid_ids.len()
    }
}

/// Builds the expectation from the manifest and a copy of the files (event ids of the
/// valid lines are read from the files: the manifest lists only the bad lines).
pub fn expected(manifest: &[ManifestFile], files_dir: &Path) -> Result<Expected> {
    let mut exp = Expected::default();
    for m in manifest {
        exp.files.insert(m.file.clone());
        let bad: HashSet<u64> = m.bad_lines.iter().map(|(l, _)| *l).collect();
        for (line, reason) in &m.bad_lines {
            exp.rejects
                .insert((m.file.clone(), *line as i64), reason.clone());
        }
        let path = files_dir.join(&m.file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut valid_here = 0u64;
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_no = i as u64 + 1;
            if line_no == 1 || raw.is_empty() || bad.contains(&line_no) {
                continue;
            }
            let id_field = raw.split(|b| *b == b',').next().unwrap_or_default();
            let id = Uuid::try_parse_ascii(id_field)
                .with_context(|| format!("{}:{line_no}: valid line without a UUID", m.file))?;
            if !exp.valid_ids.insert(id) {
                bail!(
                    "{}:{line_no}: event id {id} appears twice in the generated data",
                    m.file
                );
            }
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

/// Asserts exactly-once: every valid event id once in `events`, nothing else there;
/// every rejected line once in `quarantine` with the expected reason; every file once
/// in the ledger as loaded. Returns a one-line summary.
pub async fn check_exactly_once(client: &tokio_postgres::Client, exp: &Expected) -> Result<String> {
    let mut problems = Vec::new();

    let rows = client.query("SELECT event_id FROM events", &[]).await?;
    let mut seen: HashMap<Uuid, u32> = HashMap::with_capacity(rows.len());
    for r in &rows {
        *seen.entry(r.get::<_, Uuid>(0)).or_default() += 1;
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
        .take(5)
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
            "{} rejected lines missing from quarantine, e.g. {q_missing:?}",
            exp.rejects.keys().filter(|k| !got.contains_key(*k)).count()
        ));
    }
    if !q_extra.is_empty() {
        problems.push(format!("unexpected quarantine rows, e.g. {q_extra:?}"));
    }
    if !q_wrong.is_empty() {
        problems.push(format!("wrong reasons: {q_wrong:?}"));
    }

    let ledger = client
        .query("SELECT file_name, outcome FROM sluice_files", &[])
        .await?;
    let ledger_files: BTreeSet<String> = ledger.iter().map(|r| r.get(0)).collect();
    if ledger_files.len() != ledger.len() {
        problems.push("a file appears twice in the ledger".into());
    }
    let not_loaded: Vec<String> = ledger
        .iter()
        .filter(|r| r.get::<_, String>(1) != "loaded")
        .map(|r| r.get(0))
        .collect();
    if !not_loaded.is_empty() {
        problems.push(format!("files not loaded: {not_loaded:?}"));
    }
    let l_missing = exp.files.difference(&ledger_files).count();
    let l_extra = ledger_files.difference(&exp.files).count();
    if l_missing > 0 || l_extra > 0 {
        problems.push(format!(
            "ledger: {l_missing} files missing, {l_extra} unexpected"
        ));
    }

    if problems.is_empty() {
        Ok(format!(
            "exactly once: {} valid rows, {} rejected rows, {} files",
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
