//! Rows for PostgreSQL's `COPY … FROM STDIN` text format: escaping and the quarantine
//! rows built from rejects.

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use crate::validate::Rejected;

/// Escapes a value for COPY's text format. NUL cannot be stored in `text`: it becomes
/// U+FFFD (the exact bytes go to `raw_bytes`).
pub fn escape(out: &mut BytesMut, value: &[u8]) {
    for &b in value {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            0 => out.put_slice("\u{FFFD}".as_bytes()),
            _ => out.put_u8(b),
        }
    }
}

/// The columns [`quarantine_row`] writes, in order.
pub const QUARANTINE_COLUMNS: &str = "pipeline, source_file, source_sha256, line_number, reason, message, raw_line, raw_bytes, batch_id";

/// One quarantine row: the reject with its file, the lossy text of the row for people
/// and its exact bytes for evidence.
pub fn quarantine_row(
    out: &mut BytesMut,
    pipeline: &str,
    file: &str,
    file_sha256: &[u8],
    reject: &Rejected,
    batch_id: Uuid,
) {
    escape(out, pipeline.as_bytes());
    out.put_u8(b'\t');
    escape(out, file.as_bytes());
    out.put_u8(b'\t');
    bytea_hex(out, file_sha256);
    out.put_u8(b'\t');
    out.put_slice(reject.line.to_string().as_bytes());
    out.put_u8(b'\t');
    out.put_slice(reject.reason.code().as_bytes());
    out.put_u8(b'\t');
    escape(out, reject.message.as_bytes());
    out.put_u8(b'\t');
    escape(out, String::from_utf8_lossy(&reject.raw).as_bytes());
    out.put_u8(b'\t');
    bytea_hex(out, &reject.raw);
    out.put_u8(b'\t');
    out.put_slice(batch_id.to_string().as_bytes());
    out.put_u8(b'\n');
}

/// A bytea value in hex format, escaped for COPY text (`\\x0a…`).
fn bytea_hex(out: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_slice(b"\\\\x");
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.put_u8(HEX[(b >> 4) as usize]);
        out.put_u8(HEX[(b & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::RejectReason;

    #[test]
    fn escape_handles_specials_and_nul() {
        let mut out = BytesMut::new();
        escape(&mut out, b"a\\b\tc\nd\re\0f");
        assert_eq!(&out[..], "a\\\\b\\tc\\nd\\re\u{FFFD}f".as_bytes());
    }

    #[test]
    fn quarantine_rows_keep_the_exact_bytes() {
        let mut out = BytesMut::new();
        let reject = Rejected {
            line: 7,
            reason: RejectReason::InvalidUtf8,
            message: "holds a NUL".into(),
            raw: b"a\0\xff,b".to_vec(),
        };
        quarantine_row(&mut out, "p", "f.csv", &[0xab], &reject, Uuid::nil());
        let text = String::from_utf8_lossy(&out);
        let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), QUARANTINE_COLUMNS.split(',').count());
        assert_eq!(fields[2], "\\\\xab");
        assert_eq!(fields[3], "7");
        assert_eq!(fields[7], "\\\\x6100ff2c62");
    }
}
