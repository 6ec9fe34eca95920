//! The layout (which field is which column) of a quarantined row's file, for a declared
//! schema that matches CSV fields by header name: quarantine keeps the row, not its
//! file's header, so the header is read again from the file, in the landing directory or
//! its archive, checked against the file's content digest. Without it the row is not
//! replayed (a guessed column order could load values into the wrong columns).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::input::{self, Kind};
use crate::ledger::hex;
use crate::source::LandingDirs;
use crate::validate::Rules;
use crate::validate::general::Layout;

/// Finds and caches the layouts of quarantined rows' files.
#[derive(Debug)]
pub struct Layouts {
    landing: Option<PathBuf>,
    cache: HashMap<(String, Vec<u8>), Option<Layout>>,
}

impl Layouts {
    /// Looks for files under `landing` (None: no landing directory, no layouts).
    pub fn new(landing: Option<PathBuf>) -> Layouts {
        Layouts {
            landing,
            cache: HashMap::new(),
        }
    }

    /// The layout of file `name` with content `digest` (empty: a file recorded before
    /// content identity, any content of that name is taken), or None when no copy of it
    /// is found or its header does not fit the rules.
    pub fn get(&mut self, kind: Kind, rules: &Rules, name: &str, digest: &[u8]) -> Option<Layout> {
        let key = (name.to_string(), digest.to_vec());
        if let Some(found) = self.cache.get(&key) {
            return found.clone();
        }
        let found = self
            .landing
            .as_deref()
            .and_then(|landing| find_layout(landing, kind, rules, name, digest));
        self.cache.insert(key, found.clone());
        found
    }
}

fn find_layout(
    landing: &Path,
    kind: Kind,
    rules: &Rules,
    name: &str,
    digest: &[u8],
) -> Option<Layout> {
    let dirs = LandingDirs {
        landing: landing.to_path_buf(),
    };
    let digest_hex = hex(digest);
    let mut candidates = vec![dirs.file(name)];
    // An archived copy keeps its name, or carries its digest when the name was taken.
    if let Ok(archived) = crate::landing::archived_files(&dirs) {
        candidates.extend(
            archived
                .into_iter()
                .filter(|a| {
                    a.name == name || (!digest_hex.is_empty() && a.name.contains(&digest_hex[..16]))
                })
                .map(|a| a.path),
        );
    }
    candidates.into_iter().find_map(|path| {
        if !digest.is_empty() && sha256_of(&path).ok()?.as_slice() != digest {
            return None;
        }
        let file = std::fs::File::open(&path).ok()?;
        let mut decoded = input::decoded(kind, file).ok()?;
        crate::validate::read_layout(&mut decoded, rules).ok()
    })
}

fn sha256_of(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::config::InputCompression;
    use sluice_core::schema::{ColumnSpec, MatchBy, TableSchema, TypeName};

    use super::*;
    use crate::validate::general::CompiledSchema;
    use crate::validate::{DeclaredRules, Format};

    fn rules() -> Rules {
        let schema = TableSchema {
            table: "t".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![
                ColumnSpec::new("id", TypeName::Bigint),
                ColumnSpec::new("site", TypeName::Text),
            ],
        };
        let mut r = Rules::for_tests();
        r.schema = Some(DeclaredRules {
            compiled: Arc::new(CompiledSchema::new(schema).expect("schema")),
            layout: None,
        });
        r
    }

    const CSV: Kind = Kind {
        format: Format::Csv,
        compression: InputCompression::None,
    };

    #[test]
    fn the_header_is_read_from_the_archived_copy_with_the_same_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = dir.path().join("archive/2026-11-25");
        std::fs::create_dir_all(&day).expect("day");
        let content = b"site,id\neast,1\n";
        std::fs::write(day.join("a.csv"), content).expect("write");
        let digest: [u8; 32] = Sha256::digest(content).into();
        let mut layouts = Layouts::new(Some(dir.path().to_path_buf()));
        let layout = layouts
            .get(CSV, &rules(), "a.csv", &digest)
            .expect("layout");
        assert_eq!(layout.field_of_column, vec![Some(1), Some(0)]);
        // Another content under that name is not this file.
        assert!(layouts.get(CSV, &rules(), "a.csv", &[9; 32]).is_none());
        // A legacy entry (no digest) takes the file of that name.
        assert!(layouts.get(CSV, &rules(), "a.csv", &[]).is_some());
        assert!(layouts.get(CSV, &rules(), "gone.csv", &digest).is_none());
        assert!(
            Layouts::new(None)
                .get(CSV, &rules(), "a.csv", &digest)
                .is_none()
        );
    }
}
