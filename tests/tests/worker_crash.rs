//! The delivery guarantee under fire: workers SIGKILLed at random moments, PostgreSQL
//! crash-restarted, a worker frozen (SIGSTOP) past the claim timeout with its transaction
//! open, bursts of lock timeouts on `events`, workers added and removed mid-run. Each test
//! has its own PostgreSQL cluster because it restarts or stops it.
//!
//! Size is adjustable for the long variant (scripts/crash-test-long):
//! SLUICE_CRASH_FILES, SLUICE_CRASH_ROWS_PER_FILE, SLUICE_CRASH_KILLS,
//! SLUICE_CRASH_PG_RESTARTS, SLUICE_CRASH_FREEZES, SLUICE_CRASH_FREEZE_SECONDS,
//! SLUICE_CRASH_LOCK_BURSTS, SLUICE_CRASH_SEED.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_testkit::pg::{PgCluster, TestDb};
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_no_leftovers, wait_settled};
use sluice_testkit::verify;
use tokio_postgres::{Client, Row};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workers' claim timeout, which per the contract is also their `lock_timeout`,
/// `statement_timeout` and `idle_in_transaction_session_timeout`.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// "A few seconds" on top of the claim timeout: no worker statement may wait on a lock
/// longer than `CLAIM_TIMEOUT + LOCK_WAIT_SLACK` (issue 8: a survivor never waits on a
/// frozen peer's locks much longer than the claim timeout).
const LOCK_WAIT_SLACK: Duration = Duration::from_secs(3);

/// How long a lock burst holds ACCESS EXCLUSIVE on `events`: longer than the workers'
/// `lock_timeout`, so a commit queued behind it times out at least once.
const LOCK_HOLD: Duration = Duration::from_millis(3_500);

/// Small batches and a short claim timeout, so kills land mid-batch and orphaned claims
/// are taken over quickly.
const WORKER_FLAGS: [&str; 10] = [
    "--max-files",
    "4",
    "--claim-timeout-seconds",
    "2",
    "--poll-interval-ms",
    "100",
    "--shutdown-grace-seconds",
    "10",
    "--log-format",
    "text",
];

fn worker(root: &Path, id: &str, url: &str) -> WorkerProc {
    WorkerProc::spawn(WorkerSpec::in_root(root, id, url, &WORKER_FLAGS)).expect("spawn worker")
}

fn checkpoint_dirs(root: &Path, ids: &[&str]) -> Vec<PathBuf> {
    ids.iter()
        .map(|id| root.join("checkpoints").join(id))
        .collect()
}

fn logs(root: &Path, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "--- {id} ---\n{}",
                tail(&root.join(format!("{id}.log")), 25)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines of the workers' logs holding any of `needles`.
fn count_in_logs(root: &Path, ids: &[&str], needles: &[&str]) -> usize {
    ids.iter()
        .map(|id| std::fs::read_to_string(root.join(format!("{id}.log"))).unwrap_or_default())
        .map(|log| {
            log.lines()
                .filter(|l| needles.iter().any(|n| l.contains(n)))
                .count()
        })
        .sum()
}

/// A connection for looking at `pg_stat_activity` and `pg_locks`, reopened after
/// PostgreSQL restarts. Queries that fail (server restarting) answer `None`.
struct Monitor {
    db: TestDb,
    client: Option<Client>,
}

impl Monitor {
    fn new(db: TestDb) -> Monitor {
        Monitor { db, client: None }
    }

    async fn query(&mut self, sql: &str) -> Option<Vec<Row>> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = self.db.connect().await.ok();
        }
        let rows = self.client.as_ref()?.query(sql, &[]).await;
        if rows.is_err() {
            self.client = None;
        }
        rows.ok()
    }

    /// Client ports of the sessions inside a transaction block right now: running a
    /// COPY, or between two statements. (A single autocommit statement also has an
    /// open transaction, but it ends by itself even if its client is stopped.)
    async fn ports_in_transaction(&mut self) -> Vec<u16> {
        self.query(
            "SELECT client_port FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND xact_start IS NOT NULL
               AND (state LIKE 'idle in transaction%'
                    OR (state = 'active' AND query ILIKE 'copy%'))
               AND client_port IS NOT NULL AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| u16::try_from(r.get::<_, i32>(0)).ok())
        .collect()
    }
}

/// The longest lock wait of any session seen so far, outside lock bursts (which make
/// workers wait on purpose).
#[derive(Default)]
struct LockWaits {
    longest: Mutex<(f64, String)>,
    paused: AtomicBool,
    stop: AtomicBool,
}

async fn watch_lock_waits(db: TestDb, waits: Arc<LockWaits>) {
    let mut mon = Monitor::new(db);
    while !waits.stop.load(Ordering::SeqCst) {
        if !waits.paused.load(Ordering::SeqCst)
            && let Some(rows) = mon
                .query(
                    "SELECT extract(epoch FROM clock_timestamp() - query_start)::float8,
                            left(query, 120)
                     FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'
                     ORDER BY 1 DESC LIMIT 1",
                )
                .await
            && let Some(r) = rows.first()
            // A burst may have begun while the query ran.
            && !waits.paused.load(Ordering::SeqCst)
        {
            let seconds: f64 = r.get(0);
            let mut longest = waits.longest.lock().expect("lock");
            if seconds > longest.0 {
                *longest = (seconds, r.get(1));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGSTOPs a worker caught with a transaction open (the case that leaves row locks
/// behind), trying for up to 5 s while `trickle` (called every 100 ms) keeps files coming;
/// if none is caught, stops a random worker. Returns its index and whether it was caught
/// mid-transaction.
async fn freeze_a_worker(
    workers: &[WorkerProc],
    mon: &mut Monitor,
    pg_port: u16,
    rng: &mut StdRng,
    mut trickle: impl FnMut(),
) -> (usize, bool) {
    // The workers' connections, refreshed when an open session is not among them (a
    // worker reconnected); reading /proc on every poll would make the polls too slow
    // to see a transaction that lasts tens of milliseconds.
    let connections = || -> Vec<Vec<u16>> {
        workers
            .iter()
            .map(|w| w.tcp_client_ports(pg_port))
            .collect()
    };
    let mut ports = connections();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut next_file = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_file {
            trickle();
            next_file += Duration::from_millis(100);
        }
        let open = mon.ports_in_transaction().await;
        if open.iter().any(|p| !ports.iter().flatten().any(|q| q == p)) {
            ports = connections();
        }
        if let Some(i) = ports
            .iter()
            .position(|c| c.iter().any(|p| open.contains(p)))
        {
            workers[i].freeze();
            // Still open a moment later: not a transaction that ended as the signal landed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let open = mon.ports_in_transaction().await;
            if workers[i]
                .tcp_client_ports(pg_port)
                .iter()
                .any(|p| open.contains(p))
            {
                return (i, true);
            }
            workers[i].thaw();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let i = rng.random_range(0..workers.len());
    workers[i].freeze();
    (i, false)
}

/// Holds ACCESS EXCLUSIVE on `events` for [`LOCK_HOLD`] from a connection of its own;
/// `release` runs right after the lock is taken, so that the commits of the files it
/// releases queue behind the lock. Returns how many samples saw a session waiting for it.
async fn lock_burst(db: &TestDb, mon: &mut Monitor, release: impl FnOnce()) -> u32 {
    let c = db.connect().await.expect("connect for the lock burst");
    c.batch_execute("SET lock_timeout = '30s'; BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("LOCK TABLE events");
    release();
    let until = Instant::now() + LOCK_HOLD;
    let mut blocked = 0;
    while Instant::now() < until {
        let waiting = mon
            .query(
                "SELECT count(*) FROM pg_locks
                 WHERE NOT granted AND relation = 'events'::regclass",
            )
            .await
            .and_then(|rows| rows.first().map(|r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if waiting > 0 {
            blocked += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.batch_execute("COMMIT")
        .await
        .expect("COMMIT the lock burst");
    blocked
}

/// Files released around each freeze (a third before, the rest one by one while a
/// worker is being caught): busy workers, so that one can be caught with its
/// transaction open.
const FREEZE_CHUNK: usize = 30;

/// Files released right after a lock burst takes its lock: their commits queue behind it.
const BURST_CHUNK: usize = 8;

/// Releases the dataset into the landing zone over the chaos phase: a share on every
/// kill step (as many as keep three workers busy), and chunks kept back for the freezes
/// and lock bursts, whichever comes first taking from the rest.
struct Feed {
    files: usize,
    released: usize,
    kept_back: usize,
    per_step: usize,
}

impl Feed {
    fn new(files: usize, kills: u32, freezes: u32, bursts: u32) -> Feed {
        let kept_back =
            (FREEZE_CHUNK * freezes as usize + BURST_CHUNK * bursts as usize).min(files / 2);
        Feed {
            files,
            released: 0,
            kept_back,
            per_step: (files - kept_back).div_ceil(kills.max(1) as usize).max(1),
        }
    }

    /// How many files to release on a step; all that are not kept back once the kills
    /// are over.
    fn for_step(&self, kills_over: bool) -> usize {
        let free = self.files - self.released - self.kept_back.min(self.files - self.released);
        if kills_over {
            free
        } else {
            self.per_step.min(free)
        }
    }

    /// How many files to release for a freeze or burst (from the kept-back chunks).
    fn for_event(&mut self, chunk: usize) -> usize {
        let n = chunk.min(self.files - self.released);
        self.kept_back = self.kept_back.saturating_sub(n);
        n
    }

    fn release(&mut self, data: &Dataset, landing: &Path, n: usize) {
        data.release(landing, self.released..self.released + n)
            .expect("release");
        self.released += n;
    }
}

/// Every other kill aims at a worker with a batch in flight (a plan on its volume), so
/// that replays surely happen; the others land anywhere.
fn pick_victim(workers: &[WorkerProc], rng: &mut StdRng) -> usize {
    let busy: Vec<usize> = (0..workers.len())
        .filter(|&i| {
            std::fs::read_dir(workers[i].spec.checkpoint.join("plans")).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
        })
        .collect();
    if !busy.is_empty() && rng.random_bool(0.5) {
        busy[rng.random_range(0..busy.len())]
    } else {
        rng.random_range(0..workers.len())
    }
}

/// Whether the `done`-th of `n` events, placed at fractions `(i + offset) / n` of the
/// kills, is due.
fn due(done: u32, n: u32, offset_tenths: u32, kills: u32, min_kills: u32) -> bool {
    done < n
        && u64::from(kills) * u64::from(n) * 10
            >= u64::from(min_kills) * u64::from(done * 10 + offset_tenths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_survive_kills_and_postgres_restarts() {
    let files = env_or("SLUICE_CRASH_FILES", 300) as usize;
    let rows_per_file = env_or("SLUICE_CRASH_ROWS_PER_FILE", 1_000);
    let min_kills = env_or("SLUICE_CRASH_KILLS", 30) as u32;
    let min_pg_restarts = env_or("SLUICE_CRASH_PG_RESTARTS", 3) as u32;
    let min_freezes = env_or("SLUICE_CRASH_FREEZES", 2) as u32;
    let min_bursts = env_or("SLUICE_CRASH_LOCK_BURSTS", 2) as u32;
    // Long enough that a survivor stuck behind the frozen worker's locks would wait
    // longer than CLAIM_TIMEOUT + LOCK_WAIT_SLACK after taking its claims over.
    let freeze_for = Duration::from_secs(env_or("SLUICE_CRASH_FREEZE_SECONDS", 10));

    let cluster = Arc::new(
        tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("task")
            .expect("cluster"),
    );
    let db = cluster.create_database().await.expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, files as u64, rows_per_file, 0.01, 11).expect("dataset");
    let landing = root.join("landing");
    let ids = ["w-0", "w-1", "w-2"];
    let mut workers: Vec<WorkerProc> = ids.iter().map(|id| worker(root, id, db.url())).collect();
    let mut mon = Monitor::new(db.clone());
    let waits = Arc::new(LockWaits::default());
    let watcher = tokio::spawn(watch_lock_waits(db.clone(), waits.clone()));

    let mut rng = StdRng::seed_from_u64(env_or("SLUICE_CRASH_SEED", 42));
    let (mut kills, mut pg_restarts) = (0u32, 0u32);
    let (mut freezes, mut caught_mid_transaction) = (0u32, 0u32);
    let (mut bursts, mut bursts_waited_on) = (0u32, 0u32);
    // (worker index, when to thaw it)
    let mut frozen: Option<(usize, Instant)> = None;
    let mut feed = Feed::new(files, min_kills, min_freezes, min_bursts);
    let started = Instant::now();
    while kills < min_kills
        || pg_restarts < min_pg_restarts
        || freezes < min_freezes
        || bursts < min_bursts
        || frozen.is_some()
        || feed.released < files
    {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        if frozen.is_none() {
            let n = feed.for_step(kills >= min_kills);
            feed.release(&data, &landing, n);
            // The kill below lands while the files just released are in flight (a batch
            // takes the workers ~100 ms): idle workers would have nothing to replay.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        }

        if let Some((i, thaw_at)) = frozen {
            // While a worker is frozen the others only load: no kill ends a wait early.
            if Instant::now() >= thaw_at {
                assert!(
                    workers[i].is_stopped(),
                    "{} stayed stopped for the whole freeze",
                    ids[i]
                );
                workers[i].thaw();
                frozen = None;
                freezes += 1;
            }
        } else {
            if kills < min_kills {
                let victim = pick_victim(&workers, &mut rng);
                workers[victim].crash_and_restart().expect("restart worker");
                kills += 1;
            }
            // Spread the PostgreSQL crashes over the run.
            if pg_restarts < min_pg_restarts
                && kills >= (pg_restarts + 1) * min_kills / (min_pg_restarts + 1)
            {
                let c = cluster.clone();
                tokio::task::spawn_blocking(move || c.restart_immediate())
                    .await
                    .expect("task")
                    .expect("pg_ctl restart -m immediate");
                pg_restarts += 1;
            }
            if due(freezes, min_freezes, 4, kills, min_kills) {
                // A backlog first, then a file every 100 ms, so that the workers are busy
                // while one of them is being caught.
                let mut left = feed.for_event(FREEZE_CHUNK);
                let first = left.min(FREEZE_CHUNK / 3);
                feed.release(&data, &landing, first);
                left -= first;
                let trickle = || {
                    if left > 0 {
                        feed.release(&data, &landing, 1);
                        left -= 1;
                    }
                };
                let (i, caught) =
                    freeze_a_worker(&workers, &mut mon, db.port(), &mut rng, trickle).await;
                caught_mid_transaction += u32::from(caught);
                frozen = Some((i, Instant::now() + freeze_for));
            } else if due(bursts, min_bursts, 6, kills, min_kills) {
                waits.paused.store(true, Ordering::SeqCst);
                let n = feed.for_event(BURST_CHUNK);
                let waited = lock_burst(&db, &mut mon, || feed.release(&data, &landing, n)).await;
                bursts += 1;
                bursts_waited_on += u32::from(waited > 0);
                // Commits queued behind the burst finish before waits count again.
                tokio::time::sleep(Duration::from_millis(500)).await;
                waits.paused.store(false, Ordering::SeqCst);
            }
        }
        for w in &mut workers {
            w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let chaos = started.elapsed();
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, files, Duration::from_secs(180), || {
        for w in &mut workers {
            w.check_alive()?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    waits.stop.store(true, Ordering::SeqCst);
    watcher.await.expect("lock wait watcher");

    // Every end condition is checked, and all that fail are reported together.
    let mut failures = Vec::new();
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| {
            failures.push(format!("{e:#}"));
            "exactly once: violated".into()
        });
    if let Err(e) = wait_no_leftovers(
        &client,
        &landing,
        &checkpoint_dirs(root, &ids),
        Duration::from_secs(30),
    )
    .await
    {
        failures.push(format!("{e:#}"));
    }
    let replays = count_in_logs(
        root,
        &ids,
        &["replaying a batch", "had committed before the restart"],
    );
    let takeovers = count_in_logs(root, &ids, &["took over claims"]);
    // lock_timeout and statement_timeout are both the claim timeout; whichever timer
    // started first cancels a statement queued behind the burst.
    let server_log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    let lock_timeouts = server_log.matches("due to lock timeout").count()
        + server_log.matches("due to statement timeout").count();
    let (longest_wait, waiting_query) = waits.longest.lock().expect("lock").clone();
    println!(
        "{report}; {kills} SIGKILLs, {pg_restarts} PostgreSQL crash restarts, \
         {freezes} freezes ({caught_mid_transaction} mid-transaction), {bursts} lock bursts \
         ({bursts_waited_on} waited on, {lock_timeouts} lock timeouts), \
         {replays} batches settled after a restart, {takeovers} claim takeovers, \
         longest lock wait {longest_wait:.1}s; chaos phase {:.1}s, total {:.1}s",
        chaos.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let max_wait = CLAIM_TIMEOUT + LOCK_WAIT_SLACK;
    for (ok, what) in [
        // The recovery paths really ran.
        (
            replays > 0,
            "no batch was replayed or settled after a restart".to_string(),
        ),
        (takeovers > 0, "no worker took over another's claims".into()),
        // The faults really hit the workers: a frozen worker held a transaction open,
        // and commits queued behind a lock burst until lock_timeout cancelled them.
        (
            caught_mid_transaction > 0,
            "no freeze caught a worker with its transaction open".into(),
        ),
        (
            bursts_waited_on > 0,
            format!("no worker waited on a lock burst ({bursts} bursts)"),
        ),
        (
            lock_timeouts > 0,
            format!(
                "no worker statement was cancelled by lock_timeout or statement_timeout \
                 during {bursts} lock bursts of {LOCK_HOLD:?} (both must be the claim \
                 timeout, {CLAIM_TIMEOUT:?})"
            ),
        ),
        // No survivor waited on a frozen peer's locks much longer than the claim timeout.
        (
            longest_wait <= max_wait.as_secs_f64(),
            format!(
                "a session waited {longest_wait:.1}s on a lock (at most {max_wait:?} \
                 allowed): {waiting_query}"
            ),
        ),
    ] {
        if !ok {
            failures.push(what);
        }
    }
    assert!(
        failures.is_empty(),
        "{} end conditions failed:\n- {}\n{}",
        failures.len(),
        failures.join("\n- "),
        logs(root, &ids)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescale_two_three_one_with_a_worker_that_never_returns() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("task")
        .expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let files = 120usize;
    let data = Dataset::generate(root, files as u64, 1_000, 0.01, 21).expect("dataset");
    let landing = root.join("landing");
    let ids = ["w-0", "w-1", "w-2"];

    // Two workers.
    let mut w0 = worker(root, "w-0", db.url());
    let mut w1 = worker(root, "w-1", db.url());
    for i in 0..40 {
        data.release(&landing, i..i + 1).expect("release");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Scale to three.
    let mut w2 = worker(root, "w-2", db.url());
    for i in 40..80 {
        data.release(&landing, i..i + 1).expect("release");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Scale to one: w-1 is stopped gracefully, w-2 dies and never comes back.
    w2.kill();
    let status = w1.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "w-1 exits cleanly on SIGTERM: {status}");
    data.release(&landing, 80..files).expect("release");

    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, files, Duration::from_secs(120), || {
        w0.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    // w-2's plans stay on its volume for its return (it never returns here); the running
    // w-0 and the cleanly stopped w-1 leave none, and no claim survives its file's commit.
    wait_no_leftovers(
        &client,
        &landing,
        &checkpoint_dirs(root, &["w-0", "w-1"]),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(root, &ids)));
    println!("{report}");
    let per_worker = client
        .query(
            "SELECT worker_id, count(*) FROM sluice_files GROUP BY worker_id ORDER BY 1",
            &[],
        )
        .await
        .expect("per worker");
    let spread: Vec<(String, i64)> = per_worker.iter().map(|r| (r.get(0), r.get(1))).collect();
    println!("files per worker: {spread:?}");
    assert!(
        spread.len() >= 2,
        "work was spread across workers: {spread:?}"
    );
}
