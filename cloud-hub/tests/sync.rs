//! The hub's side of the sync protocol (`shared-model/SYNC.md`), end to end: a real hub
//! (started from a config file), a real broker, a real database, and an edge played by
//! an MQTT client. Every scenario runs against SQLite and against PostgreSQL; the
//! `mosquitto_*` ones go through an external Mosquitto with shared subscriptions.

mod common;

use common::*;
use shared_model::model::ConnectorStatus;
use std::time::Duration;

/// Generates one test per database for a scenario `async fn(Backend, Broker)`.
macro_rules! on_both_databases {
    ($scenario:ident, $broker:expr, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(Backend::Sqlite, $broker).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(Backend::Postgres, $broker).await;
        }
    };
}

/// A database and a hub, or `None` when this machine lacks one of them.
async fn setup(backend: Backend, broker: Broker) -> Option<(TestDb, TestHub)> {
    init_logs();
    if broker == Broker::Mosquitto && !mosquitto_available().await {
        return None;
    }
    let db = TestDb::new(backend).await?;
    let hub = TestHub::start(&db, broker).await;
    Some((db, hub))
}

async fn events_count(hub: &TestHub, site: &str) -> i64 {
    count(hub.store(), "SELECT COUNT(*) FROM events WHERE site_id = $1", site).await
}

async fn applied_through(hub: &TestHub, site: &str) -> u64 {
    cloud_hub::sites::get_site(hub.store(), site).await.expect("read").expect("site exists").applied_through
}

// ---- a batch applied once ----------------------------------------------------------

async fn a_batch_is_applied_once(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Depot North").await;
    let mut edge = hub.edge(&site, &password).await;
    let b = batch(
        &site,
        vec![booted(1, "CP-1"), connector_status(2, "CP-1", 1, ConnectorStatus::Charging), connection(3, "CP-1")],
    );
    assert_eq!(edge.roundtrip(&b).await, 3);
    assert_eq!(applied_through(&hub, &site).await, 3);
    let events = cloud_hub::ingest::events(hub.store(), &site).await.expect("events");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(events.iter().all(|e| e.effects_applied));
    assert_eq!(events[0].kind, "station_booted");
    assert_eq!(events[0].payload["info"]["vendor"], "Acme", "the payload is stored as JSON");
    let charger = hub
        .store()
        .fetch_opt(
            "SELECT vendor, model, registration, connected FROM chargers WHERE site_id = $1 AND station = $2",
            &[site.as_str().into(), "CP-1".into()],
            &[cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Bool],
        )
        .await
        .expect("read")
        .expect("charger row");
    assert_eq!(
        (charger.text(0), charger.text(1), charger.text(2)),
        (Some("Acme"), Some("Wallbox 22"), Some("Accepted"))
    );
    assert_eq!(charger.bool(3), Some(true), "connection event (seq 3: connected)");
    let status = hub
        .store()
        .fetch_opt(
            "SELECT status FROM connectors WHERE site_id = $1 AND station = 'CP-1' AND evse = 1 AND connector = 1",
            &[site.as_str().into()],
            &[cloud_hub::db::Ty::Text],
        )
        .await
        .expect("read")
        .expect("connector row");
    assert_eq!(status.text(0), Some("Charging"));
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "sitepilot_hub_event_batches_total{result=\"applied\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "sitepilot_hub_events_applied_total"), Some(3.0), "{text}");
    hub.stop().await;
}
on_both_databases!(a_batch_is_applied_once, Broker::Embedded, batch_applied_once_sqlite, batch_applied_once_postgres);

// ---- the same batch delivered twice --------------------------------------------------

async fn a_duplicate_batch_is_applied_once_and_acked_twice(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Dup").await;
    let mut edge = hub.edge(&site, &password).await;
    let b = connections(&site, 1, 3);
    assert_eq!(edge.roundtrip(&b).await, 3);
    assert_eq!(edge.roundtrip(&b).await, 3, "the duplicate is acked with where the site stands");
    assert_eq!(events_count(&hub, &site).await, 3, "applied once");
    // A batch that overlaps what was applied: only the new part is applied.
    assert_eq!(edge.roundtrip(&connections(&site, 2, 5)).await, 5);
    assert_eq!(events_count(&hub, &site).await, 5);
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "sitepilot_hub_event_batches_total{result=\"duplicate\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "sitepilot_hub_events_applied_total"), Some(5.0), "{text}");
    hub.stop().await;
}
on_both_databases!(
    a_duplicate_batch_is_applied_once_and_acked_twice,
    Broker::Embedded,
    duplicate_batch_sqlite,
    duplicate_batch_postgres
);

// ---- reordered delivery ---------------------------------------------------------------

async fn reordered_batches_are_refused_until_the_gap_is_filled(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Reorder").await;
    let mut edge = hub.edge(&site, &password).await;
    let first = connections(&site, 1, 2);
    let second = connections(&site, 3, 4);
    assert_eq!(edge.roundtrip(&second).await, 0, "batch 2 before batch 1: refused, the ack says 0");
    assert_eq!(events_count(&hub, &site).await, 0);
    assert_eq!(edge.roundtrip(&first).await, 2);
    assert_eq!(edge.roundtrip(&second).await, 4, "batch 2 resent after batch 1");
    let seqs: Vec<u64> =
        cloud_hub::ingest::events(hub.store(), &site).await.expect("events").iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    hub.stop().await;
}
on_both_databases!(
    reordered_batches_are_refused_until_the_gap_is_filled,
    Broker::Embedded,
    reordered_sqlite,
    reordered_postgres
);

// ---- a gap ------------------------------------------------------------------------------

async fn a_gap_is_not_applied(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Gap").await;
    let mut edge = hub.edge(&site, &password).await;
    assert_eq!(edge.roundtrip(&connections(&site, 1, 2)).await, 2);
    assert_eq!(edge.roundtrip(&connections(&site, 5, 6)).await, 2, "3 and 4 are missing: nothing applied");
    assert_eq!(events_count(&hub, &site).await, 2);
    assert_eq!(edge.roundtrip(&connections(&site, 3, 4)).await, 4);
    assert_eq!(edge.roundtrip(&connections(&site, 5, 6)).await, 6);
    assert_eq!(events_count(&hub, &site).await, 6);
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "sitepilot_hub_event_batches_total{result=\"gap\"}"), Some(1.0), "{text}");
    hub.stop().await;
}
on_both_databases!(a_gap_is_not_applied, Broker::Embedded, gap_sqlite, gap_postgres);

// ---- a hub restart between batches --------------------------------------------------------

async fn state_survives_a_hub_restart(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Restart").await;
    let mut edge = hub.edge(&site, &password).await;
    assert_eq!(edge.roundtrip(&connections(&site, 1, 2)).await, 2);
    hub.stop().await;
    if broker == Broker::Embedded {
        assert!(edge.wait_disconnected().await, "the embedded broker went down with the hub");
    }
    hub.restart().await;
    edge.wait_ready().await;
    edge.send_hello(Some(3), Some(4)).await;
    assert_eq!(edge.next_ack().await.applied_through, 2, "the new hub knows where the site stands");
    assert_eq!(edge.roundtrip(&connections(&site, 1, 2)).await, 2, "still a duplicate after the restart");
    assert_eq!(edge.roundtrip(&connections(&site, 3, 4)).await, 4, "acks continue");
    assert_eq!(events_count(&hub, &site).await, 4);
    hub.stop().await;
}
on_both_databases!(state_survives_a_hub_restart, Broker::Embedded, restart_sqlite, restart_postgres);

// ---- an unknown event kind ------------------------------------------------------------------

async fn an_unknown_event_kind_is_stored_raw_and_acked(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Future").await;
    let mut edge = hub.edge(&site, &password).await;
    let b = batch(&site, vec![connection(1, "CP-1"), from_the_future(2), connection(3, "CP-1")]);
    assert_eq!(edge.roundtrip(&b).await, 3, "the stream does not stall on it");
    let events = cloud_hub::ingest::events(hub.store(), &site).await.expect("events");
    assert_eq!(events.len(), 3);
    let future = &events[1];
    assert_eq!(future.kind, "solar_forecast");
    assert!(!future.effects_applied, "marked for a newer hub");
    assert_eq!(future.payload, serde_json::json!({"type": "solar_forecast", "kw": [1.5, 2.5], "nested": {"a": 1}}));
    assert!(events[0].effects_applied && events[2].effects_applied);
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "sitepilot_hub_events_stored_raw_total"), Some(1.0), "{text}");
    hub.stop().await;
}
on_both_databases!(
    an_unknown_event_kind_is_stored_raw_and_acked,
    Broker::Embedded,
    unknown_kind_sqlite,
    unknown_kind_postgres
);

// ---- hello --------------------------------------------------------------------------------------

async fn a_hello_is_answered_with_where_the_site_stands(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Hello").await;
    let mut edge = hub.edge(&site, &password).await;
    edge.send_hello(None, None).await;
    assert_eq!(edge.next_ack().await.applied_through, 0, "a new site stands at 0");
    assert_eq!(edge.roundtrip(&connections(&site, 1, 7)).await, 7);
    // The edge lost the ack of 1..7 and still holds the rows: the hello makes good for it.
    edge.send_hello(Some(1), Some(9)).await;
    assert_eq!(edge.next_ack().await.applied_through, 7);
    let row = cloud_hub::sites::get_site(hub.store(), &site).await.expect("read").expect("site");
    assert!(row.last_hello_at.is_some());
    assert_eq!(row.agent_version.as_deref(), Some("test-edge 0.0.1"));
    // Presence: the edge's retained status (and its last will) lands on the site.
    let status = shared_model::sync::Status { v: 1, site_id: site.clone(), online: true, at: t(9, 0) };
    edge.client
        .publish(
            shared_model::sync::Topic::Status.of(&site),
            rumqttc::QoS::AtLeastOnce,
            true,
            serde_json::to_vec(&status).expect("json"),
        )
        .await
        .expect("queue");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let row = cloud_hub::sites::get_site(hub.store(), &site).await.expect("read").expect("site");
        if row.online == Some(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the status lands: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A hello whose newest seq is below what was applied: answered, and flagged.
    edge.send_hello(None, Some(3)).await;
    assert_eq!(edge.next_ack().await.applied_through, 7);
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "sitepilot_hub_outbox_regressions_total"), Some(1.0), "{text}");
    hub.stop().await;
}
on_both_databases!(a_hello_is_answered_with_where_the_site_stands, Broker::Embedded, hello_sqlite, hello_postgres);

// ---- flow control -------------------------------------------------------------------------------

/// Acks carry a window: a slow start after a hello, then the budget shared among the
/// sites sending (the defaults: 32 MiB and 800 batches).
async fn acks_share_the_flow_budget_among_sites_sending(backend: Backend, broker: Broker) {
    use shared_model::sync::Window;
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (a, pa) = hub.add_site("Flow A").await;
    let (b, pb) = hub.add_site("Flow B").await;
    let mut edge_a = hub.edge(&a, &pa).await;
    let mut edge_b = hub.edge(&b, &pb).await;
    edge_a.send_hello(None, None).await;
    let ack = edge_a.next_ack().await;
    assert_eq!(ack.window, Some(Window { batches: 1, bytes: cloud_hub::flow::SLOW_START_BYTES }), "slow start");
    edge_a.send_batch(&connections(&a, 1, 3)).await;
    let ack = edge_a.next_ack().await;
    assert_eq!(ack.window, Some(Window { batches: 800, bytes: 32 * 1024 * 1024 }), "the only site sending");
    edge_b.send_batch(&connections(&b, 1, 3)).await;
    let ack = edge_b.next_ack().await;
    assert_eq!(ack.applied_through, 3);
    assert_eq!(ack.window, Some(Window { batches: 400, bytes: 16 * 1024 * 1024 }), "two sites share");
    edge_a.send_batch(&connections(&a, 4, 6)).await;
    assert_eq!(edge_a.next_ack().await.window, Some(Window { batches: 400, bytes: 16 * 1024 * 1024 }));
    hub.stop().await;
}
on_both_databases!(acks_share_the_flow_budget_among_sites_sending, Broker::Embedded, flow_sqlite, flow_postgres);

// ---- a session ---------------------------------------------------------------------------------

async fn a_session_lands_with_its_energy(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Sessions").await;
    let mut edge = hub.edge(&site, &password).await;
    let uid = "tx-0001";
    let b1 = batch(
        &site,
        vec![
            tx_started(1, "CP-1", uid, 1_000),
            meter_values(
                2,
                "CP-1",
                Some(uid),
                vec![
                    sample(5, "1.5", Some("kWh"), "Energy.Active.Import.Register"),
                    sample(5, "7200", Some("W"), "Power.Active.Import"),
                ],
            ),
        ],
    );
    assert_eq!(edge.roundtrip(&b1).await, 2);
    let open = cloud_hub::ingest::sessions(hub.store(), &site).await.expect("sessions");
    assert_eq!(open.len(), 1);
    assert!(open[0].stopped_at.is_none() && open[0].energy_wh.is_none(), "still running: {:?}", open[0]);
    let b2 = batch(
        &site,
        vec![
            meter_values(3, "CP-1", Some(uid), vec![sample(20, "3400", Some("Wh"), "Energy.Active.Import.Register")]),
            tx_stopped(4, "CP-1", uid, Some(3_500)),
            // A second session whose stop carries no meter value: the last register
            // sample stands in for it.
            tx_started(5, "CP-1", "tx-0002", 10_000),
            meter_values(
                6,
                "CP-1",
                Some("tx-0002"),
                vec![sample(25, "12.25", Some("kWh"), "Energy.Active.Import.Register")],
            ),
            tx_stopped(7, "CP-1", "tx-0002", None),
        ],
    );
    assert_eq!(edge.roundtrip(&b2).await, 7);
    let sessions = cloud_hub::ingest::sessions(hub.store(), &site).await.expect("sessions");
    let s1 = sessions.iter().find(|s| s.transaction_uid == uid).expect("session 1");
    assert_eq!((s1.meter_start_wh, s1.meter_stop_wh, s1.energy_wh), (Some(1_000), Some(3_500), Some(2_500)));
    assert_eq!((s1.evse, s1.connector, s1.id_tag.as_deref()), (Some(1), Some(1), Some("TAG-1")));
    assert_eq!((s1.started_at, s1.stopped_at), (Some(t(1, 0)), Some(t(30, 0))));
    assert_eq!(s1.stop_reason.as_deref(), Some("EVDisconnected"));
    let s2 = sessions.iter().find(|s| s.transaction_uid == "tx-0002").expect("session 2");
    assert_eq!((s2.meter_stop_wh, s2.energy_wh), (Some(12_250), Some(2_250)));
    assert_eq!(count(hub.store(), "SELECT COUNT(*) FROM meter_samples WHERE site_id = $1", &site).await, 4);
    // Samples keep the value as sent and its number in the base unit.
    let row = hub
        .store()
        .fetch_opt(
            "SELECT value, value_num, unit FROM meter_samples WHERE site_id = $1 AND station = 'CP-1' \
             AND ts = $2 AND measurand = 'Energy.Active.Import.Register'",
            &[site.as_str().into(), t(5, 0).into()],
            &[cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Real, cloud_hub::db::Ty::Text],
        )
        .await
        .expect("read")
        .expect("the 12:05 sample");
    assert_eq!((row.text(0), row.real(1), row.text(2)), (Some("1.5"), Some(1500.0), Some("kWh")));
    hub.stop().await;
}
on_both_databases!(a_session_lands_with_its_energy, Broker::Embedded, session_sqlite, session_postgres);

// ---- bad input ---------------------------------------------------------------------------------

async fn bad_messages_are_counted_and_dropped(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Bad input").await;
    let mut edge = hub.edge(&site, &password).await;
    let events = shared_model::sync::Topic::Events.of(&site);
    edge.publish(events.clone(), b"{not json".to_vec()).await;
    let mut other = connections(&site, 1, 1);
    other.site_id = "someone-else".into();
    edge.send_batch(&other).await;
    let mut future_version = connections(&site, 1, 1);
    future_version.v = 2;
    edge.send_batch(&future_version).await;
    let mut not_consecutive = connections(&site, 1, 3);
    not_consecutive.events.remove(1);
    edge.send_batch(&not_consecutive).await;
    edge.send_batch(&batch(&site, vec![])).await;
    assert!(edge.ack_within(Duration::from_millis(500)).await.is_none(), "nothing answers bad input");
    // The hub is still there and in order.
    assert_eq!(edge.roundtrip(&connections(&site, 1, 1)).await, 1);
    let m = &hub.running().metrics;
    assert_eq!(m.rejected_count("bad_json"), 1);
    assert_eq!(m.rejected_count("site_mismatch"), 1);
    assert_eq!(m.rejected_count("bad_version"), 1);
    assert_eq!(m.rejected_count("bad_batch"), 2);
    assert_eq!(events_count(&hub, &site).await, 1);
    hub.stop().await;
}
on_both_databases!(bad_messages_are_counted_and_dropped, Broker::Embedded, bad_input_sqlite, bad_input_postgres);

// ---- the embedded broker's logins and ACL -------------------------------------------------------

async fn the_embedded_broker_refuses_bad_logins_and_foreign_topics(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site_a, password_a) = hub.add_site("Site A").await;
    let (site_b, password_b) = hub.add_site("Site B").await;
    let (host, port) = hub.broker_host_port();

    // A wrong password, an unknown user, no login at all: refused.
    for creds in [
        Some((site_a.clone(), "wrong".to_owned())),
        Some(("nobody".to_owned(), password_a.clone())),
        Some((site_b.clone(), password_a.clone())),
        None,
    ] {
        let edge = Edge::connect_no_wait(&host, port, &site_a, creds.clone());
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!edge.is_ready(), "{creds:?} must not get in");
    }
    assert!(hub.running().metrics.broker_refused_count("auth") >= 3);

    let mut b = hub.edge(&site_b, &password_b).await;
    assert_eq!(b.roundtrip(&connections(&site_b, 1, 2)).await, 2);

    // Site A publishes into site B's stream: the broker drops A's connection and B's
    // stream is untouched.
    let a = hub.edge(&site_a, &password_a).await;
    a.publish(
        shared_model::sync::Topic::Events.of(&site_b),
        serde_json::to_vec(&connections(&site_b, 3, 3)).expect("json"),
    )
    .await;
    assert!(a.wait_disconnected().await, "A is disconnected");
    assert!(hub.running().metrics.broker_refused_count("publish_acl") >= 1);
    assert_eq!(applied_through(&hub, &site_b).await, 2);
    assert_eq!(events_count(&hub, &site_b).await, 2);

    // Site A subscribes to B's acks: refused the same way.
    let a = hub.edge(&site_a, &password_a).await;
    a.client.subscribe(shared_model::sync::Topic::Acks.of(&site_b), rumqttc::QoS::AtLeastOnce).await.expect("queue");
    assert!(a.wait_disconnected().await, "A is disconnected");
    assert!(hub.running().metrics.broker_refused_count("subscribe_acl") >= 1);
    // B still works.
    assert_eq!(b.roundtrip(&connections(&site_b, 3, 3)).await, 3);
    hub.stop().await;
}
on_both_databases!(
    the_embedded_broker_refuses_bad_logins_and_foreign_topics,
    Broker::Embedded,
    broker_acl_sqlite,
    broker_acl_postgres
);

// ---- an external broker (Mosquitto) with shared subscriptions ------------------------------------

async fn through_mosquitto(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Via Mosquitto").await;
    let mut edge = hub.edge(&site, &password).await;
    edge.send_hello(None, None).await;
    assert_eq!(edge.next_ack().await.applied_through, 0);
    assert_eq!(edge.roundtrip(&connections(&site, 2, 3)).await, 0, "gap");
    assert_eq!(edge.roundtrip(&connections(&site, 1, 3)).await, 3);
    assert_eq!(edge.roundtrip(&connections(&site, 1, 3)).await, 3, "duplicate");
    // A batch of a site the hub does not know is dropped and counted. (Other tests'
    // hubs on the same Mosquitto see it too, and the other way round: hence `>=`.)
    let stranger = format!("stranger-{}", uuid::Uuid::new_v4().simple());
    let payload = serde_json::to_vec(&connections(&stranger, 1, 1)).expect("json");
    edge.publish(shared_model::sync::Topic::Events.of(&stranger), payload).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while hub.running().metrics.rejected_count("unknown_site") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stranger's batch is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The hub restarts; the broker (and the edge's connection) stay.
    hub.stop().await;
    hub.restart().await;
    assert_eq!(edge.roundtrip(&connections(&site, 4, 5)).await, 5);
    assert_eq!(events_count(&hub, &site).await, 5);
    hub.stop().await;
}
on_both_databases!(through_mosquitto, Broker::Mosquitto, mosquitto_sqlite, mosquitto_postgres);

// ---- HTTP ----------------------------------------------------------------------------------------

/// A bare HTTP/1.1 GET: status code and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

async fn health_and_metrics(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let addr = hub.running().http_addr;
    let (code, body) = get(addr, "/health").await;
    assert_eq!(code, 200, "{body}");
    let health = json(&body);
    assert_eq!((health["database"].as_str(), health["mqtt"].as_str()), (Some("ok"), Some("connected")), "{body}");
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("sitepilot_hub_mqtt_connected 1"), "{body}");
    assert_eq!(get(addr, "/nope").await.0, 404);
    hub.stop().await;
}
on_both_databases!(health_and_metrics, Broker::Embedded, http_sqlite, http_postgres);

// ---- pipelined batches -----------------------------------------------------------------------------

async fn pipelined_batches_get_acks_in_order(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    let (site, password) = hub.add_site("Pipeline").await;
    let mut edge = hub.edge(&site, &password).await;
    // An edge with several batches in flight sends them without waiting for acks.
    for seq in 1..=30 {
        edge.send_batch(&connections(&site, seq, seq)).await;
    }
    let mut acks = Vec::new();
    for _ in 1..=30 {
        acks.push(edge.next_ack().await.applied_through);
    }
    assert_eq!(acks, (1..=30).collect::<Vec<u64>>(), "one ack per batch, in order");
    assert_eq!(events_count(&hub, &site).await, 30);
    hub.stop().await;
}
on_both_databases!(pipelined_batches_get_acks_in_order, Broker::Embedded, pipelined_sqlite, pipelined_postgres);

// ---- many sites at once -------------------------------------------------------------------------

/// Several sites pipelining batches of different sizes at once: the hub's workers finish
/// them in another order than they arrived, yet every batch of every site is applied and
/// acked. (The hub acknowledges messages to the broker in arrival order; rumqttd drops a
/// client whose PUBACKs come out of order, and what was in flight to it was lost.)
async fn many_sites_pipelining_at_once_lose_nothing(backend: Backend, broker: Broker) {
    let Some((_db, mut hub)) = setup(backend, broker).await else { return };
    const SITES: u64 = 6;
    const BATCHES: u64 = 20;
    let mut edges = Vec::new();
    for i in 0..SITES {
        let (site, password) = hub.add_site(&format!("Busy {i}")).await;
        edges.push((site.clone(), hub.edge(&site, &password).await));
    }
    // Site i sends batches of (i * 15 + 1) events: some workers are busy longer than others.
    for round in 0..BATCHES {
        for (i, (site, edge)) in edges.iter().enumerate() {
            let size = i as u64 * 15 + 1;
            edge.send_batch(&connections(site, round * size + 1, (round + 1) * size)).await;
        }
    }
    for (i, (site, edge)) in edges.iter_mut().enumerate() {
        let size = i as u64 * 15 + 1;
        let mut acks = Vec::new();
        for _ in 0..BATCHES {
            acks.push(edge.next_ack().await.applied_through);
        }
        assert_eq!(acks, (1..=BATCHES).map(|r| r * size).collect::<Vec<u64>>(), "{site}: one ack per batch, in order");
        assert_eq!(events_count(&hub, site).await, (BATCHES * size) as i64, "{site}: every event stored once");
    }
    hub.stop().await;
}
on_both_databases!(
    many_sites_pipelining_at_once_lose_nothing,
    Broker::Embedded,
    many_sites_sqlite,
    many_sites_postgres
);
