//! File-system steps that must not be fooled by what others put in the landing
//! directory: opening without following symbolic links, writing only into real
//! directories, and moving files without ever replacing an existing one.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_core::landing::{EXTENSION, split_suffix};

use crate::source::LandingDirs;

/// Opens landing file `name` for reading without following a symbolic link, and returns
/// it with its metadata taken from the open file (fstat), so what is checked is what is
/// read even if the name is swapped meanwhile. Anything but a regular file is refused
/// with [`io::ErrorKind::InvalidInput`].
pub fn open_landing_file(dirs: &LandingDirs, name: &str) -> io::Result<(File, Metadata)> {
    check_plain_name(name)?;
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO (or device) swapped in under the name must not block the
        // open; fstat below refuses it. Regular files ignore O_NONBLOCK for reads.
        // O_NOCTTY: a terminal device must never become our controlling terminal.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dirs.file(name))
        .map_err(|e| {
            // O_NOFOLLOW reports a symbolic link as the last component with ELOOP.
            if e.raw_os_error() == Some(libc::ELOOP) {
                invalid_input("is a symbolic link, not a regular file; not followed")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid_input("not a regular file"));
    }
    Ok((file, meta))
}

/// True for errors of opening or reading a file that may go away by themselves (an NFS
/// hiccup, a permission being fixed, a resource shortage), so the read is worth retrying
/// later. A vanished file (`NotFound`) is not among them: callers treat it separately.
pub fn is_transient_read_error(e: &io::Error) -> bool {
    const TRANSIENT: [i32; 11] = [
        libc::EIO,
        libc::ESTALE,
        libc::EACCES,
        libc::EPERM,
        libc::EAGAIN,
        libc::EINTR,
        libc::ETIMEDOUT,
        libc::ENOLCK,
        libc::ENOMEM,
        libc::EMFILE,
        libc::ENFILE,
    ];
    e.raw_os_error()
        .is_some_and(|code| TRANSIENT.contains(&code))
}

/// Refuses names that are not a plain file name, so no caller can reach outside the
/// landing directory (or into `archive/`) through a name.
pub(crate) fn check_plain_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(invalid_input(&format!("{name:?} is not a plain file name")));
    }
    Ok(())
}

fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_string())
}

/// Makes sure `path` is a real directory, creating it if absent. A symbolic link (even
/// to a directory) is refused: writing through it would put files wherever it points.
pub(crate) fn real_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        // Exists already (or was created concurrently): check what it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match existing_real_dir(path)? {
            true => Ok(()),
            // Removed between create and check: a later attempt creates it.
            false => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} vanished while being created", path.display()),
            )),
        },
        Err(e) => Err(e),
    }
}

/// True if `path` is a real directory, false if absent; an error if it is a symbolic
/// link or not a directory.
pub(crate) fn existing_real_dir(path: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!(
                "{} is a symbolic link; refusing to write through it",
                path.display()
            ),
        ))
    } else if !kind.is_dir() {
        Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ))
    } else {
        Ok(true)
    }
}

/// Writes `text` to `dir/name` without following a symbolic link there: it is written to
/// a fresh dot-temp file (exclusive create, no follow) and renamed over `name` — a rename
/// replaces a symbolic link itself, never its target. Not fsync'd: a note lost in a crash
/// is rewritten by the retried step, or only its explanation is lost.
pub(crate) fn write_note(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    remove_if_present(&tmp)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    drop(file);
    fs::rename(&tmp, dir.join(name))
}

/// Where [`move_no_clobber`] left a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Moved {
    /// Moved (or found moved by an earlier attempt) to this path.
    To(PathBuf),
    /// A file named after the same content digest was already there; the source was
    /// removed as a duplicate.
    Duplicate(PathBuf),
    /// The source was gone already.
    Gone,
}

/// Moves `src` into `dir` without ever replacing a file there: as `dir/<name>` if free,
/// else `<stem>.<first 16 hex of digest>.csv`, else (no usable digest)
/// `<stem>.<unix-nanos>.csv`. Safe to repeat after a crash at any point: a destination
/// holding the same inode as `src` is recognised as an earlier attempt's link.
/// `placed` runs once the destination is ours, before `src` is removed (so a crash in
/// between runs it again on retry).
pub(crate) fn move_no_clobber(
    src: &Path,
    dir: &Path,
    name: &str,
    digest_hex: &str,
    mut placed: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<Moved> {
    let src_meta = match fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Moved::Gone),
        Err(e) => return Err(e),
    };
    let (stem, ext) = split_suffix(name);
    let ext = if ext.is_empty() { EXTENSION } else { ext };
    let mut finish = |dst: PathBuf| -> io::Result<Moved> {
        placed(&dst)?;
        remove_if_same(src, &src_meta)?;
        Ok(Moved::To(dst))
    };

    let primary = dir.join(name);
    if link_no_clobber(src, &primary, &src_meta)? != Link::Taken {
        return finish(primary);
    }
    if let Some(digest) = digest_prefix(digest_hex) {
        let by_digest = dir.join(format!("{stem}.{digest}{ext}"));
        if link_no_clobber(src, &by_digest, &src_meta)? != Link::Taken {
            return finish(by_digest);
        }
        // Named after the same digest, so it holds the same content; the size check
        // guards against an unrelated file that merely happens to have such a name.
        if fs::symlink_metadata(&by_digest).is_ok_and(|m| m.is_file() && m.len() == src_meta.len())
        {
            remove_if_same(src, &src_meta)?;
            return Ok(Moved::Duplicate(by_digest));
        }
    }
    // Legacy names: a crash after linking under a time-stamped name left the source with
    // a second link; find it instead of adding a third.
    if src_meta.nlink() > 1
        && let Some(earlier) = find_same_inode(dir, stem, ext, &src_meta)?
    {
        return finish(earlier);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for i in 0..100u128 {
        let dst = dir.join(format!("{stem}.{}{ext}", nanos + i));
        if link_no_clobber(src, &dst, &src_meta)? != Link::Taken {
            return finish(dst);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {name} in {}", dir.display()),
    ))
}

/// Moves `src` to exactly `dst` unless `dst` is taken by another file: `true` when moved
/// (or found moved by an earlier attempt), `false` when taken. `NotFound` if `src` is
/// gone.
pub(crate) fn move_exact(src: &Path, dst: &Path) -> io::Result<bool> {
    let src_meta = fs::symlink_metadata(src)?;
    match link_no_clobber(src, dst, &src_meta)? {
        Link::Done => {
            remove_if_same(src, &src_meta)?;
            Ok(true)
        }
        Link::Taken => Ok(false),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Link {
    /// `dst` now names the source file.
    Done,
    /// `dst` is taken by another file.
    Taken,
}

/// Gives `src` the additional name `dst` unless `dst` exists. `Done` also when `dst`
/// already is the same file (an earlier attempt linked it).
fn link_no_clobber(src: &Path, dst: &Path, src_meta: &Metadata) -> io::Result<Link> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(Link::Done),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(dst) {
            Ok(m) if same_file(&m, src_meta) => Ok(Link::Done),
            Ok(_) => Ok(Link::Taken),
            // Removed between link and check; try again once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::hard_link(src, dst) {
                Ok(()) => Ok(Link::Done),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Link::Taken),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Err(e) if hard_links_refused(&e) => rename_no_clobber(src, dst, src_meta),
        Err(e) => Err(e),
    }
}

/// Hard links are refused by some file systems (SMB, some FUSE), and by Linux'
/// `fs.protected_hardlinks` for a file owned by another user that we cannot write —
/// typical when the generator runs under another uid.
fn hard_links_refused(e: &io::Error) -> bool {
    e.raw_os_error()
        .is_some_and(|c| [libc::EPERM, libc::EOPNOTSUPP, libc::ENOSYS].contains(&c))
}

/// Fallback when hard links are refused: rename if `dst` is free. The check and the
/// rename are two steps, but only the worker holding the file's claim moves it, and a
/// `dst` appearing in between could only come from another worker's move of a file of
/// the same name on the same day.
fn rename_no_clobber(src: &Path, dst: &Path, src_meta: &Metadata) -> io::Result<Link> {
    match fs::symlink_metadata(dst) {
        Ok(m) if same_file(&m, src_meta) => Ok(Link::Done),
        Ok(_) => Ok(Link::Taken),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::rename(src, dst)?;
            Ok(Link::Done)
        }
        Err(e) => Err(e),
    }
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Removes `src` if it is still the file described by `meta` (a new file landed under the
/// same name meanwhile is left alone) and if it is still there.
fn remove_if_same(src: &Path, meta: &Metadata) -> io::Result<()> {
    match fs::symlink_metadata(src) {
        Ok(m) if same_file(&m, meta) => remove_if_present(src),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Up to 16 lowercase hex characters of a digest; `None` for an empty (legacy) or
/// malformed digest, which must never become part of a path.
fn digest_prefix(digest_hex: &str) -> Option<String> {
    let prefix = digest_hex.get(..16).unwrap_or(digest_hex);
    (!prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| prefix.to_ascii_lowercase())
}

/// A `<stem>.*<ext>` entry of `dir` (`ext`: the landing suffix, e.g. `.csv.gz`) that is the same file as `meta`.
fn find_same_inode(
    dir: &Path,
    stem: &str,
    ext: &str,
    meta: &Metadata,
) -> io::Result<Option<PathBuf>> {
    let prefix = format!("{stem}.");
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix)
            && name.ends_with(ext)
            && entry.metadata().is_ok_and(|m| same_file(&m, meta))
        {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dirs() -> (tempfile::TempDir, LandingDirs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = LandingDirs {
            landing: dir.path().to_path_buf(),
        };
        (dir, d)
    }

    #[test]
    fn open_refuses_symlinks_and_directories_and_opens_regular_files() {
        let (_t, d) = dirs();
        fs::write(d.file("real.csv"), b"a,b\n").expect("write");
        symlink(d.file("real.csv"), d.file("link.csv")).expect("symlink");
        fs::create_dir(d.file("dir.csv")).expect("mkdir");

        let e = open_landing_file(&d, "link.csv").expect_err("symlink refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = open_landing_file(&d, "dir.csv").expect_err("directory refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = open_landing_file(&d, "../real.csv").expect_err("path refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        let (file, meta) = open_landing_file(&d, "real.csv").expect("regular file opens");
        assert!(meta.is_file());
        assert_eq!(meta.len(), 4);
        let mut text = String::new();
        io::Read::read_to_string(&mut &file, &mut text).expect("read");
        assert_eq!(text, "a,b\n");
        let e = open_landing_file(&d, "missing.csv").expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn transient_read_errors() {
        for code in [
            libc::EIO,
            libc::ESTALE,
            libc::EACCES,
            libc::EAGAIN,
            libc::EINTR,
        ] {
            assert!(is_transient_read_error(&io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ETIMEDOUT, libc::EMFILE, libc::ENOMEM, libc::EPERM] {
            assert!(is_transient_read_error(&io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ENOENT, libc::EISDIR, libc::ELOOP, libc::EINVAL] {
            assert!(!is_transient_read_error(&io::Error::from_raw_os_error(
                code
            )));
        }
        assert!(!is_transient_read_error(&io::Error::other("no os code")));
        assert!(!is_transient_read_error(&invalid_input(
            "not a regular file"
        )));
    }

    #[test]
    fn real_dir_creates_accepts_directories_and_refuses_the_rest() {
        let (t, _d) = dirs();
        let new = t.path().join("new");
        real_dir(&new).expect("created");
        assert!(new.is_dir());
        real_dir(&new).expect("existing directory accepted");

        let target = t.path().join("elsewhere");
        fs::create_dir(&target).expect("mkdir");
        let link = t.path().join("link");
        symlink(&target, &link).expect("symlink");
        let e = real_dir(&link).expect_err("symlink to a directory refused");
        assert!(e.to_string().contains("symbolic link; refusing"), "{e}");

        let file = t.path().join("file");
        fs::write(&file, b"x").expect("write");
        let e = real_dir(&file).expect_err("file refused");
        assert!(e.to_string().contains("is not a directory"), "{e}");
        assert!(!existing_real_dir(&t.path().join("absent")).expect("absent is fine"));
    }

    #[test]
    fn note_replaces_a_symlink_not_its_target() {
        let (t, _d) = dirs();
        let victim = t.path().join("victim.txt");
        fs::write(&victim, b"precious").expect("write");
        symlink(&victim, t.path().join("x.csv.reason.txt")).expect("symlink");
        // A stale temp file (or a symlink planted under the temp name) is replaced too.
        symlink(&victim, t.path().join(".x.csv.reason.txt.tmp")).expect("symlink");

        write_note(t.path(), "x.csv.reason.txt", "reason: test\n").expect("note");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        let note = t.path().join("x.csv.reason.txt");
        assert!(!fs::symlink_metadata(&note).expect("note").is_symlink());
        assert_eq!(fs::read_to_string(&note).expect("note"), "reason: test\n");
        assert!(!t.path().join(".x.csv.reason.txt.tmp").exists());
    }

    #[test]
    fn rename_fallback_never_replaces_and_recognises_its_own_move() {
        let (t, _d) = dirs();
        let (src, dst) = (t.path().join("a.csv"), t.path().join("b.csv"));
        fs::write(&src, b"new").expect("write");
        fs::write(&dst, b"old").expect("write");
        let meta = fs::symlink_metadata(&src).expect("meta");
        assert_eq!(
            rename_no_clobber(&src, &dst, &meta).expect("taken"),
            Link::Taken
        );
        assert_eq!(fs::read(&dst).expect("dst"), b"old");

        fs::remove_file(&dst).expect("rm");
        assert_eq!(
            rename_no_clobber(&src, &dst, &meta).expect("moved"),
            Link::Done
        );
        assert_eq!(fs::read(&dst).expect("dst"), b"new");
        assert!(!src.exists());
        assert!(hard_links_refused(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
        assert!(!hard_links_refused(&io::Error::from_raw_os_error(
            libc::EXDEV
        )));
    }

    #[test]
    fn digest_prefix_is_short_hex_or_nothing() {
        let full = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(digest_prefix(full).as_deref(), Some("0123456789abcdef"));
        assert_eq!(digest_prefix("").as_deref(), None);
        assert_eq!(digest_prefix("../../etc/passwd").as_deref(), None);
        assert_eq!(digest_prefix("abc").as_deref(), Some("abc"));
    }

    #[test]
    fn legacy_move_after_a_crash_reuses_the_earlier_link() {
        let (t, _d) = dirs();
        let dir = t.path().join("day");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("a.csv"), b"first").expect("write");
        let src = t.path().join("a.csv");
        fs::write(&src, b"second").expect("write");
        // The earlier attempt linked under a time-stamped name, then crashed.
        fs::hard_link(&src, dir.join("a.1234.csv")).expect("link");

        let moved = move_no_clobber(&src, &dir, "a.csv", "", |_| Ok(())).expect("move");
        assert_eq!(moved, Moved::To(dir.join("a.1234.csv")));
        assert!(!src.exists());
        assert_eq!(fs::read_dir(&dir).expect("ls").count(), 2);
        assert_eq!(fs::read(dir.join("a.csv")).expect("a"), b"first");
    }
}
