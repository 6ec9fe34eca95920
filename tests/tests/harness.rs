//! The test harness itself: the throwaway PostgreSQL cluster and the binary locator.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::bins;
use sluice_testkit::pg::{self, PgCluster, PgOptions};

async fn show(client: &tokio_postgres::Client, setting: &str) -> anyhow::Result<String> {
    Ok(client
        .query_one(&format!("SHOW {setting}"), &[])
        .await?
        .get(0))
}

#[tokio::test]
async fn shared_cluster_answers_with_test_settings() -> anyhow::Result<()> {
    let cluster = pg::shared().await;
    assert!(cluster.is_running());
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(
        cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists(),
        "unix socket in {}",
        cluster.socket_dir().display()
    );
    assert!(cluster.pg_bin().join("postgres").is_file());

    let client = cluster.connect("postgres").await?;
    assert_eq!(show(&client, "fsync").await?, "on");
    assert_eq!(show(&client, "synchronous_commit").await?, "on");
    assert_eq!(show(&client, "max_connections").await?, "200");
    assert_eq!(show(&client, "shared_buffers").await?, "128MB");
    assert_eq!(show(&client, "listen_addresses").await?, "127.0.0.1");

    // The URL form works too.
    let by_url = pg::connect(&cluster.url_for("postgres")).await?;
    let one: i32 = by_url.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test]
async fn each_test_database_is_isolated() -> anyhow::Result<()> {
    let cluster = pg::shared().await;
    let a = cluster.create_database().await?;
    let b = cluster.create_database().await?;
    assert_ne!(a.name(), b.name());
    assert!(
        a.name().contains("each_test_database_is_isolated"),
        "{}",
        a.name()
    );

    let ca = a.connect().await?;
    let cb = b.connect().await?;
    ca.batch_execute("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)")
        .await?;
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(in_b, 0);
    let current: String = cb.query_one("SELECT current_database()", &[]).await?.get(0);
    assert_eq!(current, b.name());
    Ok(())
}

#[tokio::test]
async fn committed_data_survives_an_immediate_restart() -> anyhow::Result<()> {
    // A private cluster: restarting the shared one would break concurrent tests.
    let cluster = PgCluster::start()?;
    let db = cluster.create_database().await?;
    let client = db.connect().await?;
    assert_eq!(show(&client, "fsync").await?, "on");
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await?;

    cluster.restart_immediate()?;
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "old sessions are killed"
    );
    assert!(
        cluster.log_tail(200).contains("not properly shut down"),
        "crash recovery ran:\n{}",
        cluster.log_tail(50)
    );

    let client = db.connect().await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);

    // A clean stop and start keeps the port.
    let port = cluster.port();
    cluster.stop()?;
    assert!(!cluster.is_running());
    assert!(db.connect().await.is_err());
    cluster.start_again()?;
    assert_eq!(cluster.port(), port);
    let n: i64 = db
        .connect()
        .await?
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);

    let root = cluster.root_dir().to_path_buf();
    drop(cluster);
    assert!(!root.exists(), "drop removes {}", root.display());
    assert!(!accepts_connections(port));
    Ok(())
}

#[tokio::test]
async fn options_apply_and_override() -> anyhow::Result<()> {
    let cluster = PgCluster::start_with(PgOptions::fast().setting("work_mem", "8MB"))?;
    let client = cluster.connect("postgres").await?;
    assert_eq!(show(&client, "fsync").await?, "off");
    assert_eq!(show(&client, "synchronous_commit").await?, "off");
    assert_eq!(show(&client, "work_mem").await?, "8MB");
    Ok(())
}

#[test]
fn missing_binary_says_how_to_build_it() {
    let err = bins::try_bin_path("sluice-no-such-binary").expect_err("does not exist");
    assert!(
        err.contains(
            "binary sluice-no-such-binary not built: run `cargo build --workspace --bins` first"
        ),
        "{err}"
    );
    let dir = bins::bin_dir().expect("bin dir");
    assert!(
        std::env::var_os(bins::BIN_DIR_ENV).is_some()
            || std::env::current_exe()
                .expect("current exe")
                .starts_with(&dir),
        "{} should contain the test executable",
        dir.display()
    );
}

// --- Cleanup when the test process dies -------------------------------------------

const HELPER_ENV: &str = "SLUICE_HARNESS_HELPER";
const HELPER_TEST: &str = "helper_starts_a_cluster_then_dies";
const MARKER: &str = "SLUICE_HELPER_CLUSTER";

/// Not a test on its own: run by `cluster_is_cleaned_up_when_the_test_process_dies` in
/// a child process, with `SLUICE_HARNESS_HELPER` saying how to die.
#[tokio::test]
async fn helper_starts_a_cluster_then_dies() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let local;
    let cluster = if mode == "exit" {
        local = PgCluster::start().expect("start a cluster");
        &local
    } else {
        pg::shared().await
    };
    println!(
        "{MARKER} port={} root={}",
        cluster.port(),
        cluster.root_dir().display()
    );
    match mode.as_str() {
        // libtest catches the panic; the shared cluster lives in a static that is never
        // dropped.
        "panic" => panic!("helper panics on purpose"),
        // No destructor runs at all.
        "exit" => std::process::exit(3),
        // Killed by the parent with SIGKILL.
        _ => std::thread::sleep(Duration::from_secs(120)),
    }
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn die_and_check_cleanup(mode: &str) {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the helper");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut found = None;
    let mut seen = String::new();
    for line in stdout.lines().map_while(Result::ok) {
        // libtest may print "test <name> ... " on the same line first.
        if let Some(at) = line.find(MARKER) {
            found = Some(line[at + MARKER.len()..].trim().to_string());
            break;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    if mode == "kill" {
        child.kill().expect("kill the helper");
    }
    let status = child.wait().expect("wait for the helper");
    let stderr = stderr_reader.join().unwrap_or_default();
    let info = found.unwrap_or_else(|| {
        panic!("[{mode}] helper printed no cluster ({status}):\n{seen}\nstderr:\n{stderr}")
    });
    assert!(!status.success(), "[{mode}] helper should have died");

    let mut port = None;
    let mut root = None;
    for field in info.split_whitespace() {
        if let Some(p) = field.strip_prefix("port=") {
            port = p.parse::<u16>().ok();
        } else if let Some(r) = field.strip_prefix("root=") {
            root = Some(PathBuf::from(r));
        }
    }
    let (port, root) = port.zip(root).expect("port and root in the marker line");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = accepts_connections(port);
        let exists = root.exists();
        if !listening && !exists {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{mode}] 10 s after the helper died: port {port} listening={listening}, {} exists={exists}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_is_cleaned_up_when_the_test_process_dies() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    for mode in ["panic", "exit", "kill"] {
        die_and_check_cleanup(mode);
    }
}
