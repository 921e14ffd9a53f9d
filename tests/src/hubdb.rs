//! A database for a hub under test: a SQLite file in the test's directory, or a fresh
//! PostgreSQL database on the server at `SITEPILOT_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. When PostgreSQL is
//! absent the test says why and returns, except with `CI=true`, where that is a failure.

use sqlx::Connection as _;
use std::path::Path;

/// The hub's database kind (also the `--backends` values of the benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The PostgreSQL server (and database) tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("SITEPILOT_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database URL for the hub, and the PostgreSQL database to drop afterwards with
/// [`drop_database`]. `None`: PostgreSQL is absent outside CI (the reason is printed).
pub async fn database(backend: Backend, dir: &Path) -> Option<(String, Option<String>)> {
    match backend {
        Backend::Sqlite => Some((format!("sqlite://{}", dir.join("hub.db").display()), None)),
        Backend::Postgres => {
            let admin = pg_admin_url();
            let mut conn = match sqlx::PgConnection::connect(&admin).await {
                Ok(c) => c,
                Err(e) => {
                    let reason = format!("PostgreSQL is not reachable at {admin}: {e}");
                    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI=true and {reason}");
                    eprintln!("SKIPPED: {reason}");
                    return None;
                }
            };
            let name = format!("e2e_{}", unique_suffix());
            let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await;
            let _ = conn.close().await;
            if let Err(e) = created {
                panic!("cannot create the test database {name} at {admin}: {e}");
            }
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
            Some((format!("{base}/{name}"), Some(name)))
        }
    }
}

/// Drops a database [`database`] created (nothing for SQLite).
pub async fn drop_database(name: Option<String>) {
    let Some(name) = name else { return };
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// Unique enough among the tests of one machine: time in ns, process id, and a counter.
pub fn unique_suffix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}{:x}{n}", std::process::id())
}
