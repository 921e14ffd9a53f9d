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
