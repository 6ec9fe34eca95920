//! The landing-file contract shared by the generator (which writes landing files) and
//! the worker (which reads them and moves them away afterwards).
//!
//! The rule: a landing file is a visible (not dot-prefixed) `*.csv` file directly at the
//! top level of the landing directory. A writer writes it under a dot-prefixed temporary
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

/// Folder of the landing directory holding loaded files, one sub-folder per day.
pub const ARCHIVE_DIR: &str = "archive";
/// Folder of the landing directory holding files that could not be loaded.
pub const FAILED_DIR: &str = "failed";
/// Suffix of the note explaining why a file was set aside: `failed/<name>.reason.txt`.
pub const REASON_SUFFIX: &str = ".reason.txt";
/// Extension of landing files.
pub const EXTENSION: &str = ".csv";

/// True for names of landing files: `*.csv` with something before the extension, not
/// starting with `.` (writers' temporary files) and without a path separator (only the
/// top level of the landing directory holds landing files).
pub fn is_landing_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.contains('/')
        && name.len() > EXTENSION.len()
        && name.ends_with(EXTENSION)
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
}
