//! The durable store: SQLite through rusqlite, WAL mode, versioned migrations.
//!
//! One writer thread owns the write connection. Writes are jobs (closures over the
//! connection) sent to it; it runs as many queued jobs as it finds in one SQLite
//! transaction (group commit), each inside its own SAVEPOINT so a failing job rolls back
//! alone, and answers each job only after the COMMIT returned. So a caller that got its
//! answer knows the change is on disk: the OCPP layer sends a CALLRESULT only then, which
//! is why a SIGKILL never loses anything a charger was told we have.
//!
//! Reads go through a separate connection (WAL lets readers run beside the writer).

mod schema;

use crate::config::{StoreConfig, Synchronous};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub use schema::MIGRATIONS;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("serialising a stored value: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store is closed")]
    Closed,
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("starting the writer thread: {0}")]
    Thread(std::io::Error),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the database schema version {found} is newer than this agent knows ({known})")]
    TooNew { found: i64, known: i64 },
}

type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Deliver + Send>;

/// Observes commit latency (seconds) and batch sizes; implemented by the metrics module.
pub trait WriteObserver: Send + Sync {
    fn commit(&self, seconds: f64, jobs: usize);
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
}

/// Most jobs committed together in one SQLite transaction.
const MAX_BATCH: usize = 512;

impl Store {
    /// Opens (creating if needed) the database, runs migrations and starts the writer.
    pub fn open(config: &StoreConfig, observer: Arc<dyn WriteObserver>) -> Result<Store, StoreError> {
        let writer = open_connection(&config.path, config.synchronous)?;
        schema::migrate(&writer)?;
        // SQLite's automatic checkpoint runs inside the committing writer and stalls it
        // for tens of milliseconds now and then; a separate connection checkpoints
        // passively instead (it never blocks the writer; WAL readers and writers go on).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let reader = open_connection(&config.path, config.synchronous)?;
        let checkpointer = open_connection(&config.path, config.synchronous)?;
        let (jobs, rx) = mpsc::channel::<Job>(16 * 1024);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx, observer))
            .map_err(StoreError::Thread)?;
        let alive = jobs.downgrade();
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, alive))
            .map_err(StoreError::Thread)?;
        Ok(Store { jobs, reader: Arc::new(Mutex::new(reader)) })
    }

    /// Runs `f` in the writer's transaction and returns its result once committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = run_in_savepoint(conn, f);
            Box::new(move |commit: Result<(), String>| {
                let out = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Commit(e)),
                };
                let _ = tx.send(out);
            }) as Deliver
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read-only query on the reader connection (off the async runtime).
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run_in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, observer: Arc<dyn WriteObserver>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let n = batch.len();
        let mut deliveries: Vec<Deliver> = Vec::with_capacity(n);
        let begin = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begin {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store: cannot begin a transaction");
            // The jobs never ran: dropping them drops their reply senders, so every
            // caller sees `StoreError::Closed` instead of waiting forever.
            batch.clear();
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        for job in batch.drain(..) {
            deliveries.push(job(&conn));
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, "store: commit failed, rolling back the batch");
            let _ = conn.execute_batch("ROLLBACK");
        }
        observer.commit(started.elapsed().as_secs_f64(), n);
        for d in deliveries {
            d(commit.clone());
        }
    }
}

/// Checkpoints the WAL every second while the store is in use; stops when every store
/// handle is gone.
fn checkpoint_loop(conn: Connection, alive: mpsc::WeakSender<Job>) {
    while alive.upgrade().is_some() {
        std::thread::sleep(Duration::from_secs(1));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "store: WAL checkpoint failed");
        }
    }
}

/// Current UTC time as stored: RFC 3339 with milliseconds and `Z`, so text order is
/// time order.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoObs;
    impl WriteObserver for NoObs {
        fn commit(&self, _: f64, _: usize) {}
    }

    fn store(dir: &tempfile::TempDir) -> Store {
        let cfg = StoreConfig { path: dir.path().join("t.db"), ..StoreConfig::default() };
        Store::open(&cfg, Arc::new(NoObs)).expect("open")
    }

    #[tokio::test]
    async fn failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let ok =
            s.write(|c| Ok(c.execute("INSERT INTO id_tags(id_tag,status,source) VALUES ('A','Accepted','t')", [])?));
        let bad = s.write(|c| {
            c.execute("INSERT INTO id_tags(id_tag,status,source) VALUES ('B','Accepted','t')", [])?;
            Err::<(), _>(StoreError::Conflict("no".into()))
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert_eq!(ok.expect("ok"), 1);
        assert!(matches!(bad, Err(StoreError::Conflict(_))));
        let n: i64 =
            s.read(|c| Ok(c.query_row("SELECT count(*) FROM id_tags", [], |r| r.get(0))?)).await.expect("read");
        assert_eq!(n, 1, "the failed job's insert must be rolled back");
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = store(&dir);
            s.write(|c| Ok(c.execute("INSERT INTO id_tags(id_tag,status,source) VALUES ('A','Accepted','t')", [])?))
                .await
                .expect("insert");
        }
        let s = store(&dir);
        let (n, v): (i64, i64) = s
            .read(|c| {
                let n = c.query_row("SELECT count(*) FROM id_tags", [], |r| r.get(0))?;
                let v = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((n, v))
            })
            .await
            .expect("read");
        assert_eq!(n, 1);
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("t").with_timezone(&chrono::Utc);
        let b = a + chrono::Duration::milliseconds(5);
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(b)), Some(b));
    }
}
