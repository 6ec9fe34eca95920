//! Landing files appear atomically: rows go to a dot-prefixed temporary file in the
//! landing directory, which is fsync'd and then renamed to its final name (`*.csv`, or
//! `*.ndjson`, optionally followed by `.gz` or `.zst`), and the directory is fsync'd so
//! the rename survives a crash. A killed generator leaves at most a `.events-*.tmp`
//! file, which the next start removes.
//!
//! NDJSON files are written by turning each generated CSV row into one JSON object with
//! the header's names as keys ([`csv_line_to_json`]); a compressed file is compressed
//! as it is written.
//!
//! Also the manifest: one JSON line per finished file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sluice_core::HEADER;
use sluice_core::RejectReason;
use sluice_core::config::{OutputCompression, OutputFormat};

use crate::defects::DefectKind;
use crate::error::GeneratorError;
use crate::messy::{MessyKind, MessyLine};

/// Prefix of the temporary files this generator writes.
pub const TEMP_PREFIX: &str = ".events-";
/// Suffix of the temporary files this generator writes.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Rows are encoded into a buffer of about this size, then written with one call.
const WRITE_CHUNK: usize = 1 << 20;

/// How often a name is tried with the next sequence number when the final name is
/// already taken (e.g. a restart within the same second as a previous run).
const NAME_ATTEMPTS: u64 = 1_000;

/// The final name of a plain CSV landing file.
pub fn file_name(first_event: &str, seq: u64) -> String {
    file_name_with(first_event, seq, Encoding::default())
}

/// The final name of a landing file written with `encoding`.
pub fn file_name_with(first_event: &str, seq: u64, encoding: Encoding) -> String {
    format!(
        "events-{first_event}-{seq:08}{}{}",
        encoding.format.extension(),
        encoding.compression.extension()
    )
}

/// How files are written: format and compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoding {
    pub format: OutputFormat,
    pub compression: OutputCompression,
}

/// Where the bytes of a file go: straight to it, or through a compressor.
enum Sink {
    Plain(File),
    Gzip(flate2::write::GzEncoder<File>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Plain(_) => "Plain",
            Sink::Gzip(_) => "Gzip",
            Sink::Zstd(_) => "Zstd",
        })
    }
}

impl Sink {
    fn new(file: File, compression: OutputCompression) -> io::Result<Sink> {
        Ok(match compression {
            OutputCompression::None => Sink::Plain(file),
            OutputCompression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            )),
            OutputCompression::Zstd => Sink::Zstd(zstd::stream::write::Encoder::new(file, 3)?),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.write_all(bytes),
            Sink::Gzip(e) => e.write_all(bytes),
            Sink::Zstd(e) => e.write_all(bytes),
        }
    }

    /// Ends the compressed stream; the file back.
    fn finish(self) -> io::Result<File> {
        match self {
            Sink::Plain(f) => Ok(f),
            Sink::Gzip(e) => e.finish(),
            Sink::Zstd(e) => e.finish(),
        }
    }
}

/// Appends the CSV line `line` (a generated row: plain fields, no quotes, ending in
/// `\n`) to `out` as one JSON object line with the header's names as keys. Fields that
/// are plain JSON numbers are written as numbers, the others as strings (their bytes as
/// they are, so a non-UTF-8 defect stays non-UTF-8). A row with another number of
/// fields than the header (the wrong-column-count defect) is written as an object that
/// never closes: a broken JSON line, rejected as `bad_json`.
pub fn csv_line_to_json(line: &[u8], out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let fields: Vec<&[u8]> = line.split(|b| *b == b',').collect();
    let names = sluice_core::event::HEADER_FIELDS;
    out.push(b'{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(names.get(i).copied().unwrap_or("extra").as_bytes());
        out.extend_from_slice(b"\":");
        if is_json_number(field) {
            out.extend_from_slice(field);
        } else {
            out.push(b'"');
            for &b in *field {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    0..0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                    _ => out.push(b),
                }
            }
            out.push(b'"');
        }
    }
    if fields.len() == names.len() {
        out.push(b'}');
    }
    out.push(b'\n');
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`: a number JSON accepts, written as the CSV has it.
fn is_json_number(field: &[u8]) -> bool {
    let digits = field.strip_prefix(b"-").unwrap_or(field);
    let (int, frac) = match digits.iter().position(|b| *b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && (int.len() == 1 || int[0] != b'0')
        && frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
}

/// Removes stale temporary files of a previous (killed) run. Returns how many.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize, GeneratorError> {
    let entries = fs::read_dir(dir).map_err(|e| GeneratorError::io("listing", dir, e))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(GeneratorError::io("removing stale", &path, e)),
            }
        }
    }
    Ok(removed)
}

/// A landing file being written.
#[derive(Debug)]
pub struct LandingFile {
    dir: PathBuf,
    /// Time part of the name (`YYYYMMDDTHHMMSSZ`).
    stamp: String,
    seq: u64,
    temp_path: PathBuf,
    sink: Sink,
    encoding: Encoding,
    buf: Vec<u8>,
    /// Where the row being written starts in `buf` (NDJSON rows are converted there).
    row_start: usize,
    /// Scratch space for one NDJSON line.
    json: Vec<u8>,
    fsync: bool,
}

/// A file made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub name: String,
    pub bytes: u64,
    /// The sequence number actually used (higher than asked if the name was taken).
    pub seq: u64,
}

impl LandingFile {
    /// Creates the temporary file and writes the header.
    pub fn create(
        dir: &Path,
        stamp: &str,
        seq: u64,
        fsync: bool,
    ) -> Result<LandingFile, GeneratorError> {
        LandingFile::create_with(dir, stamp, seq, fsync, Encoding::default())
    }

    /// Creates the temporary file of a file written with `encoding` (and, for CSV,
    /// writes the header).
    pub fn create_with(
        dir: &Path,
        stamp: &str,
        seq: u64,
        fsync: bool,
        encoding: Encoding,
    ) -> Result<LandingFile, GeneratorError> {
        let ext = format!(
            "{}{}",
            encoding.format.extension(),
            encoding.compression.extension()
        );
        let temp_path = dir.join(format!("{TEMP_PREFIX}{stamp}-{seq:08}{ext}{TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)
            .map_err(|e| GeneratorError::io("creating", &temp_path, e))?;
        let sink = Sink::new(file, encoding.compression)
            .map_err(|e| GeneratorError::io("creating", &temp_path, e))?;
        let mut buf = Vec::with_capacity(WRITE_CHUNK + 4096);
        if encoding.format == OutputFormat::Csv {
            buf.extend_from_slice(HEADER.as_bytes());
            buf.push(b'\n');
        }
        Ok(LandingFile {
            dir: dir.to_path_buf(),
            stamp: stamp.to_string(),
            seq,
            temp_path,
            sink,
            encoding,
            row_start: buf.len(),
            buf,
            json: Vec::new(),
            fsync,
        })
    }

    /// The buffer to append the next row to; call [`LandingFile::row_done`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the buffer out once it is large enough.
    pub fn row_done(&mut self) -> Result<(), GeneratorError> {
        if self.encoding.format == OutputFormat::Ndjson {
            self.json.clear();
            csv_line_to_json(&self.buf[self.row_start..], &mut self.json);
            self.buf.truncate(self.row_start);
            self.buf.extend_from_slice(&self.json);
        }
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        self.row_start = self.buf.len();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), GeneratorError> {
        self.sink
            .write_all(&self.buf)
            .map_err(|e| GeneratorError::io("writing", &self.temp_path, e))?;
        self.buf.clear();
        self.row_start = 0;
        Ok(())
    }

    /// Flushes and fsyncs the file, renames it to its final name and fsyncs the directory.
    pub fn finish(mut self) -> Result<Finished, GeneratorError> {
        self.flush()?;
        let file = self
            .sink
            .finish()
            .map_err(|e| GeneratorError::io("writing", &self.temp_path, e))?;
        if self.fsync {
            file.sync_all()
                .map_err(|e| GeneratorError::io("syncing", &self.temp_path, e))?;
        }
        let bytes = file
            .metadata()
            .map_err(|e| GeneratorError::io("reading the size of", &self.temp_path, e))?
            .len();
        drop(file);
        let mut seq = self.seq;
        let (name, path) = loop {
            let name = file_name_with(&self.stamp, seq, self.encoding);
            let path = self.dir.join(&name);
            // Only this process writes these names, so checking first is race-free
            // enough; it never overwrites a pending file of an earlier run.
            if !path.exists() || seq >= self.seq + NAME_ATTEMPTS {
                break (name, path);
            }
            seq += 1;
        };
        if path.exists() {
            return Err(GeneratorError::NameTaken { path });
        }
        fs::rename(&self.temp_path, &path)
            .map_err(|e| GeneratorError::io("renaming", &self.temp_path, e))?;
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(Finished { name, bytes, seq })
    }

    /// Removes the temporary file (nothing becomes visible).
    pub fn discard(self) -> Result<(), GeneratorError> {
        drop(self.sink);
        fs::remove_file(&self.temp_path)
            .map_err(|e| GeneratorError::io("removing", &self.temp_path, e))
    }
}

fn sync_dir(dir: &Path) -> Result<(), GeneratorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| GeneratorError::io("syncing directory", dir, e))
}

/// What the manifest says about one file.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub file: String,
    pub rows: u64,
    pub valid_rows: u64,
    /// Bad rows by defect kind (kinds that occurred only).
    pub bad_rows: BTreeMap<&'static str, u64>,
    /// `[line, reason code]`, 1-based, the header being line 1.
    pub bad_lines: Vec<(u64, &'static str)>,
    /// Messy-but-valid rows by kind (kinds that occurred only; counted in `valid_rows`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub messy_rows: BTreeMap<&'static str, u64>,
    /// Each messy line: the column, the value written, the value the worker must store
    /// and the cleaning rules it counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messy_lines: Vec<MessyLine>,
}

/// Per-file bookkeeping of bad rows, reused from file to file.
#[derive(Debug, Default)]
pub struct FileStats {
    pub rows: u64,
    pub bad_by_kind: [u64; DefectKind::ALL.len()],
    pub bad_lines: Vec<(u64, DefectKind)>,
    pub messy_by_kind: [u64; MessyKind::ALL.len()],
    pub messy_lines: Vec<MessyLine>,
    /// The file is NDJSON: no header line (the first row is line 1), and a
    /// wrong-column-count row is a broken JSON line (`bad_json`).
    pub ndjson: bool,
}

impl FileStats {
    /// Lines before the first row.
    fn header_lines(&self) -> u64 {
        u64::from(!self.ndjson)
    }

    pub fn clear(&mut self) {
        self.rows = 0;
        self.bad_by_kind = [0; DefectKind::ALL.len()];
        self.bad_lines.clear();
        self.messy_by_kind = [0; MessyKind::ALL.len()];
        self.messy_lines.clear();
    }

    /// Marks the row just recorded as messy.
    pub fn record_messy(&mut self, kind: MessyKind, mut line: MessyLine) {
        self.messy_by_kind[kind.index()] += 1;
        // Line 1 is the header (CSV).
        line.line = self.rows + self.header_lines();
        self.messy_lines.push(line);
    }

    pub fn messy_rows(&self) -> u64 {
        self.messy_lines.len() as u64
    }

    /// Records the next row.
    pub fn record(&mut self, defect: Option<DefectKind>) {
        self.rows += 1;
        if let Some(kind) = defect {
            self.bad_by_kind[kind.index()] += 1;
            // Line 1 is the header (CSV).
            self.bad_lines.push((self.rows + self.header_lines(), kind));
        }
    }

    pub fn bad_rows(&self) -> u64 {
        self.bad_lines.len() as u64
    }

    pub fn entry(&self, file: String) -> ManifestEntry {
        ManifestEntry {
            file,
            rows: self.rows,
            valid_rows: self.rows - self.bad_rows(),
            bad_rows: DefectKind::ALL
                .into_iter()
                .filter(|k| self.bad_by_kind[k.index()] > 0)
                .map(|k| (k.as_str(), self.bad_by_kind[k.index()]))
                .collect(),
            bad_lines: self
                .bad_lines
                .iter()
                .map(|(line, kind)| {
                    let reason = match kind {
                        DefectKind::WrongColumnCount if self.ndjson => RejectReason::BadJson,
                        k => k.reject_reason(),
                    };
                    (*line, reason.code())
                })
                .collect(),
            messy_rows: MessyKind::ALL
                .into_iter()
                .filter(|k| self.messy_by_kind[k.index()] > 0)
                .map(|k| (k.as_str(), self.messy_by_kind[k.index()]))
                .collect(),
            messy_lines: self.messy_lines.clone(),
        }
    }
}

/// The manifest file, appended to with one JSON line per finished file.
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    file: File,
}

impl Manifest {
    pub fn open(path: &Path) -> Result<Manifest, GeneratorError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| GeneratorError::io("opening manifest", path, e))?;
        Ok(Manifest {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line with a single write, so a crash leaves whole lines only
    /// (except, rarely, a torn last line).
    pub fn append(&mut self, entry: &ManifestEntry) -> Result<(), GeneratorError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| GeneratorError::Manifest {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| GeneratorError::io("appending to manifest", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn csv_rows_become_json_objects() {
        let mut out = Vec::new();
        csv_line_to_json(
            b"id-1,2026-11-25T00:00:00.000Z,7,ab,view,007,  Books ,19.99,-1\n",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"event_id":"id-1","event_time":"2026-11-25T00:00:00.000Z","user_id":7,"session_id":"ab","event_type":"view","product_id":"007","category":"  Books ","price":19.99,"quantity":-1}"#
                .to_owned()
                + "\n"
        );
        let mut out = Vec::new();
        csv_line_to_json(b"a\"b\\,2,3,4,5,6,7,8,9,10\n", &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with(r#"{"event_id":"a\"b\\","#), "{text}");
        assert!(text.ends_with("\"extra\":10\n"), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim_end()).is_err());
        let mut out = Vec::new();
        csv_line_to_json(b"x,\xff\xfe,1,,5,6,7,8,9\n", &mut out);
        assert!(
            out.windows(2).any(|w| w == b"\xff\xfe"),
            "bytes kept as they are"
        );
    }

    #[test]
    fn compressed_ndjson_files_decode_to_one_object_per_line() {
        for compression in [OutputCompression::Gzip, OutputCompression::Zstd] {
            let dir = tempfile::tempdir().expect("tempdir");
            let encoding = Encoding {
                format: OutputFormat::Ndjson,
                compression,
            };
            let mut f = LandingFile::create_with(dir.path(), "20261125T000000Z", 1, true, encoding)
                .expect("create");
            for i in 0..3 {
                f.buffer()
                    .extend_from_slice(format!("id-{i},t,1,s,view,2,c,1.50,1\n").as_bytes());
                f.row_done().expect("row");
            }
            let done = f.finish().expect("finish");
            let file = fs::File::open(dir.path().join(&done.name)).expect("open");
            assert_eq!(done.bytes, file.metadata().expect("meta").len());
            let mut text = String::new();
            match compression {
                OutputCompression::Gzip => {
                    assert!(done.name.ends_with(".ndjson.gz"));
                    flate2::read::GzDecoder::new(file).read_to_string(&mut text)
                }
                _ => {
                    assert!(done.name.ends_with(".ndjson.zst"));
                    zstd::stream::read::Decoder::new(file)
                        .expect("zstd")
                        .read_to_string(&mut text)
                }
            }
            .expect("decode");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3);
            for (i, line) in lines.iter().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                assert_eq!(v["event_id"], format!("id-{i}"));
                assert_eq!(v["price"].to_string(), "1.5");
            }
        }
    }

    #[test]
    fn ndjson_manifest_lines_start_at_one_and_extra_columns_are_bad_json() {
        let mut s = FileStats {
            ndjson: true,
            ..FileStats::default()
        };
        s.record(Some(DefectKind::WrongColumnCount));
        s.record(None);
        s.record(Some(DefectKind::NonUtf8));
        let e = s.entry("f.ndjson".into());
        assert_eq!(e.bad_lines, vec![(1, "bad_json"), (3, "invalid_utf8")]);
    }

    #[test]
    fn finish_makes_the_file_visible_under_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = LandingFile::create(dir.path(), "20261125T000000Z", 1, true).expect("create");
        f.buffer().extend_from_slice(b"row\n");
        f.row_done().expect("row");
        let done = f.finish().expect("finish");
        assert_eq!(done.name, "events-20261125T000000Z-00000001.csv");
        let text = fs::read_to_string(dir.path().join(&done.name)).expect("read");
        assert_eq!(text, format!("{HEADER}\nrow\n"));
        assert_eq!(done.bytes, text.len() as u64);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn taken_name_gets_the_next_sequence_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("events-20261125T000000Z-00000001.csv"), "x").expect("w");
        let f = LandingFile::create(dir.path(), "20261125T000000Z", 1, true).expect("create");
        let done = f.finish().expect("finish");
        assert_eq!(done.seq, 2);
        assert_eq!(done.name, "events-20261125T000000Z-00000002.csv");
    }

    #[test]
    fn stale_temp_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = LandingFile::create(dir.path(), "20261125T000000Z", 3, true).expect("create");
        drop(f);
        fs::write(dir.path().join(".other.tmp"), "x").expect("w");
        fs::write(dir.path().join("a.csv"), "x").expect("w");
        assert_eq!(remove_stale_temp_files(dir.path()).expect("clean"), 1);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 2);
    }

    #[test]
    fn manifest_entry_lists_bad_lines_with_reason_codes() {
        let mut s = FileStats::default();
        s.record(None);
        s.record(Some(DefectKind::NonUtf8));
        s.record(Some(DefectKind::NonUtf8));
        let e = s.entry("f.csv".into());
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(
            json,
            r#"{"file":"f.csv","rows":3,"valid_rows":1,"bad_rows":{"non_utf8":2},"bad_lines":[[3,"invalid_utf8"],[4,"invalid_utf8"]]}"#
        );
    }

    #[test]
    fn manifest_entry_lists_messy_lines_as_valid_rows() {
        let mut s = FileStats::default();
        s.record(None);
        s.record(None);
        s.record_messy(
            MessyKind::OddCaseEventType,
            MessyLine {
                line: 0,
                kind: MessyKind::OddCaseEventType.as_str(),
                event_id: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
                column: "event_type",
                raw: " VIEW ".into(),
                cleaned: "view".into(),
                rules: vec!["trim", "ignore_case"],
            },
        );
        let e = s.entry("f.csv".into());
        assert_eq!((e.rows, e.valid_rows), (2, 2));
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(
            json,
            r#"{"file":"f.csv","rows":2,"valid_rows":2,"bad_rows":{},"bad_lines":[],"messy_rows":{"odd_case_event_type":1},"messy_lines":[{"line":3,"kind":"odd_case_event_type","event_id":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","column":"event_type","raw":" VIEW ","cleaned":"view","rules":["trim","ignore_case"]}]}"#
        );
    }
}
