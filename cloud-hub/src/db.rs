//! The hub's database: SQLite (the single-machine default) or PostgreSQL (several hub
//! replicas), with migrations for both.
//!
//! Both databases run the same SQL text (`$1`-style parameters work in both, as do
//! `INSERT ... ON CONFLICT ... DO UPDATE` and `RETURNING`); what differs is the schema's
//! types (`migrations/sqlite`, `migrations/postgres`), how a transaction takes the
//! site's lock ([`Store::begin`], [`Tx::lock_site`]), and the date arithmetic of the
//! dashboard's charts (`dashboard::charts`, chosen by [`Store::backend`]). To write the logic once, values go
//! in and out as [`Val`] and each statement is bound for the backend at hand.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres, Row as _, SqlSafeStr, Sqlite, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::DbTarget;

/// A database error with what the hub was doing.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database: stored data: {0}")]
    Data(String),
    #[error("database: column {index} of `{sql}` is not a {expected:?}")]
    Shape { sql: &'static str, index: usize, expected: Ty },
}

/// A value bound to or read from a statement. `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(Option<i64>),
    Real(Option<f64>),
    /// Shared, so that binding it (and repeating it in many rows) copies nothing.
    Text(Option<Arc<str>>),
    Time(Option<DateTime<Utc>>),
    Bool(Option<bool>),
    Json(Option<Value>),
}

/// The type to read a column as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    Int,
    Real,
    Text,
    Time,
    Bool,
    Json,
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::Real(Some(v))
    }
}
impl From<Option<f64>> for Val {
    fn from(v: Option<f64>) -> Self {
        Val::Real(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(Arc::from(v)))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(Arc::from(v)))
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(Some(Arc::from(v.as_str())))
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::Text(v.map(Arc::from))
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Self {
        Val::Text(v.as_deref().map(Arc::from))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v.map(Arc::from))
    }
}

impl From<DateTime<Utc>> for Val {
    fn from(v: DateTime<Utc>) -> Self {
        Val::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Val {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Val::Time(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(Some(v))
    }
}
impl From<Value> for Val {
    fn from(v: Value) -> Self {
        Val::Json(Some(v))
    }
}

/// A row read as the [`Ty`]s asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Val>);

impl Row {
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(Val::Int(v)) => *v,
            _ => None,
        }
    }
    pub fn real(&self, i: usize) -> Option<f64> {
        match self.0.get(i) {
            Some(Val::Real(v)) => *v,
            _ => None,
        }
    }
    pub fn text(&self, i: usize) -> Option<&str> {
        match self.0.get(i) {
            Some(Val::Text(v)) => v.as_deref(),
            _ => None,
        }
    }
    pub fn time(&self, i: usize) -> Option<DateTime<Utc>> {
        match self.0.get(i) {
            Some(Val::Time(v)) => *v,
            _ => None,
        }
    }
    pub fn bool(&self, i: usize) -> Option<bool> {
        match self.0.get(i) {
            Some(Val::Bool(v)) => *v,
            _ => None,
        }
    }
    pub fn json(&self, i: usize) -> Option<&Value> {
        match self.0.get(i) {
            Some(Val::Json(v)) => v.as_ref(),
            _ => None,
        }
    }
}

/// Binds every value in order (a macro: the two backends' query types differ, the code
/// does not).
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Val::Int(v) => q.bind(*v),
                Val::Real(v) => q.bind(*v),
                Val::Text(v) => q.bind(v.clone()),
                Val::Time(v) => q.bind(*v),
                Val::Bool(v) => q.bind(*v),
                Val::Json(v) => q.bind(v.clone().map(Json)),
            };
        }
        q
    }};
}

/// Reads one row as `types` (a macro for the same reason as [`bind_all`]).
macro_rules! decode_row {
    ($row:expr, $types:expr, $sql:expr) => {{
        let row = $row;
        let mut out = Vec::with_capacity($types.len());
        for (i, t) in $types.iter().enumerate() {
            let shape = |_| DbError::Shape { sql: $sql, index: i, expected: *t };
            out.push(match t {
                Ty::Int => Val::Int(row.try_get::<Option<i64>, _>(i).map_err(shape)?),
                Ty::Real => Val::Real(row.try_get::<Option<f64>, _>(i).map_err(shape)?),
                Ty::Text => Val::Text(row.try_get::<Option<String>, _>(i).map_err(shape)?.map(Arc::from)),
                Ty::Time => Val::Time(row.try_get::<Option<DateTime<Utc>>, _>(i).map_err(shape)?),
                Ty::Bool => Val::Bool(row.try_get::<Option<bool>, _>(i).map_err(shape)?),
                Ty::Json => Val::Json(row.try_get::<Option<Json<Value>>, _>(i).map_err(shape)?.map(|j| j.0)),
            });
        }
        Row(out)
    }};
}

/// The row counts a multi-row insert ([`Tx::insert_rows`]) is cut into. 256 rows of 15
/// columns are 3 840 parameters, far below both databases' limits (SQLite 32 766,
/// PostgreSQL 65 535).
pub const ROW_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// How a multi-row statement writes its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Placeholders {
    /// `$1, $2, ...` (PostgreSQL).
    Numbered,
    /// `?, ?, ...` in order (SQLite). sqlx binds a named or numbered SQLite parameter by
    /// asking SQLite its name, which walks a list of every parameter: thousands of `$N` in
    /// one statement cost time quadratic in their number (measured: 68 % of a backlog
    /// drain's CPU), anonymous ones nothing.
    Anonymous,
}

/// `head SELECT * FROM UNNEST($1::text[], ...)` for PostgreSQL, made once per shape.
fn unnest_sql(head: &'static str, types: &[Ty]) -> Arc<str> {
    type Made = Mutex<HashMap<(&'static str, Vec<Ty>), Arc<str>>>;
    static MADE: OnceLock<Made> = OnceLock::new();
    let made = MADE.get_or_init(|| Mutex::new(HashMap::new()));
    let build = || -> Arc<str> {
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let ty = match t {
                    Ty::Int => "bigint",
                    Ty::Real => "double precision",
                    Ty::Text => "text",
                    Ty::Time => "timestamptz",
                    Ty::Bool => "boolean",
                    Ty::Json => "jsonb",
                };
                format!("${}::{ty}[]", i + 1)
            })
            .collect();
        Arc::from(format!("{head} SELECT * FROM UNNEST({})", arrays.join(", ")))
    };
    match made.lock() {
        Ok(mut m) => m.entry((head, types.to_vec())).or_insert_with(build).clone(),
        Err(_) => build(),
    }
}

/// `head VALUES ($1, ..., $cols), ...` (or `(?, ..., ?), ...`) for `rows` rows, made once
/// per shape.
fn values_sql(head: &'static str, cols: usize, rows: usize, style: Placeholders) -> Arc<str> {
    type Made = Mutex<HashMap<(&'static str, usize, usize, Placeholders), Arc<str>>>;
    static MADE: OnceLock<Made> = OnceLock::new();
    let made = MADE.get_or_init(|| Mutex::new(HashMap::new()));
    let build = || -> Arc<str> {
        let mut sql = String::with_capacity(head.len() + rows * cols * 6);
        sql.push_str(head);
        sql.push_str(" VALUES ");
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..cols {
                if c > 0 {
                    sql.push_str(", ");
                }
                match style {
                    Placeholders::Numbered => {
                        sql.push('$');
                        sql.push_str(&(r * cols + c + 1).to_string());
                    }
                    Placeholders::Anonymous => sql.push('?'),
                }
            }
            sql.push(')');
        }
        Arc::from(sql)
    };
    match made.lock() {
        Ok(mut m) => m.entry((head, cols, rows, style)).or_insert_with(build).clone(),
        Err(_) => build(),
    }
}

/// The pool of either backend.
#[derive(Debug, Clone)]
pub enum Store {
    /// The pool, and the turns its write transactions take (see [`Store::begin`]).
    Sqlite(SqlitePool, Arc<Writers>),
    Postgres(PgPool),
}

/// An open transaction of either backend.
pub enum Tx {
    /// The transaction, and this process's SQLite write turn until it ends.
    Sqlite(Transaction<'static, Sqlite>, Turn),
    Postgres(Transaction<'static, Postgres>),
}

/// The SQLite writers of this process: their turns, and the WAL checkpoints that follow
/// their commits.
///
/// SQLite's automatic checkpoint runs inside a commit: every 1 000 WAL pages, the writer
/// that crosses the mark copies the WAL into the database file before its commit returns,
/// while every other writer waits for its turn (in a run of ingest, a third of the time
/// in the write lock). Here a commit instead starts a PASSIVE checkpoint on another pooled
/// connection, at most every [`CHECKPOINT_EVERY`]: it runs beside the next writers (a
/// WAL checkpoint does not block them) and stays out of every commit's time. SQLite's own
/// stays as the bound of the WAL, at [`WAL_AUTOCHECKPOINT_PAGES`], for a process whose
/// writes somehow go by without one.
#[derive(Debug)]
pub struct Writers {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether a checkpoint is running, and when the last one started.
    checkpoint: Mutex<(bool, Option<std::time::Instant>)>,
}

/// How often a commit starts a WAL checkpoint at most.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// SQLite's own checkpoint, only reached when [`Writers`]' do not run (4 KiB pages: 64 MB).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

impl Writers {
    fn new() -> Self {
        Writers { turn: Arc::default(), checkpoint: Mutex::new((false, None)) }
    }

    /// After a commit: starts a checkpoint when none runs and the last is long enough ago.
    fn committed(self: &Arc<Self>, pool: &SqlitePool) {
        {
            let mut c = self.checkpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.0 || c.1.is_some_and(|at| at.elapsed() < CHECKPOINT_EVERY) {
                return;
            }
            *c = (true, Some(std::time::Instant::now()));
        }
        let (writers, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            // Busy only when another checkpoint runs (from another process): the next one
            // gets it.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::debug!(error = %e, "WAL checkpoint");
            }
            writers.checkpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 = false;
        });
    }
}

/// A writer's turn (see [`Writers`]).
pub struct Turn {
    guard: tokio::sync::OwnedMutexGuard<()>,
    writers: Arc<Writers>,
    pool: SqlitePool,
}

/// The schema versions, in order: `(version, description, SQLite text, PostgreSQL text)`.
/// Applied migrations are checksummed by sqlx: never edit one, add the next.
const MIGRATIONS: [(i64, &str, &str, &str); 13] = [
    (
        1,
        "sync",
        include_str!("../migrations/sqlite/0001_sync.sql"),
        include_str!("../migrations/postgres/0001_sync.sql"),
    ),
    (
        2,
        "fleet_api",
        include_str!("../migrations/sqlite/0002_fleet_api.sql"),
        include_str!("../migrations/postgres/0002_fleet_api.sql"),
    ),
    (
        3,
        "mosquitto",
        include_str!("../migrations/sqlite/0003_mosquitto.sql"),
        include_str!("../migrations/postgres/0003_mosquitto.sql"),
    ),
    (
        4,
        "ocpi",
        include_str!("../migrations/sqlite/0004_ocpi.sql"),
        include_str!("../migrations/postgres/0004_ocpi.sql"),
    ),
    (
        5,
        "billing",
        include_str!("../migrations/sqlite/0005_billing.sql"),
        include_str!("../migrations/postgres/0005_billing.sql"),
    ),
    (
        6,
        "dashboard",
        include_str!("../migrations/sqlite/0006_dashboard.sql"),
        include_str!("../migrations/postgres/0006_dashboard.sql"),
    ),
    (
        7,
        "ocpi_sessions",
        include_str!("../migrations/sqlite/0007_ocpi_sessions.sql"),
        include_str!("../migrations/postgres/0007_ocpi_sessions.sql"),
    ),
    (
        8,
        "ocpi_commands",
        include_str!("../migrations/sqlite/0008_ocpi_commands.sql"),
        include_str!("../migrations/postgres/0008_ocpi_commands.sql"),
    ),
    (
        9,
        "dashboard_alerts",
        include_str!("../migrations/sqlite/0009_dashboard_alerts.sql"),
        include_str!("../migrations/postgres/0009_dashboard_alerts.sql"),
    ),
    (
        10,
        "site_energy",
        include_str!("../migrations/sqlite/0010_site_energy.sql"),
        include_str!("../migrations/postgres/0010_site_energy.sql"),
    ),
    (
        11,
        "ocpi_reservations_paging",
        include_str!("../migrations/sqlite/0011_ocpi_reservations_paging.sql"),
        include_str!("../migrations/postgres/0011_ocpi_reservations_paging.sql"),
    ),
    (
        12,
        "ocpi_locations_text",
        include_str!("../migrations/sqlite/0012_ocpi_locations_text.sql"),
        include_str!("../migrations/postgres/0012_ocpi_locations_text.sql"),
    ),
    (
        13,
        "ingest_lean",
        include_str!("../migrations/sqlite/0013_ingest_lean.sql"),
        include_str!("../migrations/postgres/0013_ingest_lean.sql"),
    ),
];

fn migrator(postgres: bool) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sqlite, pg)| {
                let sql = if postgres { *pg } else { *sqlite };
                Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

impl Store {
    /// Opens the database (creating a SQLite file when missing) and brings its schema up
    /// to date.
    pub async fn connect(target: &DbTarget, max_connections: u32) -> Result<Store, DbError> {
        let store = match target {
            DbTarget::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| DbError::Connect { target: target.to_string(), source: sqlx::Error::Io(e) })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // An ack promises durability: fsync every commit.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    // Reads through a memory map of the file instead of a read() per page:
                    // every commit (ingest's, billing's) empties the other connections'
                    // page caches, and a month's chart then reads thousands of pages.
                    .pragma("mmap_size", "268435456")
                    // See `Writers`: checkpoints run beside the writers, not in their commits.
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .connect_with(options)
                    .await
                    .map_err(|source| DbError::Connect { target: target.to_string(), source })?;
                Store::Sqlite(pool, Arc::new(Writers::new()))
            }
            DbTarget::Postgres(url) => {
                let options: PgConnectOptions =
                    url.parse().map_err(|source| DbError::Connect { target: target.to_string(), source })?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .map_err(|source| DbError::Connect { target: target.to_string(), source })?;
                Store::Postgres(pool)
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Store::Sqlite(pool, _) => migrator(false).run(pool).await?,
            Store::Postgres(pool) => migrator(true).run(pool).await?,
        }
        Ok(())
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(..) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Starts a write transaction. SQLite: `BEGIN IMMEDIATE`, which takes the database's
    /// write lock at once (a deferred transaction that reads and then writes can fail
    /// with SQLITE_BUSY when another writer got there in between), after this process's
    /// writers had their turn in order: SQLite has one writer at a time anyway, and a
    /// writer that finds the file locked sleeps in SQLite's busy handler (1, 2, 5, ... up
    /// to 100 ms a time) whenever the lock is freed, where the next in line here starts
    /// at once (another process, such as the CLI, still meets the busy handler). A task
    /// must not start a second transaction while it holds one. PostgreSQL: a plain
    /// READ COMMITTED transaction; the rows it depends on are locked with
    /// [`Tx::lock_site`].
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Store::Sqlite(pool, writers) => {
                let turn = writers.turn.clone().lock_owned().await;
                let turn = Turn { guard: turn, writers: writers.clone(), pool: pool.clone() };
                Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Runs one statement outside a transaction; the number of rows it touched.
    pub async fn exec(&self, sql: &'static str, args: &[Val]) -> Result<u64, DbError> {
        Ok(match self {
            Store::Sqlite(pool, _) => bind_all!(sqlx::query(sql), args).execute(pool).await?.rows_affected(),
            Store::Postgres(pool) => bind_all!(sqlx::query(sql), args).execute(pool).await?.rows_affected(),
        })
    }

    /// Reads every row of a query as `types`.
    pub async fn fetch(&self, sql: &'static str, args: &[Val], types: &[Ty]) -> Result<Vec<Row>, DbError> {
        let mut out = Vec::new();
        match self {
            Store::Sqlite(pool, _) => {
                for row in bind_all!(sqlx::query(sql), args).fetch_all(pool).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
            Store::Postgres(pool) => {
                for row in bind_all!(sqlx::query(sql), args).fetch_all(pool).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
        }
        Ok(out)
    }

    /// The first row of a query, if any.
    pub async fn fetch_opt(&self, sql: &'static str, args: &[Val], types: &[Ty]) -> Result<Option<Row>, DbError> {
        Ok(self.fetch(sql, args, types).await?.into_iter().next())
    }

    /// Like [`Store::fetch`], but planned anew for the values at hand every time: not a
    /// prepared statement, which PostgreSQL switches to a generic plan after five runs.
    /// For queries whose best plan depends on which optional filters (`$n IS NULL OR ...`)
    /// are set, where a generic plan can be a hundred times slower than a custom one (the
    /// dashboard's lists). SQLite prepares the text each time, which costs little.
    pub async fn fetch_planned(&self, sql: &'static str, args: &[Val], types: &[Ty]) -> Result<Vec<Row>, DbError> {
        let mut out = Vec::new();
        match self {
            Store::Sqlite(pool, _) => {
                for row in bind_all!(sqlx::query(sql).persistent(false), args).fetch_all(pool).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
            Store::Postgres(pool) => {
                for row in bind_all!(sqlx::query(sql).persistent(false), args).fetch_all(pool).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
        }
        Ok(out)
    }

    /// The first row of [`Store::fetch_planned`], if any.
    pub async fn fetch_opt_planned(
        &self,
        sql: &'static str,
        args: &[Val],
        types: &[Ty],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.fetch_planned(sql, args, types).await?.into_iter().next())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.fetch("SELECT CAST(1 AS BIGINT)", &[], &[Ty::Int]).await.map(|_| ())
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool, _) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    /// Reads the site's `applied_through` and holds the site's lock until the end of the
    /// transaction: PostgreSQL `SELECT ... FOR UPDATE` (another replica applying a batch
    /// of the same site waits here); SQLite already holds the database's write lock
    /// since `BEGIN IMMEDIATE`. `None`: no such site.
    pub async fn lock_site(&mut self, site_id: &str) -> Result<Option<i64>, DbError> {
        let sql = if self.is_postgres() {
            "SELECT applied_through FROM sites WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT applied_through FROM sites WHERE id = $1"
        };
        Ok(self.fetch_opt(sql, &[site_id.into()], &[Ty::Int]).await?.and_then(|r| r.int(0)))
    }

    /// Runs one statement; the number of rows it touched.
    pub async fn exec(&mut self, sql: &'static str, args: &[Val]) -> Result<u64, DbError> {
        Ok(match self {
            Tx::Sqlite(tx, _) => bind_all!(sqlx::query(sql), args).execute(&mut **tx).await?.rows_affected(),
            Tx::Postgres(tx) => bind_all!(sqlx::query(sql), args).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Reads every row of a query as `types`.
    pub async fn fetch(&mut self, sql: &'static str, args: &[Val], types: &[Ty]) -> Result<Vec<Row>, DbError> {
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(tx, _) => {
                for row in bind_all!(sqlx::query(sql), args).fetch_all(&mut **tx).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
            Tx::Postgres(tx) => {
                for row in bind_all!(sqlx::query(sql), args).fetch_all(&mut **tx).await? {
                    out.push(decode_row!(row, types, sql));
                }
            }
        }
        Ok(out)
    }

    /// The first row of a query, if any.
    pub async fn fetch_opt(&mut self, sql: &'static str, args: &[Val], types: &[Ty]) -> Result<Option<Row>, DbError> {
        Ok(match self {
            Tx::Sqlite(tx, _) => match bind_all!(sqlx::query(sql), args).fetch_optional(&mut **tx).await? {
                Some(row) => Some(decode_row!(row, types, sql)),
                None => None,
            },
            Tx::Postgres(tx) => match bind_all!(sqlx::query(sql), args).fetch_optional(&mut **tx).await? {
                Some(row) => Some(decode_row!(row, types, sql)),
                None => None,
            },
        })
    }

    /// Inserts rows of `types.len()` values each, like [`Tx::insert_rows`], where every
    /// value is NULL or of its column's type. PostgreSQL: one statement whatever the rows,
    /// `head SELECT * FROM UNNEST($1::text[], ...)` with an array per column (a `VALUES`
    /// list of thousands of parameters is set up expression by expression at every
    /// execution). SQLite: [`Tx::insert_rows`].
    pub async fn insert_columns(&mut self, head: &'static str, types: &[Ty], args: &[Val]) -> Result<u64, DbError> {
        let cols = types.len();
        if cols == 0 || !args.len().is_multiple_of(cols) {
            return Err(DbError::Data(format!("{} values are not rows of {cols}: {head}", args.len())));
        }
        let mismatch = |c: usize, v: &Val| {
            DbError::Data(format!(
                "column {c} of `{head}` is a {:?}, not {v:?}",
                types.get(c).copied().unwrap_or(Ty::Text)
            ))
        };
        // Checked on both backends, so that SQLite (which stores any value in any column)
        // refuses what PostgreSQL would.
        for (i, v) in args.iter().enumerate() {
            let ty = types.get(i % cols).copied();
            let fits = matches!(
                (ty, v),
                (Some(Ty::Int), Val::Int(_))
                    | (Some(Ty::Real), Val::Real(_))
                    | (Some(Ty::Text), Val::Text(_))
                    | (Some(Ty::Time), Val::Time(_))
                    | (Some(Ty::Bool), Val::Bool(_))
                    | (Some(Ty::Json), Val::Json(_))
            );
            if !fits {
                return Err(mismatch(i % cols, v));
            }
        }
        let Tx::Postgres(tx) = self else {
            return self.insert_rows(head, cols, args).await;
        };
        if args.is_empty() {
            return Ok(0);
        }
        let column = |c: usize| args.iter().skip(c).step_by(cols);
        let mut q = sqlx::query(AssertSqlSafe(unnest_sql(head, types)));
        // Every value fits its column (checked above): the `else` arms never run.
        for (c, ty) in types.iter().enumerate() {
            q = match ty {
                Ty::Int => q.bind(column(c).map(|v| if let Val::Int(x) = v { *x } else { None }).collect::<Vec<_>>()),
                Ty::Real => q.bind(column(c).map(|v| if let Val::Real(x) = v { *x } else { None }).collect::<Vec<_>>()),
                Ty::Text => q.bind(
                    column(c).map(|v| if let Val::Text(x) = v { x.as_deref() } else { None }).collect::<Vec<_>>(),
                ),
                Ty::Time => q.bind(column(c).map(|v| if let Val::Time(x) = v { *x } else { None }).collect::<Vec<_>>()),
                Ty::Bool => q.bind(column(c).map(|v| if let Val::Bool(x) = v { *x } else { None }).collect::<Vec<_>>()),
                Ty::Json => q.bind(
                    column(c)
                        .map(|v| if let Val::Json(x) = v { x.as_ref().map(Json) } else { None })
                        .collect::<Vec<_>>(),
                ),
            };
        }
        Ok(q.execute(&mut **tx).await?.rows_affected())
    }

    /// Inserts rows of `cols` values each (`args` holds them one after the other) with
    /// `head` (`INSERT INTO t (a, b, ...)`) and multi-row `VALUES` lists: a few
    /// statements instead of one per row. The rows are cut into chunks of
    /// [`ROW_CHUNKS`] so that only a few distinct statements exist, each prepared once.
    pub async fn insert_rows(&mut self, head: &'static str, cols: usize, args: &[Val]) -> Result<u64, DbError> {
        if cols == 0 || !args.len().is_multiple_of(cols) {
            return Err(DbError::Data(format!("{} values are not rows of {cols}: {head}", args.len())));
        }
        let rows = args.len() / cols;
        let (mut done, mut touched) = (0, 0);
        while done < rows {
            let chunk = ROW_CHUNKS.iter().copied().find(|c| *c <= rows - done).unwrap_or(1);
            let part = &args[done * cols..(done + chunk) * cols];
            touched += match self {
                Tx::Sqlite(tx, _) => {
                    let sql = values_sql(head, cols, chunk, Placeholders::Anonymous);
                    bind_all!(sqlx::query(AssertSqlSafe(sql)), part).execute(&mut **tx).await?.rows_affected()
                }
                Tx::Postgres(tx) => {
                    let sql = values_sql(head, cols, chunk, Placeholders::Numbered);
                    bind_all!(sqlx::query(AssertSqlSafe(sql)), part).execute(&mut **tx).await?.rows_affected()
                }
            };
            done += chunk;
        }
        Ok(touched)
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx, turn) => {
                tx.commit().await?;
                let Turn { guard, writers, pool } = turn;
                // The next writer goes first; then the checkpoint, if one is due.
                drop(guard);
                writers.committed(&pool);
            }
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx, _) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_values_are_numbered_row_by_row() {
        use Placeholders::{Anonymous, Numbered};
        assert_eq!(&*values_sql("INSERT INTO t (a, b)", 2, 1, Numbered), "INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(
            &*values_sql("INSERT INTO t (a, b, c)", 3, 2, Numbered),
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(&*values_sql("INSERT INTO t (a, b)", 2, 2, Anonymous), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        // Made once per shape.
        let once = |style| values_sql("INSERT INTO t (a)", 1, 4, style);
        assert!(Arc::ptr_eq(&once(Numbered), &once(Numbered)));
        assert!(!Arc::ptr_eq(&once(Numbered), &once(Anonymous)));
    }

    #[tokio::test]
    async fn rows_go_in_whatever_their_number_and_a_ragged_list_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect(&DbTarget::Sqlite(dir.path().join("t.db")), 1).await.expect("open");
        store.exec("CREATE TABLE t (a INTEGER, b TEXT)", &[]).await.expect("create");
        for n in [0usize, 1, 3, 300, 341] {
            store.exec("DELETE FROM t", &[]).await.expect("clear");
            let args: Vec<Val> = (0..n).flat_map(|i| [Val::from(i as i64), Val::from(format!("r{i}"))]).collect();
            let mut tx = store.begin().await.expect("begin");
            assert_eq!(tx.insert_rows("INSERT INTO t (a, b)", 2, &args).await.expect("insert"), n as u64);
            tx.commit().await.expect("commit");
            let rows = store.fetch("SELECT a, b FROM t ORDER BY a", &[], &[Ty::Int, Ty::Text]).await.expect("read");
            assert_eq!(rows.len(), n);
            assert!(
                rows.iter()
                    .enumerate()
                    .all(|(i, r)| r.int(0) == Some(i as i64) && r.text(1) == Some(&*format!("r{i}")))
            );
        }
        let mut tx = store.begin().await.expect("begin");
        let err = tx.insert_rows("INSERT INTO t (a, b)", 2, &[Val::from(1)]).await.expect_err("ragged");
        assert!(err.to_string().contains("1 values are not rows of 2"), "{err}");
    }

    /// The WAL is copied into the database beside the writers, so it stays near one
    /// transaction's size, where SQLite's own checkpoint alone would let it grow to
    /// [`WAL_AUTOCHECKPOINT_PAGES`] (64 MB) before the first copy.
    #[tokio::test]
    async fn commits_checkpoint_the_wal_beside_the_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::connect(&DbTarget::Sqlite(path.clone()), 2).await.expect("open");
        store.exec("CREATE TABLE t (a INTEGER, b TEXT)", &[]).await.expect("create");
        let blob = "x".repeat(4000);
        // 30 transactions of about 200 pages each: 24 MB written in all.
        for round in 0..30i64 {
            let args: Vec<Val> =
                (0..200).flat_map(|i| [Val::from(round * 1000 + i), Val::from(blob.as_str())]).collect();
            let mut tx = store.begin().await.expect("begin");
            tx.insert_rows("INSERT INTO t (a, b)", 2, &args).await.expect("insert");
            tx.commit().await.expect("commit");
            tokio::time::sleep(CHECKPOINT_EVERY + Duration::from_millis(20)).await;
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal")).map(|m| m.len()).expect("the WAL file");
        assert!(wal < 8 * 1024 * 1024, "the WAL grew to {wal} bytes: nothing checkpointed it");
        let rows = store.fetch("SELECT COUNT(*) FROM t", &[], &[Ty::Int]).await.expect("count");
        assert_eq!(rows.first().and_then(|r| r.int(0)), Some(6000), "every row is there");
    }
}
