//! What a landing file holds (format and compression, from `spec.source` and its name)
//! and reading it decompressed as a stream.
//!
//! A compressed file is always loaded through the large-file path (in parts, one
//! transaction each): its decompressed size is unknown and may be huge, and a part only
//! ever holds the decoder's window, one read buffer, one COPY chunk and its rejects.
//! Part offsets ([`crate::validate::Position`]) count decompressed bytes; resuming at a
//! later part decodes the file again from its start and discards the bytes before the
//! offset (correct, slower). The file's identity digest stays the SHA-256 of its bytes
//! on disk.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_core::config::{InputCompression, InputFormat, SourceConfig};

use crate::validate::{FileError, Format, ParseError};

/// Largest Zstandard window accepted (2^24 = 16 MiB, enough for every level below the
/// `--ultra` ones); a frame asking for more is set aside, so a file cannot make the
/// worker allocate a huge window.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// How a landing file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub format: Format,
    pub compression: InputCompression,
}

impl Kind {
    pub fn of(source: &SourceConfig, name: &str) -> Kind {
        let format = match source.format_of(name) {
            Some(InputFormat::Ndjson) => Format::Ndjson,
            _ => Format::Csv,
        };
        let compression = match source.compression_of(name) {
            InputCompression::Auto => InputCompression::None,
            c => c,
        };
        Kind {
            format,
            compression,
        }
    }

    pub fn is_compressed(&self) -> bool {
        self.compression != InputCompression::None
    }

    fn compression_name(&self) -> &'static str {
        match self.compression {
            InputCompression::Gzip => "gzip",
            InputCompression::Zstd => "zstd",
            InputCompression::None | InputCompression::Auto => "none",
        }
    }
}

/// An error of the decoder itself (the compressed data is broken), told apart from an
/// error reading the file, which may be transient.
#[derive(Debug)]
struct DecodeError(io::Error);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DecodeError {}

/// The file's reads, noting whether one failed.
struct Source<R> {
    inner: R,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.store(true, Ordering::Relaxed);
            }
        })
    }
}

/// A decoder whose own errors are marked as [`DecodeError`].
struct Decoded {
    decoder: Box<dyn Read + Send>,
    source_failed: Arc<AtomicBool>,
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted || self.source_failed.load(Ordering::Relaxed)
            {
                e
            } else {
                io::Error::new(io::ErrorKind::InvalidData, DecodeError(e))
            }
        })
    }
}

/// The decompressed content of `file` (or `file` itself when not compressed).
pub fn decoded<R: Read + Send + 'static>(kind: Kind, file: R) -> io::Result<Box<dyn Read + Send>> {
    let failed = Arc::new(AtomicBool::new(false));
    let source = Source {
        inner: file,
        failed: failed.clone(),
    };
    let decoder: Box<dyn Read + Send> = match kind.compression {
        InputCompression::None | InputCompression::Auto => return Ok(Box::new(source)),
        InputCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(64 << 10, source),
        )),
        InputCompression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(source)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    };
    Ok(Box::new(Decoded {
        decoder,
        source_failed: failed,
    }))
}

/// Reads and discards the first `offset` decompressed bytes (resuming a later part).
pub fn skip_to(input: &mut dyn Read, offset: u64) -> io::Result<()> {
    let skipped = io::copy(&mut input.take(offset), &mut io::sink())?;
    if skipped < offset {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            DecodeError(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the decompressed content ends at byte {skipped}, before the recorded part offset {offset}"
                ),
            )),
        ));
    }
    Ok(())
}

/// A parse error caused by broken compressed data becomes a file error (the file is set
/// aside with reason `bad_compression`); other errors stay as they are.
pub fn classify(kind: Kind, e: ParseError) -> ParseError {
    match e {
        ParseError::Io(io) if is_decode_error(&io) => ParseError::File(FileError::BadCompression {
            compression: kind.compression_name(),
            problem: io.to_string(),
        }),
        e => e,
    }
}

fn is_decode_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DecodeError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn kind(compression: InputCompression) -> Kind {
        Kind {
            format: Format::Csv,
            compression,
        }
    }

    fn read_all(k: Kind, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoded(k, io::Cursor::new(bytes))?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn kinds_come_from_the_name_unless_configured() {
        let auto = SourceConfig::default();
        assert_eq!(
            Kind::of(&auto, "a.ndjson.gz"),
            Kind {
                format: Format::Ndjson,
                compression: InputCompression::Gzip
            }
        );
        assert!(!Kind::of(&auto, "a.csv").is_compressed());
        let forced = SourceConfig {
            format: InputFormat::Ndjson,
            compression: InputCompression::Zstd,
            ..SourceConfig::default()
        };
        assert_eq!(Kind::of(&forced, "a.csv").format, Format::Ndjson);
        assert!(Kind::of(&forced, "a.csv").is_compressed());
    }

    #[test]
    fn gzip_members_and_zstd_frames_are_all_read() {
        let mut two = gzip(b"hello ");
        two.extend(gzip(b"world"));
        assert_eq!(
            read_all(kind(InputCompression::Gzip), two).expect("gz"),
            b"hello world"
        );
        let mut z = zstd::encode_all(&b"a,b\n"[..], 3).expect("zstd");
        z.extend(zstd::encode_all(&b"c,d\n"[..], 3).expect("zstd"));
        assert_eq!(
            read_all(kind(InputCompression::Zstd), z).expect("zst"),
            b"a,b\nc,d\n"
        );
    }

    #[test]
    fn truncated_or_garbage_input_is_a_decode_error() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip(&data);
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        for (k, bytes) in [
            (kind(InputCompression::Gzip), gz[..gz.len() / 2].to_vec()),
            (kind(InputCompression::Gzip), b"not gzip at all".to_vec()),
            (kind(InputCompression::Zstd), zst[..zst.len() / 2].to_vec()),
            (kind(InputCompression::Zstd), b"not zstd at all".to_vec()),
        ] {
            let e = read_all(k, bytes).expect_err("must fail");
            assert!(is_decode_error(&e), "{k:?}: {e}");
            let classified = classify(k, ParseError::Io(e));
            assert!(matches!(
                classified,
                ParseError::File(FileError::BadCompression { .. })
            ));
        }
    }

    #[test]
    fn a_read_error_of_the_file_stays_an_io_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("EIO"))
            }
        }
        let mut out = Vec::new();
        let e = decoded(kind(InputCompression::Gzip), Failing)
            .expect("open")
            .read_to_end(&mut out)
            .expect_err("fails");
        assert!(!is_decode_error(&e));
    }

    #[test]
    fn skipping_past_the_end_is_a_decode_error() {
        let mut d =
            decoded(kind(InputCompression::Gzip), io::Cursor::new(gzip(b"abc"))).expect("d");
        let e = skip_to(&mut d, 10).expect_err("short");
        assert!(is_decode_error(&e));
        let mut d = decoded(
            kind(InputCompression::Gzip),
            io::Cursor::new(gzip(b"abcdef")),
        )
        .expect("d");
        skip_to(&mut d, 2).expect("skip");
        let mut rest = String::new();
        d.read_to_string(&mut rest).expect("rest");
        assert_eq!(rest, "cdef");
    }
}
