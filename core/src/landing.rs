//! The landing-file contract shared by the generator (which writes landing files) and
//! the worker (which reads them and moves them away afterwards).
//!
//! The rule: a landing file is a visible (not dot-prefixed) file directly at the top
//! level of the landing directory whose name ends in a landing suffix: `.csv`, `.ndjson`
//! or `.jsonl`, optionally followed by `.gz` or `.zst` (`events-1.csv`,
//! `events-1.ndjson.gz`, `events-1.jsonl.zst`), with something before the suffix. A writer writes it under a dot-prefixed temporary
//! name in the same directory and renames it to its final name once complete, so a
//! visible landing file is always whole; it is never changed after it became visible
//! (a corrected file is a new file, under a new name or with new content). Directories,
//! symbolic links and anything else that is not a regular file are left alone, whatever
//! their names.
//!
//! Inside the landing directory the worker keeps `archive/YYYY-MM-DD/` (loaded files,
//! after-commit policy `archive`) and `failed/` (files it could not load, each with a
//! `<name>.reason.txt` note). Neither is ever read as landing input: only the top level
//! is listed.

use crate::config::{InputCompression, InputFormat};

/// Folder of the landing directory holding loaded files, one sub-folder per day.
pub const ARCHIVE_DIR: &str = "archive";
/// Folder of the landing directory holding files that could not be loaded.
pub const FAILED_DIR: &str = "failed";
/// Suffix of the note explaining why a file was set aside: `failed/<name>.reason.txt`.
pub const REASON_SUFFIX: &str = ".reason.txt";
/// Extension of plain CSV landing files.
pub const EXTENSION: &str = ".csv";

/// What a landing file's name says about its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suffix {
    /// Everything from the format extension on (`.csv`, `.ndjson.gz`…), a suffix of the name.
    pub text: &'static str,
    pub format: InputFormat,
    /// [`InputCompression::None`] when the name has no compression extension.
    pub compression: InputCompression,
}

const ALL_SUFFIXES: [(&str, InputFormat, InputCompression); 9] = [
    (".csv", InputFormat::Csv, InputCompression::None),
    (".csv.gz", InputFormat::Csv, InputCompression::Gzip),
    (".csv.zst", InputFormat::Csv, InputCompression::Zstd),
    (".ndjson", InputFormat::Ndjson, InputCompression::None),
    (".ndjson.gz", InputFormat::Ndjson, InputCompression::Gzip),
    (".ndjson.zst", InputFormat::Ndjson, InputCompression::Zstd),
    (".jsonl", InputFormat::Ndjson, InputCompression::None),
    (".jsonl.gz", InputFormat::Ndjson, InputCompression::Gzip),
    (".jsonl.zst", InputFormat::Ndjson, InputCompression::Zstd),
];

/// The landing suffix `name` ends with (with something before it), if any.
pub fn suffix_of(name: &str) -> Option<Suffix> {
    ALL_SUFFIXES
        .iter()
        .find(|(text, _, _)| name.len() > text.len() && name.ends_with(text))
        .map(|&(text, format, compression)| Suffix {
            text,
            format,
            compression,
        })
}

/// `name` split into its stem and its landing suffix (`("events-1", ".csv.gz")`); a name
/// without a landing suffix is all stem.
pub fn split_suffix(name: &str) -> (&str, &str) {
    match suffix_of(name) {
        Some(s) => name.split_at(name.len() - s.text.len()),
        None => (name, ""),
    }
}

/// True for names of landing files: a landing suffix (`.csv`, `.ndjson`, `.jsonl`, each
/// optionally followed by `.gz` or `.zst`) with something before it, not starting with
/// `.` (writers' temporary files) and without a path separator (only the top level of the
/// landing directory holds landing files).
pub fn is_landing_file_name(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('/') && suffix_of(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_top_level_csv_names_are_landing_files() {
        assert!(is_landing_file_name("events-1.csv"));
        assert!(is_landing_file_name("a.csv"));
        assert!(!is_landing_file_name(".events-1.csv.tmp"));
        assert!(!is_landing_file_name(".events-1.csv"));
        assert!(!is_landing_file_name("events-1.csv.tmp"));
        assert!(!is_landing_file_name("notes.txt"));
        assert!(!is_landing_file_name(".csv"));
        assert!(!is_landing_file_name("archive/2026-11-25/a.csv"));
        assert!(!is_landing_file_name("../a.csv"));
        assert!(!is_landing_file_name(""));
    }

    #[test]
    fn ndjson_and_compressed_names_are_landing_files() {
        for name in [
            "events-1.csv.gz",
            "events-1.csv.zst",
            "events-1.ndjson",
            "events-1.ndjson.gz",
            "events-1.jsonl",
            "events-1.jsonl.zst",
        ] {
            assert!(is_landing_file_name(name), "{name}");
        }
        for name in [
            ".events-1.ndjson.gz",
            ".events-1.csv.gz.tmp",
            "events-1.gz",
            "events-1.zst",
            "events-1.json",
            "events-1.csv.bz2",
            "events-1.gz.csv.zst.gz",
            ".ndjson",
            ".csv.gz",
            "archive/a.ndjson",
        ] {
            assert!(!is_landing_file_name(name), "{name}");
        }
    }

    #[test]
    fn suffixes_tell_format_and_compression() {
        let s = suffix_of("a.ndjson.zst").expect("suffix");
        assert_eq!(
            (s.text, s.format, s.compression),
            (".ndjson.zst", InputFormat::Ndjson, InputCompression::Zstd)
        );
        let s = suffix_of("a.csv").expect("suffix");
        assert_eq!(
            (s.format, s.compression),
            (InputFormat::Csv, InputCompression::None)
        );
        assert_eq!(split_suffix("events-1.csv.gz"), ("events-1", ".csv.gz"));
        assert_eq!(split_suffix("notes.txt"), ("notes.txt", ""));
    }
}
