//! Throughput of the common case (valid, unquoted rows), for before/after comparisons:
//! `cargo test --release -p sluice-worker --lib throughput -- --ignored --nocapture`.

use super::*;
use sluice_core::event::HEADER;

/// About `size` bytes of valid, unquoted rows with varied values.
fn bench_file(size: usize) -> Vec<u8> {
    let mut out = format!("{HEADER}\n").into_bytes();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let types = ["view", "add_to_cart", "purchase"];
    let categories = ["books", "garden", "toys", "electronics", "home & kitchen"];
    while out.len() < size {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let id = Uuid::from_u64_pair(x, x.rotate_left(17));
        let line = format!(
            "{id},2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z,{},s-{},{},{},{},{}.{:02},{}\n",
            1 + x % 24,
            (x >> 8) % 24,
            (x >> 16) % 60,
            (x >> 24) % 60,
            (x >> 32) % 1000,
            (x >> 40) % 1_000_000,
            (x >> 20) % 100_000,
            types[(x >> 4) as usize % 3],
            (x >> 12) % 50_000,
            categories[(x >> 28) as usize % 5],
            (x >> 36) % 1000,
            (x >> 44) % 100,
            1 + (x >> 50) % 9,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn rules() -> Rules {
    Rules {
        future_tolerance: chrono::Duration::days(30),
        collect_event_ids: false,
        ..Rules::for_tests()
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

struct Timer(std::time::Instant, u64);

impl Timer {
    fn start() -> Self {
        Timer(std::time::Instant::now(), cpu_ns())
    }
}

/// MB/s by wall time and by CPU time.
fn mb_per_s(bytes: usize, started: Timer) -> String {
    let wall = started.0.elapsed().as_secs_f64();
    let cpu = cpu_ns().saturating_sub(started.1).max(1) as f64 / 1e9;
    format!(
        "{:.0} (cpu {:.0})",
        bytes as f64 / wall / 1e6,
        bytes as f64 / cpu / 1e6
    )
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn throughput() {
    let bytes = bench_file(100 * 1024 * 1024);
    for _ in 0..5 {
        let started = Timer::start();
        let parsed = parse_file(&bytes, &rules()).expect("parses");
        let file_speed = mb_per_s(bytes.len(), started);
        assert!(parsed.rejects.is_empty());

        let started = Timer::start();
        let limits = PartLimits {
            max_input_bytes: u64::MAX,
            max_reject_bytes: u64::MAX,
            copy_chunk_bytes: 1024 * 1024,
        };
        let mut copied = 0;
        let mut sink = |chunk: Vec<u8>| {
            copied += chunk.len();
            Ok(())
        };
        let part = parse_part(
            &mut bytes.as_slice(),
            Position::START,
            &rules(),
            &limits,
            &mut sink,
        )
        .expect("parses");
        let part_speed = mb_per_s(bytes.len(), started);
        assert_eq!(copied, parsed.copy_rows.len());
        // The content digest the worker computes for every file (its identity).
        let parse_cpu = {
            let t = cpu_ns();
            let _ = parse_file(&bytes, &rules()).expect("parses");
            cpu_ns().saturating_sub(t).max(1)
        };
        let digest_cpu = {
            use sha2::Digest as _;
            let t = cpu_ns();
            let d = sha2::Sha256::digest(&bytes);
            assert_eq!(d.len(), 32);
            cpu_ns().saturating_sub(t).max(1)
        };
        // The declared-schema path on the same table (TableSchema::ecommerce).
        let declared = Rules {
            schema: Some(DeclaredRules {
                compiled: std::sync::Arc::new(
                    general::CompiledSchema::new(sluice_core::schema::TableSchema::ecommerce(
                        "events", 86_400,
                    ))
                    .expect("the built-in schema compiles"),
                ),
                layout: None,
            }),
            ..rules()
        };
        let declared_cpu = {
            let t = cpu_ns();
            let d = parse_file(&bytes, &declared).expect("parses");
            assert_eq!(
                d.copy_rows, parsed.copy_rows,
                "same COPY text as the fast path"
            );
            cpu_ns().saturating_sub(t).max(1)
        };
        println!(
            "{} rows: parse_file {file_speed} MB/s, parse_part {part_speed} MB/s; \
             sha256 {:.0} MB/s (cpu), parse+digest / parse = {:.3}; \
             declared schema / fast path = {:.3} (cpu time, higher is faster)",
            part.valid_rows,
            bytes.len() as f64 / (digest_cpu as f64 / 1e9) / 1e6,
            (parse_cpu + digest_cpu) as f64 / parse_cpu as f64,
            parse_cpu as f64 / declared_cpu as f64
        );
    }
}
