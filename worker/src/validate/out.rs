//! Writing one valid row for `COPY`, in the text or the binary format.
//!
//! The row checks ([`super::row`], [`super::general`]) hand each value over once, typed
//! and, where they have it, with its canonical text; this picks the bytes for the wire.

use chrono::{DateTime, Utc};
use sluice_core::config::CopyFormat;
use sluice_core::schema::ColumnType;
use sluice_core::values::{self, Value};
use uuid::Uuid;

use crate::copy_binary as bin;

/// A row being appended to a COPY buffer.
pub(crate) struct RowOut<'a> {
    buf: &'a mut Vec<u8>,
    format: CopyFormat,
    first: bool,
}

impl<'a> RowOut<'a> {
    pub fn start(buf: &'a mut Vec<u8>, format: CopyFormat, fields: usize) -> RowOut<'a> {
        if format == CopyFormat::Binary {
            // A table has at most 1600 columns.
            bin::row_start(buf, fields as u16);
        }
        RowOut {
            buf,
            format,
            first: true,
        }
    }

    /// Ends the row (text: the line break).
    pub fn finish(self) {
        if self.format == CopyFormat::Text {
            self.buf.push(b'\n');
        }
    }

    /// The buffer for a text field, after its separator.
    fn text_field(&mut self) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b'\t');
        }
        self.first = false;
        self.buf
    }

    pub fn null(&mut self) {
        match self.format {
            CopyFormat::Text => self.text_field().extend_from_slice(b"\\N"),
            CopyFormat::Binary => bin::null(self.buf),
        }
    }

    /// A `text` value (escaped for the text format).
    pub fn text(&mut self, s: &[u8]) {
        match self.format {
            CopyFormat::Text => values::copy_escape(self.text_field(), s),
            CopyFormat::Binary => bin::text(self.buf, s),
        }
    }

    /// A `uuid`; `lower` is its lower-case hyphenated text.
    pub fn uuid(&mut self, id: &Uuid, lower: &[u8]) {
        match self.format {
            CopyFormat::Text => self.text_field().extend_from_slice(lower),
            CopyFormat::Binary => bin::uuid(self.buf, id),
        }
    }

    pub fn timestamptz(&mut self, t: &DateTime<Utc>) {
        match self.format {
            CopyFormat::Text => values::write_timestamp(self.text_field(), t),
            CopyFormat::Binary => bin::timestamptz(self.buf, t),
        }
    }

    /// A `bigint` whose canonical text is `digits`.
    pub fn int8(&mut self, v: i64, digits: &[u8]) {
        match self.format {
            CopyFormat::Text => self.text_field().extend_from_slice(digits),
            CopyFormat::Binary => bin::int8(self.buf, v),
        }
    }

    /// An `integer` whose canonical text is `digits`.
    pub fn int4(&mut self, v: i32, digits: &[u8]) {
        match self.format {
            CopyFormat::Text => self.text_field().extend_from_slice(digits),
            CopyFormat::Binary => bin::int4(self.buf, v),
        }
    }

    /// A `numeric` with two decimal places, given in hundredths.
    pub fn cents(&mut self, cents: i64) {
        match self.format {
            CopyFormat::Text => sluice_core::event::write_price(self.text_field(), cents),
            CopyFormat::Binary => bin::numeric(self.buf, i128::from(cents), 2),
        }
    }

    /// A parsed value of a declared column; `canonical` is its text when the field
    /// already reads exactly as the text format would write it (saves formatting).
    pub fn value(&mut self, ty: &ColumnType, v: &Value, canonical: Option<&[u8]>) {
        match (self.format, canonical) {
            (CopyFormat::Text, Some(text)) => self.text_field().extend_from_slice(text),
            (CopyFormat::Text, None) => values::write_copy(ty, v, self.text_field()),
            (CopyFormat::Binary, _) => bin::value(self.buf, ty, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_are_tab_separated_lines() {
        let mut buf = Vec::new();
        let mut row = RowOut::start(&mut buf, CopyFormat::Text, 3);
        row.text(b"a\tb");
        row.null();
        row.cents(-5);
        row.finish();
        assert_eq!(buf, b"a\\tb\t\\N\t-0.05\n");
    }

    #[test]
    fn binary_rows_count_their_fields() {
        let mut buf = Vec::new();
        let mut row = RowOut::start(&mut buf, CopyFormat::Binary, 2);
        row.int4(7, b"7");
        row.null();
        row.finish();
        assert_eq!(buf, b"\0\x02\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff");
    }
}
