//! Landing files appear atomically: rows go to a dot-prefixed temporary file in the
//! landing directory, which is fsync'd and then renamed to its final `*.csv` name, and
//! the directory is fsync'd so the rename survives a crash. A killed generator leaves at
//! most a `.events-*.csv.tmp` file, which the next start removes.
//!
//! Also the manifest: one JSON line per finished file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sluice_core::HEADER;

use crate::defects::DefectKind;
use crate::error::GeneratorError;
use crate::messy::{MessyKind, MessyLine};

/// Prefix of the temporary files this generator writes.
pub const TEMP_PREFIX: &str = ".events-";
/// Suffix of the temporary files this generator writes.
pub const TEMP_SUFFIX: &str = ".csv.tmp";

/// Rows are encoded into a buffer of about this size, then written with one call.
const WRITE_CHUNK: usize = 1 << 20;

/// How often a name is tried with the next sequence number when the final name is
/// already taken (e.g. a restart within the same second as a previous run).
const NAME_ATTEMPTS: u64 = 1_000;

/// The final name of a landing file.
pub fn file_name(first_event: &str, seq: u64) -> String {
    format!("events-{first_event}-{seq:08}.csv")
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
    file: File,
    buf: Vec<u8>,
    bytes: u64,
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
        let temp_path = dir.join(format!("{TEMP_PREFIX}{stamp}-{seq:08}{TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)
            .map_err(|e| GeneratorError::io("creating", &temp_path, e))?;
        let mut buf = Vec::with_capacity(WRITE_CHUNK + 4096);
        buf.extend_from_slice(HEADER.as_bytes());
        buf.push(b'\n');
        Ok(LandingFile {
            dir: dir.to_path_buf(),
            stamp: stamp.to_string(),
            seq,
            temp_path,
            file,
            buf,
            bytes: 0,
            fsync,
        })
    }

    /// The buffer to append the next row to; call [`LandingFile::row_done`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the buffer out once it is large enough.
    pub fn row_done(&mut self) -> Result<(), GeneratorError> {
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), GeneratorError> {
        self.file
            .write_all(&self.buf)
            .map_err(|e| GeneratorError::io("writing", &self.temp_path, e))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Flushes and fsyncs the file, renames it to its final name and fsyncs the directory.
    pub fn finish(mut self) -> Result<Finished, GeneratorError> {
        self.flush()?;
        if self.fsync {
            self.file
                .sync_all()
                .map_err(|e| GeneratorError::io("syncing", &self.temp_path, e))?;
        }
        let mut seq = self.seq;
        let (name, path) = loop {
            let name = file_name(&self.stamp, seq);
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
        Ok(Finished {
            name,
            bytes: self.bytes,
            seq,
        })
    }

    /// Removes the temporary file (nothing becomes visible).
    pub fn discard(self) -> Result<(), GeneratorError> {
        drop(self.file);
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
}

impl FileStats {
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
        // Line 1 is the header.
        line.line = self.rows + 1;
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
            // Line 1 is the header.
            self.bad_lines.push((self.rows + 1, kind));
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
                .map(|(line, kind)| (*line, kind.reject_reason().code()))
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
