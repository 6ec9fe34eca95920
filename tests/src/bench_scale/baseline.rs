//! The steady run's same-run baseline: plain `COPY` of the same valid rows, in 10 equal
//! slices, into a fresh database's `events` table. Sluice's slices slow down as the run
//! goes on; whether that is Sluice's or the server's and the disk's (the table and the
//! WAL growing, the kernel writing dirty pages back) shows only when the same server on
//! the same disk, a minute later, loads the same rows without Sluice.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::pg::PgCluster;

/// Bytes sent per COPY message, and the size of the file buffers.
const CHUNK: usize = 1 << 20;

/// The baseline's figures.
#[derive(Debug, Clone, Default)]
pub struct CopyBaseline {
    pub rows: u64,
    /// Seconds of all slices together.
    pub seconds: f64,
    /// Rows per second of each slice's `COPY`.
    pub slices: Vec<f64>,
    /// Seconds to export the rows and sync the slice files (not measured).
    pub export_seconds: f64,
}

/// The row counts of `n` slices of `total` rows, as equal as whole rows allow (the
/// first slices take the remainder, one row each).
pub fn slice_sizes(total: u64, n: u64) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|k| total / n + u64::from(k < total % n))
        .collect()
}

/// The signature that opens a binary COPY stream.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Exports `rows` rows of `events` from `source` (the steady run's database) in
/// PostgreSQL's binary COPY format — the worker's own, so that the server does the same
/// work per row for both — into `n` slice files under `dir`, each a complete COPY
/// stream, synced to disk so that their writeback does not fall into the measured
/// COPYs. The export goes to one file first, which is then cut between rows.
async fn export_slices(source: &Client, rows: u64, n: u64, dir: &Path) -> Result<Vec<PathBuf>> {
    if rows < n {
        bail!("{rows} rows cannot make {n} slices");
    }
    std::fs::create_dir_all(dir)?;
    let whole = dir.join("all.copy");
    {
        let stream = source
            .copy_out(&format!(
                "COPY (SELECT * FROM events LIMIT {rows}) TO STDOUT (FORMAT binary)"
            ))
            .await
            .context("COPY events TO STDOUT")?;
        futures::pin_mut!(stream);
        let mut out = BufWriter::with_capacity(CHUNK, std::fs::File::create(&whole)?);
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.context("reading the exported rows")?)?;
        }
        out.flush()?;
    }
    let paths = split_binary(&whole, &slice_sizes(rows, n), dir)?;
    std::fs::remove_file(&whole)?;
    Ok(paths)
}

/// Cuts the binary COPY stream in `whole` into one stream per entry of `sizes` (that
/// many rows each), written next to it and synced.
fn split_binary(whole: &Path, sizes: &[u64], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut input = std::io::BufReader::with_capacity(
        CHUNK,
        std::fs::File::open(whole).with_context(|| format!("opening {}", whole.display()))?,
    );
    // Header: signature, flags, then an extension area of the length that follows.
    let mut header = vec![0u8; 19];
    input.read_exact(&mut header)?;
    if &header[..11] != BINARY_SIGNATURE {
        bail!("{} is not a binary COPY stream", whole.display());
    }
    let extension = u32::from_be_bytes([header[15], header[16], header[17], header[18]]);
    let mut ext = vec![0u8; extension as usize];
    input.read_exact(&mut ext)?;
    header.extend_from_slice(&ext);
    let mut paths = Vec::new();
    let mut field = Vec::new();
    for (k, &size) in sizes.iter().enumerate() {
        let path = dir.join(format!("slice-{k:02}.copy"));
        let mut out = BufWriter::with_capacity(
            CHUNK,
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        out.write_all(&header)?;
        for _ in 0..size {
            // A row: its field count, then each field's length (-1: NULL) and bytes.
            let mut count = [0u8; 2];
            input.read_exact(&mut count)?;
            let fields = i16::from_be_bytes(count);
            if fields < 0 {
                bail!("the export ended before slice {k} was full");
            }
            out.write_all(&count)?;
            for _ in 0..fields {
                let mut len = [0u8; 4];
                input.read_exact(&mut len)?;
                out.write_all(&len)?;
                let len = i32::from_be_bytes(len);
                if len > 0 {
                    field.resize(len as usize, 0);
                    input.read_exact(&mut field)?;
                    out.write_all(&field)?;
                }
            }
        }
        // The trailer: a field count of -1.
        out.write_all(&(-1i16).to_be_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        paths.push(path);
    }
    Ok(paths)
}

/// `COPY events FROM STDIN` of one slice file; returns the rows the server counted.
async fn copy_slice(client: &Client, path: &Path) -> Result<u64> {
    let sink = client
        .copy_in("COPY events FROM STDIN (FORMAT binary)")
        .await?;
    futures::pin_mut!(sink);
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sink.send(Bytes::copy_from_slice(&buf[..n])).await?;
    }
    Ok(sink.finish().await?)
}

/// Exports `rows` rows of the steady run's `events` (in `source`), then loads them with
/// plain `COPY`, slice after slice with nothing in between, into the `events` table of
/// a fresh migrated database, after a `CHECKPOINT` (as the steady run started after one).
pub async fn copy_baseline(
    pg: &PgCluster,
    source: &Client,
    rows: u64,
    dir: &Path,
) -> Result<CopyBaseline> {
    let started = Instant::now();
    let paths = export_slices(source, rows, 10, dir).await?;
    let export_seconds = started.elapsed().as_secs_f64();
    let db = pg.create_database().await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    client.batch_execute("CHECKPOINT").await?;
    eprintln!(
        "scale: COPY baseline, {rows} rows in {} slices",
        paths.len()
    );
    let mut slices = Vec::new();
    let mut seconds = 0.0;
    let mut loaded = 0;
    for path in &paths {
        let started = Instant::now();
        let n = copy_slice(&client, path).await?;
        let s = started.elapsed().as_secs_f64();
        seconds += s;
        loaded += n;
        slices.push(n as f64 / s);
    }
    if loaded != rows {
        bail!("the COPY baseline loaded {loaded} rows, expected {rows}");
    }
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    Ok(CopyBaseline {
        rows,
        seconds,
        slices,
        export_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream of `rows` rows of two fields (an int4 and a NULL).
    fn stream(rows: i32) -> Vec<u8> {
        let mut s = BINARY_SIGNATURE.to_vec();
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&4u32.to_be_bytes());
        s.extend_from_slice(b"ext!");
        for i in 0..rows {
            s.extend_from_slice(&2i16.to_be_bytes());
            s.extend_from_slice(&4i32.to_be_bytes());
            s.extend_from_slice(&i.to_be_bytes());
            s.extend_from_slice(&(-1i32).to_be_bytes());
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    #[test]
    fn a_binary_stream_is_cut_into_complete_streams_between_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = dir.path().join("all.copy");
        std::fs::write(&whole, stream(5)).expect("write");
        let paths = split_binary(&whole, &[3, 2], dir.path()).expect("split");
        let first = std::fs::read(&paths[0]).expect("read");
        let second = std::fs::read(&paths[1]).expect("read");
        // Each slice: the header (19 + 4 bytes), its rows (14 bytes each), the trailer.
        assert_eq!(first.len(), 23 + 3 * 14 + 2);
        assert_eq!(second.len(), 23 + 2 * 14 + 2);
        assert_eq!(&second[..23], &stream(0)[..23]);
        assert_eq!(&second[23 + 6..23 + 10], &3i32.to_be_bytes());
        assert_eq!(&second[second.len() - 2..], &(-1i16).to_be_bytes());
        assert!(split_binary(&whole, &[6], dir.path()).is_err());
    }

    #[test]
    fn slices_are_equal_and_add_up() {
        assert_eq!(slice_sizes(100, 10), vec![10; 10]);
        let odd = slice_sizes(9_900_023, 10);
        assert_eq!(odd.iter().sum::<u64>(), 9_900_023);
        assert_eq!(odd[0] - odd[9], 1);
        assert_eq!(slice_sizes(3, 10).iter().sum::<u64>(), 3);
        assert!(slice_sizes(5, 0).is_empty());
    }
}
