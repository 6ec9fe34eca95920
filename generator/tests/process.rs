//! The binary as a process: flags, signals, crashes, backpressure.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bad_flags_exit_2_with_a_helpful_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let landing = dir.path().to_str().expect("utf8");
    for (args, hint) in [
        (vec!["--bad-row-share", "1.5"], "0.0 to 1.0"),
        (vec!["--rows-per-file", "0"], "rows-per-file"),
        (vec!["--start-time", "yesterday"], "RFC 3339"),
        (vec!["--events-per-second=-3"], "events-per-second"),
        (vec!["--log-format", "xml"], "text or json"),
    ] {
        let out = bin()
            .args(["--landing-dir", landing])
            .args(&args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
    let out = bin().output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--landing-dir"));

    // Values from the config file are validated too.
    let cfg = dir.path().join("gen.yaml");
    std::fs::write(&cfg, "viewToCartRate: 3\n").expect("write");
    let out = bin()
        .args([
            "--landing-dir",
            landing,
            "--config",
            cfg.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("viewToCartRate"));
}

#[test]
fn help_explains_every_flag() {
    let out = bin().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--landing-dir",
        "--events-per-second",
        "--rows-per-file",
        "--seconds-per-file",
        "--bad-row-share",
        "--seed",
        "--total-rows",
        "--total-files",
        "--max-pending-files",
        "--max-pending-bytes",
        "--view-to-cart-rate",
        "--cart-to-purchase-rate",
        "--start-time",
        "--manifest",
        "--config",
        "--metrics-addr",
        "--log-format",
        "--log-level",
        "SLUICE_GENERATOR_SEED",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// Every visible file is complete and agrees with the manifest where listed.
fn assert_only_complete_files(landing: &std::path::Path, manifest: &std::path::Path) {
    let listed = read_manifest(manifest);
    for name in csv_files(landing) {
        let bytes = std::fs::read(landing.join(&name)).expect("read");
        let lines = data_lines(&bytes);
        for line in &lines {
            uuid::Uuid::try_parse_ascii(&line[..36]).expect("each row starts with a UUID");
        }
        if let Some(m) = listed.iter().find(|m| m.file == name) {
            assert_eq!(m.rows, lines.len() as u64, "{name}");
        }
    }
}

#[test]
fn sigkill_never_leaves_a_partial_csv() {
    let root = tempfile::tempdir().expect("tmp");
    let landing = root.path().join("landing");
    let manifest = manifest_path(root.path());
    for attempt in 0..3u64 {
        let mut child = spawn(&[
            "--landing-dir",
            landing.to_str().expect("utf8"),
            "--manifest",
            manifest.to_str().expect("utf8"),
            "--events-per-second",
            "0",
            "--rows-per-file",
            "20000",
            "--max-pending-files",
            "100000",
            "--bad-row-share",
            "0",
        ]);
        // Start-up waits for the next whole second (up to 1 s) without --start-time.
        std::thread::sleep(Duration::from_millis(1_300 + 170 * attempt));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert_only_complete_files(&landing, &manifest);
    }
    assert!(!csv_files(&landing).is_empty(), "some files were written");
    // A restart cleans the dot-temp files of the killed runs.
    run_ok(&[
        "--landing-dir",
        landing.to_str().expect("utf8"),
        "--total-rows",
        "1",
        "--max-pending-files",
        "100000",
    ]);
    let leftovers: Vec<String> = std::fs::read_dir(&landing)
        .expect("ls")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sigterm_lands_the_current_file_and_exits_0() {
    let root = tempfile::tempdir().expect("tmp");
    let landing = root.path().join("landing");
    let manifest = manifest_path(root.path());
    // Throttled with a huge file: the stop comes in the middle of it.
    let mut child = spawn(&[
        "--landing-dir",
        landing.to_str().expect("utf8"),
        "--manifest",
        manifest.to_str().expect("utf8"),
        "--events-per-second",
        "2000",
        "--rows-per-file",
        "1000000",
        "--seconds-per-file",
        "0",
    ]);
    // Start-up waits up to 1 s for the next whole second, then ~0.7 s of rows.
    std::thread::sleep(Duration::from_millis(1_700));
    signal(&child, libc::SIGTERM);
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "exit status {status}: {stderr}");
    let files = csv_files(&landing);
    assert_eq!(files.len(), 1, "{files:?}");
    let listed = read_manifest(&manifest);
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].rows > 100,
        "about 1400 rows expected: {:?}",
        listed[0]
    );
    assert_only_complete_files(&landing, &manifest);
    assert_eq!(std::fs::read_dir(&landing).expect("ls").count(), 1);
}

#[test]
fn backpressure_pauses_at_the_limit_and_resumes() {
    let root = tempfile::tempdir().expect("tmp");
    let landing = root.path().join("landing");
    let mut child = spawn(&[
        "--landing-dir",
        landing.to_str().expect("utf8"),
        "--events-per-second",
        "0",
        "--rows-per-file",
        "100",
        "--max-pending-files",
        "2",
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || landing.exists()
            && csv_files(&landing).len() >= 2),
        "two files appear"
    );
    std::thread::sleep(Duration::from_millis(500));
    let first = csv_files(&landing);
    assert_eq!(first.len(), 2, "stays paused at the limit: {first:?}");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running"
    );

    // Consume them: writing resumes with new files.
    for name in &first {
        std::fs::remove_file(landing.join(name)).expect("consume");
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = csv_files(&landing);
            now.len() == 2 && now.iter().all(|n| !first.contains(n))
        }),
        "two new files appear after consuming"
    );
    signal(&child, libc::SIGTERM);
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}
