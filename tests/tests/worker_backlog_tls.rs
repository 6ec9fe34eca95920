//! A worker restarted on a large backlog, and a worker talking TLS to PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_testkit::pg::{self, PgCluster, PgOptions};
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;

/// 10,000 files already waiting when the worker starts: it must drain them all (no
/// stall on the listing, no batch larger than its limits) and load each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_ten_thousand_files_drains_exactly_once() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let files = 10_000usize;
    let data = Dataset::generate(root.path(), files as u64, 5, 0.05, 5).expect("dataset");
    let s = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--after-commit", "delete"]);
    let landing = s.landing.clone();
    data.release(&landing, 0..files).expect("release");
    let started = Instant::now();
    let mut w = WorkerProc::spawn(s).expect("worker");
    let client = db.connect().await.expect("connect");
    let log = root.path().join("w-0.log");
    wait_settled(&client, &landing, files, Duration::from_secs(240), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nworker log:\n{}", tail(&log, 40)));
    println!(
        "drained {files} files in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    let (batches, biggest): (i64, i32) = {
        let row = client
            .query_one("SELECT count(*), max(files) FROM (SELECT batch_id, count(*)::int AS files FROM sluice_files GROUP BY batch_id) b", &[])
            .await
            .expect("batches");
        (row.get(0), row.get(1))
    };
    assert!(
        biggest <= 256,
        "no batch exceeds the default max-files limit: {biggest}"
    );
    assert!(
        batches >= (files as i64) / 256,
        "the backlog was split into batches: {batches}"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it, plus an
/// unrelated CA; files readable by the PostgreSQL server user.
fn make_certs(dir: &Path) {
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write ext");
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=sluice test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    // PostgreSQL insists on a private key owned by its user and not readable by others.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if is_root {
        let ok = Command::new("chown")
            .args(["postgres", "server.key", "server.crt"])
            .current_dir(dir)
            .status()
            .expect("chown");
        assert!(ok.success());
        let ok = Command::new("chmod")
            .args(["755", "."])
            .current_dir(dir)
            .status()
            .expect("chmod");
        assert!(ok.success());
    }
    let ok = Command::new("chmod")
        .args(["600", "server.key"])
        .current_dir(dir)
        .status()
        .expect("chmod");
    assert!(ok.success());
}

async fn ssl_in_use(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// One worker with `flags` loads three generated files into `db`, exactly once; returns
/// the still-running worker (dropping it kills it) and a client.
async fn load_three_files(
    dir: &Path,
    db: &pg::TestDb,
    flags: &[&str],
) -> (WorkerProc, tokio_postgres::Client) {
    let data = Dataset::generate(dir, 3, 500, 0.02, 3).expect("dataset");
    let s = WorkerSpec::in_root(dir, "w-tls", db.url(), flags);
    let (landing, log) = (s.landing.clone(), s.log.clone());
    data.release(&landing, 0..3).expect("release");
    let mut w = WorkerProc::spawn(s).expect("worker");
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 3, Duration::from_secs(60), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log, 30)));
    verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (w, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full_work_and_a_wrong_ca_is_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let cluster = tokio::task::spawn_blocking({
        let dir = certs.path().to_path_buf();
        move || {
            PgCluster::start_with(
                PgOptions::fast()
                    .setting("ssl", "on")
                    .setting(
                        "ssl_cert_file",
                        dir.join("server.crt").display().to_string(),
                    )
                    .setting("ssl_key_file", dir.join("server.key").display().to_string()),
            )
        }
    })
    .await
    .expect("task")
    .expect("cluster with TLS");
    let root = tempfile::tempdir().expect("tempdir");

    // sslmode=require: encrypted, certificate not checked.
    let db = cluster.create_database().await.expect("database");
    let (worker, client) =
        load_three_files(&root.path().join("a"), &db, &["--sslmode", "require"]).await;
    let (ssl, all) = ssl_in_use(&client).await;
    assert!(
        all > 0 && ssl == all,
        "every worker connection uses TLS: {ssl}/{all}"
    );
    drop(worker);

    // sslmode=verify-full with the right CA.
    let db = cluster.create_database().await.expect("database");
    let ca = certs.path().join("ca.crt").display().to_string();
    load_three_files(
        &root.path().join("b"),
        &db,
        &["--sslmode", "verify-full", "--ssl-root-cert", &ca],
    )
    .await;

    // verify-full with a CA that did not sign the server certificate: refused, reported,
    // nothing loaded, and the worker stays up (retrying) instead of crash-looping.
    let db = cluster.create_database().await.expect("database");
    let other = certs.path().join("other-ca.crt").display().to_string();
    let s = WorkerSpec::in_root(
        &root.path().join("c"),
        "w-bad",
        db.url(),
        &["--sslmode", "verify-full", "--ssl-root-cert", &other],
    );
    let log = s.log.clone();
    let mut w = WorkerProc::spawn(s).expect("worker");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        w.check_alive()
            .expect("the worker keeps running while it cannot connect");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot connect to PostgreSQL") || text.contains("PostgreSQL unreachable")
        {
            assert!(
                text.to_lowercase().contains("certificate"),
                "the log names the certificate problem:\n{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection error reported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = db.connect().await.expect("connect");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'sluice_files'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(tables, 0, "an unverified server was never written to");
}
