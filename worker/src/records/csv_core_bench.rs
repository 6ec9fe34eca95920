//! The hand-rolled splitter ([`RecordReader`] + [`FieldBuf`]) against the `csv-core`
//! crate, on the same generated e-commerce CSV, in the same run:
//! `cargo test --release -p sluice-worker --lib csv_core -- --ignored --nocapture`.
//! Both read through the same 256 KiB buffer from a `Read` (as the worker reads a file or
//! a decompressor) and split every record into fields; MB/s by wall and by CPU time and
//! the ratio are printed. The result and the dialect differences checked below
//! (`csv_core_differs_from_the_dialect_rules`) are recorded in docs/benchmarks.md: they
//! are why the splitter stays hand-rolled.

use std::io::Read;

use super::{FieldBuf, Position, READ_SIZE, Record, RecordReader};
use sluice_core::event::HEADER;

/// `rows` rows of valid e-commerce events after the header; every `quoted_every`-th row
/// (0: none) has a quoted category holding a comma and a doubled quote.
fn generated_csv(rows: usize, quoted_every: usize) -> Vec<u8> {
    let mut out = format!("{HEADER}\n").into_bytes();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let types = ["view", "add_to_cart", "purchase"];
    let categories = ["books", "garden", "toys", "electronics", "home_kitchen"];
    for i in 0..rows {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let id = uuid::Uuid::from_u64_pair(x, x.rotate_left(17));
        let category = if quoted_every > 0 && i % quoted_every == 0 {
            "\"home, garden & \"\"more\"\"\"".to_string()
        } else {
            categories[(x >> 28) as usize % 5].to_string()
        };
        let line = format!(
            "{id},2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z,{},s-{},{},{},{category},{}.{:02},{}\n",
            1 + x % 24,
            (x >> 8) % 24,
            (x >> 16) % 60,
            (x >> 24) % 60,
            (x >> 32) % 1000,
            (x >> 40) % 1_000_000,
            (x >> 20) % 100_000,
            types[(x >> 4) as usize % 3],
            (x >> 12) % 50_000,
            (x >> 36) % 1000,
            (x >> 44) % 100,
            1 + (x >> 50) % 9,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// What a splitter found: records, fields and field bytes (so nothing is optimised away
/// and both can be compared).
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    records: u64,
    fields: u64,
    field_bytes: u64,
}

/// The worker's splitter: records from [`RecordReader`], fields from [`FieldBuf`].
fn split_with_record_reader(mut input: &[u8]) -> Tally {
    let mut reader = RecordReader::new(&mut input, Position::START, 1 << 20, READ_SIZE);
    let mut fields = FieldBuf::default();
    let mut tally = Tally::default();
    while let Some(record) = reader.next_record().expect("in-memory input") {
        let Record::Row { bytes, quoted, .. } = record else {
            panic!("the generated file holds only plain rows: {record:?}");
        };
        if bytes.is_empty() {
            continue;
        }
        let split = fields.split(bytes, quoted);
        tally.records += 1;
        tally.fields += split.len() as u64;
        for i in 0..split.len() {
            tally.field_bytes += split.get(i).len() as u64;
        }
    }
    tally
}

/// `csv-core`'s reader on the same stream, read in the same chunks; LF terminators (a CR
/// before one is stripped from the last field, as the worker does).
fn split_with_csv_core(mut input: &[u8]) -> Tally {
    let mut reader = csv_core::ReaderBuilder::new()
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build();
    let mut chunk = vec![0u8; READ_SIZE];
    let mut out = vec![0u8; 4096];
    let mut ends = vec![0usize; 64];
    let (mut out_len, mut ends_len) = (0, 0);
    let mut tally = Tally::default();
    loop {
        let n = input.read(&mut chunk).expect("in-memory input");
        let mut data = &chunk[..n];
        // An empty slice tells csv-core the input ended: only pass one when it has.
        while !data.is_empty() || n == 0 {
            let (result, read, written, ended) =
                reader.read_record(data, &mut out[out_len..], &mut ends[ends_len..]);
            data = &data[read..];
            // csv-core counts field ends from the record's start, across calls.
            out_len += written;
            ends_len += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => break,
                csv_core::ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                csv_core::ReadRecordResult::Record => {
                    tally.records += 1;
                    tally.fields += ends_len as u64;
                    let last = ends[..ends_len].last().copied().unwrap_or(0);
                    let cr = usize::from(last > 0 && out[last - 1] == b'\r');
                    tally.field_bytes += (out_len - cr) as u64;
                    (out_len, ends_len) = (0, 0);
                }
                csv_core::ReadRecordResult::End => return tally,
            }
        }
    }
}

/// Time this thread has spent on a CPU, in ns (Linux): unlike wall time, it does not
/// count waiting for a CPU on a busy machine.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Best MB/s (wall, cpu) of `runs` runs of `split` over `bytes`, and its tally.
fn measure(bytes: &[u8], runs: usize, split: fn(&[u8]) -> Tally) -> (f64, f64, Tally) {
    let (mut wall_best, mut cpu_best, mut tally) = (0f64, 0f64, Tally::default());
    for _ in 0..runs {
        let (started, cpu_started) = (std::time::Instant::now(), cpu_ns());
        tally = split(bytes);
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_ns().saturating_sub(cpu_started).max(1) as f64 / 1e9;
        wall_best = wall_best.max(bytes.len() as f64 / wall / 1e6);
        cpu_best = cpu_best.max(bytes.len() as f64 / cpu / 1e6);
    }
    (wall_best, cpu_best, tally)
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn record_reader_against_csv_core() {
    for (label, quoted_every) in [("unquoted", 0), ("1 row in 10 quoted", 10)] {
        let bytes = generated_csv(1_000_000, quoted_every);
        // Interleaved, best of 5 each, so both see the same machine load.
        let mut ours = (0f64, 0f64, Tally::default());
        let mut theirs = (0f64, 0f64, Tally::default());
        for _ in 0..5 {
            let o = measure(&bytes, 1, split_with_record_reader);
            let t = measure(&bytes, 1, split_with_csv_core);
            ours = (ours.0.max(o.0), ours.1.max(o.1), o.2);
            theirs = (theirs.0.max(t.0), theirs.1.max(t.1), t.2);
        }
        assert_eq!(ours.2, theirs.2, "both splitters see the same fields");
        println!(
            "{label}: {} MB, {} records: RecordReader {:.0} MB/s (cpu {:.0}), csv-core {:.0} MB/s (cpu {:.0}); csv-core / RecordReader = {:.2} (cpu {:.2})",
            bytes.len() / 1_000_000,
            ours.2.records,
            ours.0,
            ours.1,
            theirs.0,
            theirs.1,
            theirs.0 / ours.0,
            theirs.1 / ours.1
        );
    }
}

/// Splits `input` with csv-core into records of fields (as text), LF-terminated.
fn csv_core_records(input: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv_core::ReaderBuilder::new()
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build();
    let (mut out, mut ends) = (vec![0u8; 1 << 16], vec![0usize; 256]);
    let (mut out_len, mut ends_len) = (0, 0);
    let mut records = Vec::new();
    let mut data = input;
    loop {
        // Once `data` is empty, the next call tells csv-core the input ended.
        let (result, read, written, ended) =
            reader.read_record(data, &mut out[out_len..], &mut ends[ends_len..]);
        data = &data[read..];
        // csv-core counts field ends from the record's start, across calls.
        out_len += written;
        ends_len += ended;
        match result {
            csv_core::ReadRecordResult::Record => {
                let mut start = 0;
                let mut fields = Vec::new();
                for &end in &ends[..ends_len] {
                    fields.push(String::from_utf8_lossy(&out[start..end]).into_owned());
                    start = end;
                }
                records.push(fields);
                (out_len, ends_len) = (0, 0);
            }
            csv_core::ReadRecordResult::End => return records,
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull | csv_core::ReadRecordResult::OutputEndsFull => {
                panic!("test records are small")
            }
        }
    }
}

/// The rules of docs/validation.md (*Quotes*) that csv-core does and does not follow.
/// Where it does not, using it would need the worker's own scanning around it anyway.
#[test]
fn csv_core_differs_from_the_dialect_rules() {
    // Followed: a quote that does not start a field is literal.
    assert_eq!(
        csv_core_records(b"a,12\" pipes,c\n"),
        vec![vec!["a", "12\" pipes", "c"]]
    );
    // Followed: after a closing quote, the rest of the field is taken literally.
    assert_eq!(csv_core_records(b"\"ab\"cd,e\n"), vec![vec!["abcd", "e"]]);
    // NOT followed: an unterminated quote swallows every following line into one field
    // (the worker takes only its first line as a bad record and goes on with the next).
    let swallowed = csv_core_records(b"x,\"abc\ny,2\nz,3\n");
    assert_eq!(swallowed.len(), 1, "{swallowed:?}");
    assert_eq!(swallowed[0][1], "abc\ny,2\nz,3\n");
    // NOT followed: a multi-line record must have exactly a row's field count to be one
    // record; csv-core accepts any count (here 2 fields over 2 lines).
    assert_eq!(csv_core_records(b"\"a\nb\",c\n"), vec![vec!["a\nb", "c"]]);
    // NOT followed: blank lines are skipped by csv-core but must count for line numbers;
    // csv-core reports no line numbers at all, so the worker would count LFs itself.
    assert_eq!(csv_core_records(b"a\n\nb\n"), vec![vec!["a"], vec!["b"]]);
    // Differs: with LF terminators a CR before the LF stays in the last field (the worker
    // strips it); with csv-core's CRLF terminator a lone CR would end a record.
    assert_eq!(csv_core_records(b"a,b\r\n"), vec![vec!["a", "b\r"]]);
}
