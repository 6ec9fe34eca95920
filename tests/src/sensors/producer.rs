//! The IoT example's producer: writes [`Reading`]s as gzip'd NDJSON landing files
//! (`sensors-000001.jsonl.gz`) at a configured rate, the way any producer must: under a
//! dot-prefixed temporary name, fsync'd, then renamed (and the directory fsync'd), so a
//! worker never sees a partial file. It runs on a thread of its own until stopped, and
//! can write a manifest (one JSON line per row: file, line and the [`Reading`], with the
//! values the table must hold) for tests to check every row's fate against.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Bad, Kind, Messy, Reading};

/// Suffix of the files written: NDJSON, gzip'd.
pub const SUFFIX: &str = ".jsonl.gz";

/// The producer failed to write.
#[derive(Debug, Error)]
pub enum ProducerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest line {line}: {source}")]
    Manifest {
        line: usize,
        source: serde_json::Error,
    },
    #[error("the producer thread panicked")]
    Panicked,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProducerError {
    let path = path.to_path_buf();
    move |source| ProducerError::Io { what, path, source }
}

/// How the producer writes.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// The landing directory.
    pub landing: PathBuf,
    /// Where to write the manifest, if anywhere.
    pub manifest: Option<PathBuf>,
    /// Rows per second; 0 writes as fast as possible (but see `max_pending_files`).
    pub rows_per_second: u64,
    /// A file is closed once it holds this many rows…
    pub rows_per_file: u64,
    /// …or once it has been open this long, so a slow trickle still lands promptly.
    pub seconds_per_file: f64,
    /// Share of bad rows (quarantined), 0.0 to 1.0.
    pub bad_share: f64,
    /// Share of messy-but-valid rows (cleaned, then loaded), 0.0 to 1.0.
    pub messy_share: f64,
    /// Seed of the random generator.
    pub seed: u64,
    /// Writing pauses while the landing directory holds more files than this.
    pub max_pending_files: usize,
}

impl ProducerOptions {
    /// Defaults for `landing`: 1,000 rows/s, 2,000 rows per file, 1% bad, 3% messy.
    pub fn new(landing: &Path) -> Self {
        ProducerOptions {
            landing: landing.to_path_buf(),
            manifest: None,
            rows_per_second: 1_000,
            rows_per_file: 2_000,
            seconds_per_file: 1.0,
            bad_share: 0.01,
            messy_share: 0.03,
            seed: 1,
            max_pending_files: 1_000,
        }
    }
}

/// What the producer wrote, by kind of row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Produced {
    pub files: u64,
    pub rows: u64,
    /// Rows that must load (plain and messy).
    pub valid: u64,
    pub messy: BTreeMap<Messy, u64>,
    pub bad: BTreeMap<Bad, u64>,
}

impl Produced {
    fn count(&mut self, reading: &Reading) {
        self.rows += 1;
        match reading.kind {
            Kind::Valid => self.valid += 1,
            Kind::Messy(m) => {
                self.valid += 1;
                *self.messy.entry(m).or_default() += 1;
            }
            Kind::Bad(b) => *self.bad.entry(b).or_default() += 1,
        }
    }

    /// Rows that must be quarantined.
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }
}

/// One manifest line: where a reading was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub file: String,
    /// 1-based line number in the decompressed file.
    pub line: u64,
    #[serde(flatten)]
    pub reading: Reading,
}

/// Reads a manifest the producer wrote.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, ProducerError> {
    let file = File::open(path).map_err(io("opening", path))?;
    let mut entries = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io("reading", path))?;
        entries.push(
            serde_json::from_str(&line).map_err(|source| ProducerError::Manifest {
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(entries)
}

/// A producer running on its own thread.
pub struct Producer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Produced, ProducerError>>,
}

impl Producer {
    /// Starts writing.
    pub fn start(options: ProducerOptions) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || produce(&options, &flag));
        Producer { stop, handle }
    }

    /// False once the thread has ended (an error; it only ends on its own after one).
    pub fn running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Stops after the file being filled is written; returns what was written.
    pub fn stop(self) -> Result<Produced, ProducerError> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| ProducerError::Panicked)?
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn produce(options: &ProducerOptions, stop: &AtomicBool) -> Result<Produced, ProducerError> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut manifest = match &options.manifest {
        Some(path) => Some(BufWriter::new(
            File::create(path).map_err(io("creating", path))?,
        )),
        None => None,
    };
    let rows_per_file = options.rows_per_file.max(1) as usize;
    let mut produced = Produced::default();
    let mut pending: Vec<Reading> = Vec::with_capacity(rows_per_file.min(100_000));
    let mut opened = Instant::now();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let written = produced.rows + pending.len() as u64;
        let allowed = match options.rows_per_second {
            0 => u64::MAX,
            rate => (started.elapsed().as_secs_f64() * rate as f64) as u64,
        };
        let open_too_long = opened.elapsed().as_secs_f64() >= options.seconds_per_file
            && options.seconds_per_file > 0.0;
        if pending.len() >= rows_per_file || (!pending.is_empty() && open_too_long) {
            flush(
                options,
                &mut pending,
                &mut produced,
                manifest.as_mut(),
                stop,
            )?;
            opened = Instant::now();
            continue;
        }
        if written >= allowed {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if pending.is_empty() {
            opened = Instant::now();
        }
        let room = (rows_per_file - pending.len()) as u64;
        let now = now_ms();
        for _ in 0..(allowed - written).min(room).min(1_000) {
            pending.push(Reading::draw(
                &mut rng,
                now,
                options.bad_share,
                options.messy_share,
            ));
        }
    }
    if !pending.is_empty() {
        flush(
            options,
            &mut pending,
            &mut produced,
            manifest.as_mut(),
            stop,
        )?;
    }
    if let (Some(m), Some(path)) = (manifest.as_mut(), &options.manifest) {
        m.flush().map_err(io("writing", path))?;
    }
    Ok(produced)
}

/// Writes `pending` as the next file and records it.
fn flush(
    options: &ProducerOptions,
    pending: &mut Vec<Reading>,
    produced: &mut Produced,
    mut manifest: Option<&mut BufWriter<File>>,
    stop: &AtomicBool,
) -> Result<(), ProducerError> {
    // Back-pressure: wait while the workers are far behind (never once stopping).
    while !stop.load(Ordering::Relaxed)
        && landing_files(&options.landing) > options.max_pending_files
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let name = format!("sensors-{:06}{SUFFIX}", produced.files + 1);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for r in pending.iter() {
        let line = r.to_ndjson();
        gz.write_all(line.as_bytes())
            .and_then(|()| gz.write_all(b"\n"))
            .map_err(io("compressing", Path::new(&name)))?;
    }
    let bytes = gz.finish().map_err(io("compressing", Path::new(&name)))?;
    write_atomically(&options.landing, &name, &bytes)?;
    produced.files += 1;
    let path = options.manifest.as_deref().unwrap_or(Path::new("manifest"));
    for (i, reading) in pending.drain(..).enumerate() {
        produced.count(&reading);
        if let Some(m) = manifest.as_mut() {
            let entry = ManifestEntry {
                file: name.clone(),
                line: i as u64 + 1,
                reading,
            };
            serde_json::to_writer(&mut **m, &entry)
                .map_err(std::io::Error::from)
                .and_then(|()| m.write_all(b"\n"))
                .map_err(io("writing", path))?;
        }
    }
    Ok(())
}

/// Landing files in `dir` (what the workers have yet to take).
fn landing_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    sluice_core::landing::is_landing_file_name(&e.file_name().to_string_lossy())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Writes `dir/name` as producers must: a dot-temp name, fsync, rename, fsync the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ProducerError> {
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&temp).map_err(io("creating", &temp))?;
    file.write_all(bytes).map_err(io("writing", &temp))?;
    file.sync_all().map_err(io("syncing", &temp))?;
    drop(file);
    let target = dir.join(name);
    std::fs::rename(&temp, &target).map_err(io("renaming to", &target))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn writes_whole_gzip_files_and_a_manifest_that_matches_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Not in the landing directory: `*.jsonl` is a landing file name.
        let manifest = tempfile::NamedTempFile::new().expect("manifest");
        let mut options = ProducerOptions::new(dir.path());
        options.manifest = Some(manifest.path().to_path_buf());
        options.rows_per_second = 0;
        options.rows_per_file = 250;
        options.bad_share = 0.1;
        options.messy_share = 0.2;
        let producer = Producer::start(options.clone());
        while landing_files(dir.path()) < 4 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let produced = producer.stop().expect("produced");
        assert_eq!(landing_files(dir.path()) as u64, produced.files);
        let entries = read_manifest(manifest.path()).expect("manifest");
        assert_eq!(entries.len() as u64, produced.rows);
        assert_eq!(
            produced.valid + produced.bad_total(),
            produced.rows,
            "{produced:?}"
        );
        assert!(produced.bad_total() > 0 && !produced.messy.is_empty());
        // Each manifest entry is the line the file holds.
        let first = &entries[0];
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(dir.path().join(&first.file)).expect("file"))
            .read_to_string(&mut text)
            .expect("gunzip");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 250);
        for e in entries.iter().filter(|e| e.file == first.file) {
            assert_eq!(lines[e.line as usize - 1], e.reading.to_ndjson());
        }
        // No temporary file is left behind.
        assert!(
            std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        );
    }

    #[test]
    fn keeps_to_the_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = ProducerOptions::new(dir.path());
        options.rows_per_second = 2_000;
        options.seconds_per_file = 0.2;
        let producer = Producer::start(options);
        std::thread::sleep(Duration::from_millis(1_000));
        let produced = producer.stop().expect("produced");
        assert!(
            (1_500..=2_600).contains(&produced.rows),
            "{} rows in about 1 s at 2,000/s",
            produced.rows
        );
        assert!(produced.files >= 3, "{} files", produced.files);
    }
}
