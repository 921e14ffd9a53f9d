//! The ingest transaction on its own, against SQLite and PostgreSQL: several appliers
//! (two hub replicas with their own pools) racing on the same batch apply it once, and
//! a stop for a session whose start comes later (or was inferred) ends up right.

mod common;

use cloud_hub::config::DbTarget;
use cloud_hub::db::Store;
use cloud_hub::ingest::{self, Outcome};
use common::*;

async fn store(db: &TestDb) -> Store {
    let target = cloud_hub::config::parse_database_url(&db.url, db.dir.path()).expect("url");
    Store::connect(&target, 4).await.expect("connect")
}

async fn concurrent_appliers_apply_a_batch_once(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    // Two pools on one database: two hub replicas.
    let (a, b) = (store(&db).await, store(&db).await);
    let site = cloud_hub::sites::add_site(&a, "Race", None, "sitepilot-hub").await.expect("site").site_id;
    let b1 = connections(&site, 1, 50);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, b1) = (if i % 2 == 0 { a.clone() } else { b.clone() }, b1.clone());
        tasks.push(tokio::spawn(async move { ingest::apply_batch(&s, &b1, chrono::Utc::now()).await.expect("apply") }));
    }
    let mut applied = 0;
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.applied_through, 50);
        match r.outcome {
            Outcome::Applied { first: 1, last: 50 } => applied += 1,
            Outcome::Duplicate => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 1, "exactly one applier applied the batch");
    assert_eq!(count(&a, "SELECT COUNT(*) FROM events WHERE site_id = $1", &site).await, 50);
    // A batch for a site nobody added.
    let err =
        ingest::apply_batch(&b, &connections("nobody-here", 1, 1), chrono::Utc::now()).await.expect_err("unknown");
    assert_eq!(err.label(), "unknown_site");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appliers_sqlite() {
    concurrent_appliers_apply_a_batch_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appliers_postgres() {
    concurrent_appliers_apply_a_batch_once(Backend::Postgres).await;
}

async fn a_late_start_and_a_superseded_inferred_stop(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let s = store(&db).await;
    let site = cloud_hub::sites::add_site(&s, "Late", None, "sitepilot-hub").await.expect("site").site_id;
    // The edge inferred the stop (no StopTransaction came), then the real one arrived;
    // the start is learned last (a session started offline).
    let inferred = envelope(
        1,
        &shared_model::events::SiteEvent::TransactionStopped {
            station: "CP-9".into(),
            transaction_uid: "u1".into(),
            meter_stop_wh: Some(900),
            stopped_at: t(20, 0),
            reason: None,
            id_tag: None,
            reconciled: true,
        },
    );
    let real = tx_stopped(2, "CP-9", "u1", Some(1_200));
    let inferred_again = envelope(3, &inferred.event().expect("typed"));
    let start = tx_started(4, "CP-9", "u1", 200);
    let b = batch(&site, vec![inferred, real, inferred_again, start]);
    let r = ingest::apply_batch(&s, &b, chrono::Utc::now()).await.expect("apply");
    assert_eq!(r.outcome, Outcome::Applied { first: 1, last: 4 });
    let sessions = ingest::sessions(&s, &site).await.expect("sessions");
    assert_eq!(sessions.len(), 1);
    let u1 = &sessions[0];
    assert!(!u1.reconciled, "the real stop stands: {u1:?}");
    assert_eq!((u1.meter_start_wh, u1.meter_stop_wh, u1.energy_wh), (Some(200), Some(1_200), Some(1_000)));
    assert_eq!(u1.stop_reason.as_deref(), Some("EVDisconnected"));
    assert_eq!(u1.started_at, Some(t(1, 0)));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_start_sqlite() {
    a_late_start_and_a_superseded_inferred_stop(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_start_postgres() {
    a_late_start_and_a_superseded_inferred_stop(Backend::Postgres).await;
}

#[test]
fn the_default_database_is_sqlite_next_to_the_config() {
    let c = cloud_hub::config::Config::parse(std::path::Path::new("/srv/hub/hub.toml"), "").expect("valid");
    assert_eq!(c.db, DbTarget::Sqlite("/srv/hub/sitepilot-hub.db".into()));
}

/// `Tx::insert_columns` (ingest's bulk insert: one UNNEST statement on PostgreSQL) writes
/// every row and every NULL where it belongs, whatever the number of rows, and refuses a
/// value of another type than its column's or a ragged list without writing anything.
async fn bulk_rows_arrive_whole(backend: Backend) {
    use cloud_hub::db::{Ty, Val};
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let s = store(&db).await;
    s.exec("CREATE TABLE bulk (a BIGINT, b TEXT, c DOUBLE PRECISION, d BOOLEAN, e TIMESTAMPTZ, t TEXT)", &[])
        .await
        .expect("create");
    let types = [Ty::Int, Ty::Text, Ty::Real, Ty::Bool, Ty::Time, Ty::Text];
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T05:00:00Z").expect("time").to_utc();
    for (round, n) in [0usize, 1, 5, 700].into_iter().enumerate() {
        let args: Vec<Val> = (0..n)
            .flat_map(|i| {
                [
                    Val::from(i as i64),
                    if i % 3 == 0 { Val::Text(None) } else { Val::from(format!("r{i} 'quoted' ünï")) },
                    Val::from(i as f64 / 4.0),
                    Val::from(i % 2 == 0),
                    Val::from(at + chrono::Duration::seconds(i as i64)),
                    Val::from(format!("round {round}")),
                ]
            })
            .collect();
        let mut tx = s.begin().await.expect("begin");
        tx.insert_columns("INSERT INTO bulk (a, b, c, d, e, t)", &types, &args).await.expect("insert");
        tx.commit().await.expect("commit");
        let rows = s
            .fetch(
                "SELECT a, b, c, d FROM bulk WHERE t = $1 ORDER BY a",
                &[format!("round {round}").into()],
                &[Ty::Int, Ty::Text, Ty::Real, Ty::Bool],
            )
            .await
            .expect("read");
        assert_eq!(rows.len(), n, "{backend:?}: {n} rows");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.int(0), Some(i as i64));
            let b = (i % 3 != 0).then(|| format!("r{i} 'quoted' ünï"));
            assert_eq!(r.text(1), b.as_deref(), "{backend:?}: row {i}");
            assert_eq!(r.real(2), Some(i as f64 / 4.0));
            assert_eq!(r.bool(3), Some(i % 2 == 0));
        }
    }
    // A text where an integer belongs, and a ragged list: refused, nothing written.
    let mut tx = s.begin().await.expect("begin");
    let wrong = [Val::from("seven"), Val::from("x"), Val::from(1.0), Val::from(true), Val::from(at), Val::from("bad")];
    assert!(tx.insert_columns("INSERT INTO bulk (a, b, c, d, e, t)", &types, &wrong).await.is_err());
    tx.rollback().await.expect("rollback");
    let mut tx = s.begin().await.expect("begin");
    let err = tx.insert_columns("INSERT INTO bulk (a, b, c, d, e, t)", &types, &wrong[..5]).await.expect_err("ragged");
    assert!(err.to_string().contains("5 values are not rows of 6"), "{err}");
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM bulk WHERE t <> $1", "bad").await, 706);
    s.close().await;
}

#[tokio::test]
async fn bulk_rows_arrive_whole_sqlite() {
    bulk_rows_arrive_whole(Backend::Sqlite).await;
}

#[tokio::test]
async fn bulk_rows_arrive_whole_postgres() {
    bulk_rows_arrive_whole(Backend::Postgres).await;
}
