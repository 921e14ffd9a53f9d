//! The fleet REST API end to end: a real hub (embedded broker, real database), API keys
//! made the way `cloud-hub apikey add` makes them, an HTTP client, and an edge played by
//! an MQTT client that sends events, receives commands and answers them. Every scenario
//! runs against SQLite and against PostgreSQL, and every answer is checked against the
//! schema the OpenAPI document gives for it.

mod common;

use cloud_hub::auth::Role;
use common::*;
use serde_json::{Value, json};
use shared_model::model::ConnectorStatus;
use shared_model::sync::{CommandOutcome, Status, Topic};
use std::time::Duration;

/// Generates one test per database for a scenario `async fn(Backend)`.
macro_rules! on_both_databases {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(Backend::Sqlite).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(Backend::Postgres).await;
        }
    };
}

async fn setup(backend: Backend) -> Option<(TestDb, TestHub)> {
    init_logs();
    let db = TestDb::new(backend).await?;
    let hub = TestHub::start(&db, Broker::Embedded).await;
    Some((db, hub))
}

/// The document the hub serves.
async fn openapi(http: &Http, token: &str) -> Value {
    let a = http.get("/api/v1/openapi.json", token).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

/// Waits until `check` holds (polling), or fails the test with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_status(edge: &Edge, online: bool) {
    let status = Status { v: 1, site_id: edge.site.clone(), online, at: t(9, 0) };
    edge.client
        .publish(
            Topic::Status.of(&edge.site),
            rumqttc::QoS::AtLeastOnce,
            true,
            serde_json::to_vec(&status).expect("json"),
        )
        .await
        .expect("queue");
}

// ---- authentication and roles ------------------------------------------------------------

async fn auth_is_required_and_roles_are_enforced(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (site, _) = hub.add_site("Auth").await;
    let viewer = hub.api_key("viewer-key", Role::Viewer).await;
    let manager = hub.api_key("manager-key", Role::FleetManager).await;
    let admin = hub.api_key("admin-key", Role::Admin).await;
    let http = hub.http();

    // No header, another scheme, an empty bearer, a token nobody issued: 401 with the reason.
    let a = http.send(reqwest::Method::GET, "/api/v1/sites", None, None).await;
    a.assert_problem(401, "no Authorization header: send `Authorization: Bearer <API key>`");
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"sitepilot-hub\""));
    let basic = http.client_request("/api/v1/sites", "Basic dXNlcjpwdw==").await;
    basic.assert_problem(401, "must use the Bearer scheme");
    http.client_request("/api/v1/sites", "Bearer").await.assert_problem(401, "the Bearer scheme but no token");
    http.client_request("/api/v1/sites", "Token abc").await.assert_problem(401, "must use the Bearer scheme");
    let a = http.get("/api/v1/sites", "spk_not-a-key").await;
    a.assert_problem(401, "the API key is not valid (unknown or revoked)");
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"sitepilot-hub\", error=\"invalid_token\""));
    // Unknown paths under /api/v1 reveal nothing without a key; with one they are 404s.
    http.send(reqwest::Method::GET, "/api/v1/nope", None, None).await.assert_problem(401, "no Authorization header");
    http.get("/api/v1/nope", &viewer).await.assert_problem(404, "no route /api/v1/nope");
    let a = http.send(reqwest::Method::DELETE, "/api/v1/sites", Some(&viewer), None).await;
    a.assert_problem(405, "DELETE is not allowed on /api/v1/sites");
    assert!(a.header("allow").is_some_and(|v| v.contains("GET")), "{a:?}");

    // Every role reads.
    for token in [&viewer, &manager, &admin] {
        assert_eq!(http.get("/api/v1/sites", token).await.status, 200);
    }
    // Viewers cannot send commands; fleet managers cannot list keys.
    let body = json!({"type": "set_site_limits", "limits": {"import_w": 1000}});
    let a = http.post_json(&format!("/api/v1/sites/{site}/commands"), &viewer, &body).await;
    a.assert_problem(
        403,
        "the API key \"viewer-key\" has the role viewer; POST /api/v1/sites/{site}/commands needs the role \
         fleet_manager or admin",
    );
    assert_eq!(count(hub.store(), "SELECT COUNT(*) FROM commands WHERE site_id = $1", &site).await, 0);
    assert_eq!(http.post_json(&format!("/api/v1/sites/{site}/commands"), &manager, &body).await.status, 202);
    http.get("/api/v1/api-keys", &manager).await.assert_problem(403, "needs the role admin");
    let a = http.get("/api/v1/api-keys", &admin).await;
    assert_eq!(a.status, 200, "{a:?}");
    let doc = openapi(&http, &admin).await;
    assert_schema(&doc, "ApiKeyList", &a.body);
    let names: Vec<&str> =
        a.body["items"].as_array().expect("items").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["admin-key", "manager-key", "viewer-key"]);
    assert!(!a.body.to_string().contains(&viewer[4..]), "no token in the listing");
    // Use is noted (at most once a minute).
    eventually("last_used_at is written", || async {
        cloud_hub::auth::list_keys(hub.store()).await.expect("keys").iter().all(|k| k.last_used_at.is_some())
    })
    .await;

    // A revoked key stops working at once.
    assert!(cloud_hub::auth::revoke_key(hub.store(), "viewer-key").await.expect("revoke"));
    http.get("/api/v1/sites", &viewer).await.assert_problem(401, "unknown or revoked");

    // /health and /metrics stay open.
    let health = http.send(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(health.status, 200, "{health:?}");
    let metrics = http.send(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text").to_owned();
    assert!(metric(&text, "sitepilot_hub_api_refused_total{reason=\"forbidden\"}").is_some_and(|v| v >= 2.0), "{text}");
    assert!(metric(&text, "sitepilot_hub_api_refused_total{reason=\"unauthenticated\"}").is_some_and(|v| v >= 6.0));
    hub.stop().await;
}
on_both_databases!(auth_is_required_and_roles_are_enforced, auth_sqlite, auth_postgres);

// ---- reading the fleet ------------------------------------------------------------------------

/// Site A: CP-1 booted, connected and charging, one finished session (1000 -> 3500 Wh)
/// and one running (10000 Wh at start, 12250 Wh at the last sample); site B: CP-2
/// booted, nothing else. A is online; B never said.
async fn fleet_with_two_sites(hub: &TestHub) -> (String, String, Edge) {
    let (a, pa) = hub.add_site("Alpha").await;
    let (b, pb) = hub.add_site("Beta").await;
    let mut edge_a = hub.edge(&a, &pa).await;
    let mut edge_b = hub.edge(&b, &pb).await;
    // The second session starts at 12:35 (after the first one's stop at 12:30).
    let second_start = envelope(
        9,
        &shared_model::events::SiteEvent::TransactionStarted {
            station: "CP-1".into(),
            transaction_uid: "tx-2".into(),
            station_transaction_id: "18".into(),
            connector: shared_model::model::ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some("TAG-2".into()),
            meter_start_wh: Some(10_000),
            started_at: Some(t(35, 0)),
            origin: shared_model::model::TransactionOrigin::Online,
        },
    );
    let events = vec![
        booted(1, "CP-1"),
        connection(2, "CP-1"), // odd seqs connect: seq 2 disconnects...
        connection(3, "CP-1"), // ...and seq 3 connects again
        connector_status(4, "CP-1", 1, ConnectorStatus::Charging),
        tx_started(5, "CP-1", "tx-1", 1_000),
        meter_values(
            6,
            "CP-1",
            Some("tx-1"),
            vec![
                sample(5, "1.5", Some("kWh"), "Energy.Active.Import.Register"),
                sample(5, "7200", Some("W"), "Power.Active.Import"),
            ],
        ),
        meter_values(7, "CP-1", Some("tx-1"), vec![sample(10, "2500", Some("Wh"), "Energy.Active.Import.Register")]),
        tx_stopped(8, "CP-1", "tx-1", Some(3_500)),
        second_start,
        meter_values(10, "CP-1", Some("tx-2"), vec![sample(40, "12.25", Some("kWh"), "Energy.Active.Import.Register")]),
    ];
    assert_eq!(edge_a.roundtrip(&batch(&a, events)).await, 10);
    assert_eq!(edge_b.roundtrip(&batch(&b, vec![booted(1, "CP-2")])).await, 1);
    edge_a.send_hello(None, Some(10)).await;
    assert_eq!(edge_a.next_ack().await.applied_through, 10);
    publish_status(&edge_a, true).await;
    eventually("site A is online", || async {
        cloud_hub::sites::get_site(hub.store(), &a).await.ok().flatten().and_then(|s| s.online) == Some(true)
    })
    .await;
    (a, b, edge_a)
}

async fn the_fleet_is_read_after_ingest(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (a, b, _edge) = fleet_with_two_sites(&hub).await;
    let token = hub.api_key("reader", Role::Viewer).await;
    let http = hub.http();
    let doc = openapi(&http, &token).await;
    let get = |path: String| {
        let (http, token) = (&http, &token);
        async move {
            let answer = http.get(&path, token).await;
            assert_eq!(answer.status, 200, "{path}: {answer:?}");
            answer.body
        }
    };
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };

    // Sites, paged.
    let sites = get("/api/v1/sites".into()).await;
    assert_schema(&doc, "SitePage", &sites);
    assert_eq!(sites["items"].as_array().map(Vec::len), Some(2));
    assert_eq!((sites["limit"].as_i64(), sites["next_offset"].as_i64()), (Some(100), None));
    let page1 = get("/api/v1/sites?limit=1".into()).await;
    assert_eq!((page1["items"][0]["id"].as_str(), page1["next_offset"].as_i64()), (Some(first.as_str()), Some(1)));
    let page2 = get("/api/v1/sites?limit=1&offset=1".into()).await;
    assert_eq!((page2["items"][0]["id"].as_str(), page2["next_offset"].as_i64()), (Some(second.as_str()), None));
    let online = get("/api/v1/sites?online=true".into()).await;
    assert_eq!(online["items"].as_array().map(|i| i.iter().map(|s| s["id"].clone()).collect()), Some(vec![json!(a)]));
    let site = get(format!("/api/v1/sites/{a}")).await;
    assert_schema(&doc, "Site", &site);
    assert_eq!((site["applied_through"].as_i64(), site["online"].as_bool()), (Some(10), Some(true)));
    assert_eq!((site["chargers"].as_i64(), site["hello_newest"].as_i64()), (Some(1), Some(10)));
    assert!(site["last_hello_at"].is_string() && site["last_event_at"].is_string(), "{site}");
    assert_eq!(site["agent_version"], "test-edge 0.0.1");
    let site_b = get(format!("/api/v1/sites/{b}")).await;
    assert_eq!((site_b["online"].clone(), site_b["last_hello_at"].clone()), (Value::Null, Value::Null));
    http.get("/api/v1/sites/nowhere", &token).await.assert_problem(404, "no site \"nowhere\"");
    http.get("/api/v1/sites/bad%20id", &token).await.assert_problem(400, "\"bad id\" is not a valid site id");

    // Chargers with live status, per site and across sites.
    let chargers = get(format!("/api/v1/sites/{a}/chargers")).await;
    assert_schema(&doc, "ChargerPage", &chargers);
    let cp1 = &chargers["items"][0];
    assert_eq!((cp1["station"].as_str(), cp1["status"].as_str()), (Some("CP-1"), Some("online")));
    assert_eq!((cp1["vendor"].as_str(), cp1["connected"].as_bool()), (Some("Acme"), Some(true)));
    assert_eq!(cp1["connectors"][0]["status"], "Charging");
    assert_eq!((cp1["connectors"][0]["evse"].as_i64(), cp1["connectors"][0]["connector"].as_i64()), (Some(1), Some(1)));
    let all = get("/api/v1/chargers".into()).await;
    assert_schema(&doc, "ChargerPage", &all);
    let found: Vec<(String, String, String)> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| (c["site_id"].to_string(), c["station"].to_string(), c["status"].to_string()))
        .collect();
    let mut expected = vec![
        (json!(a).to_string(), json!("CP-1").to_string(), json!("online").to_string()),
        (json!(b).to_string(), json!("CP-2").to_string(), json!("unknown").to_string()),
    ];
    expected.sort();
    assert_eq!(found, expected, "ordered by site and station; B's charger never reported a connection");
    let only_b = get(format!("/api/v1/chargers?site={b}")).await;
    assert_eq!(only_b["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_b["items"][0]["connectors"], json!([]));
    let connected = get("/api/v1/chargers?connected=true".into()).await;
    assert_eq!(connected["items"].as_array().map(|i| i.len()), Some(1));
    let one = get(format!("/api/v1/sites/{a}/chargers/CP-1")).await;
    assert_schema(&doc, "Charger", &one);
    assert_eq!(one["serial_number"], "SN-1");
    let connectors = get(format!("/api/v1/sites/{a}/chargers/CP-1/connectors")).await;
    assert_schema(&doc, "ConnectorList", &connectors);
    assert_eq!(connectors["items"], one["connectors"]);
    http.get(&format!("/api/v1/sites/{a}/chargers/CP-9"), &token)
        .await
        .assert_problem(404, &format!("no charger \"CP-9\" at site \"{a}\""));

    // Sessions with energy: final once stopped, so far while running.
    let sessions = get("/api/v1/sessions".into()).await;
    assert_schema(&doc, "SessionPage", &sessions);
    let uids: Vec<&str> =
        sessions["items"].as_array().expect("items").iter().filter_map(|s| s["transaction_uid"].as_str()).collect();
    assert_eq!(uids, ["tx-2", "tx-1"], "newest start first");
    let done = get(format!("/api/v1/sites/{a}/sessions/tx-1")).await;
    assert_schema(&doc, "Session", &done);
    assert_eq!((done["active"].as_bool(), done["energy_wh"].as_i64()), (Some(false), Some(2_500)));
    assert_eq!((done["meter_start_wh"].as_i64(), done["meter_stop_wh"].as_i64()), (Some(1_000), Some(3_500)));
    assert_eq!(done["stop_reason"], "EVDisconnected");
    let running = get(format!("/api/v1/sessions?site={a}&active=true")).await;
    assert_eq!(running["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (running["items"][0]["transaction_uid"].as_str(), running["items"][0]["energy_wh"].as_i64()),
        (Some("tx-2"), Some(2_250))
    );
    assert_eq!(running["items"][0]["last_energy_wh"].as_i64(), Some(12_250));
    let finished = get(format!("/api/v1/sites/{a}/sessions?active=false&station=CP-1")).await;
    assert_eq!(finished["items"][0]["transaction_uid"], "tx-1");
    let window = get(format!("/api/v1/sites/{a}/sessions?from=2026-11-21T12:30:00Z&to=2026-11-21T13:00:00Z")).await;
    assert_eq!(window["items"].as_array().map(|i| i.len()), Some(1));
    assert_eq!(window["items"][0]["transaction_uid"], "tx-2");
    let paged = get("/api/v1/sessions?limit=1".into()).await;
    assert_eq!((paged["items"][0]["transaction_uid"].as_str(), paged["next_offset"].as_i64()), (Some("tx-2"), Some(1)));
    assert_eq!(get(format!("/api/v1/sessions?site={b}")).await["items"], json!([]));
    http.get(&format!("/api/v1/sites/{a}/sessions/tx-9"), &token).await.assert_problem(404, "no session \"tx-9\"");

    // The meter series: time ranges on the indexed table.
    let base = format!("/api/v1/sites/{a}/chargers/CP-1/meter-samples");
    let series = get(base.clone()).await;
    assert_schema(&doc, "MeterSamplePage", &series);
    let items = series["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    let times: Vec<&str> = items.iter().filter_map(|s| s["ts"].as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    let energy = get(format!("{base}?measurand=Energy.Active.Import.Register")).await;
    let values: Vec<f64> =
        energy["items"].as_array().expect("items").iter().filter_map(|s| s["value_num"].as_f64()).collect();
    assert_eq!(values, [1_500.0, 2_500.0, 12_250.0], "in Wh whatever the unit sent");
    assert_eq!(energy["items"][0]["value"], "1.5");
    assert_eq!(energy["items"][0]["unit"], "kWh");
    let range = get(format!("{base}?from=2026-11-21T12:05:00Z&to=2026-11-21T12:10:00Z")).await;
    let measurands: Vec<&str> =
        range["items"].as_array().expect("items").iter().filter_map(|s| s["measurand"].as_str()).collect();
    assert_eq!(measurands.len(), 2, "[from, to): 12:05 in, 12:10 out: {range}");
    let open_end = get(format!("{base}?from=2026-11-21T12:10:00Z")).await;
    assert_eq!(open_end["items"].as_array().map(Vec::len), Some(2));
    let of_session = get(format!("{base}?transaction_uid=tx-2")).await;
    assert_eq!(of_session["items"].as_array().map(Vec::len), Some(1));
    let paged = get(format!("{base}?limit=3")).await;
    assert_eq!((paged["items"].as_array().map(Vec::len), paged["next_offset"].as_i64()), (Some(3), Some(3)));
    let rest = get(format!("{base}?limit=3&offset=3")).await;
    assert_eq!((rest["items"].as_array().map(Vec::len), rest["next_offset"].as_i64()), (Some(1), None));
    http.get(&format!("{base}?from=yesterday"), &token)
        .await
        .assert_problem(400, "`from`: \"yesterday\" is not an RFC 3339 time");
    http.get(&format!("{base}?from=2026-11-21T13:00:00Z&to=2026-11-21T12:00:00Z"), &token)
        .await
        .assert_problem(400, "is after `to`");
    http.get(&format!("{base}?limit=10001"), &token)
        .await
        .assert_problem(400, "`limit`: 10001 is out of range: use 1 to 10000");
    http.get(&format!("{base}?measurnd=x"), &token).await.assert_problem(400, "unknown query parameter `measurnd`");
    http.get("/api/v1/sites?limit=1001", &token).await.assert_problem(400, "use 1 to 1000");
    http.get("/api/v1/sessions?active=maybe", &token).await.assert_problem(400, "`active`: \"maybe\" is not a boolean");
    http.get(&format!("/api/v1/sites/{a}/chargers/CP-9/meter-samples"), &token).await.assert_problem(404, "no charger");
    hub.stop().await;
}
on_both_databases!(the_fleet_is_read_after_ingest, fleet_reads_sqlite, fleet_reads_postgres);

// ---- commands --------------------------------------------------------------------------------

/// A site with CP-1 and a connected edge.
async fn site_with_a_charger(hub: &TestHub, name: &str) -> (String, Edge) {
    let (site, password) = hub.add_site(name).await;
    let mut edge = hub.edge(&site, &password).await;
    assert_eq!(edge.roundtrip(&batch(&site, vec![booted(1, "CP-1")])).await, 1);
    (site, edge)
}

async fn command_status(http: &Http, token: &str, id: &str) -> Value {
    let a = http.get(&format!("/api/v1/commands/{id}"), token).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

async fn a_command_round_trip(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (site, mut edge) = site_with_a_charger(&hub, "Commands").await;
    let token = hub.api_key("ops", Role::FleetManager).await;
    let http = hub.http();
    let doc = openapi(&http, &token).await;

    let body =
        json!({"type": "remote_start", "station": "CP-1", "connector": 1, "id_tag": "TAG-7", "expires_in_s": 600});
    let a = http.post_json(&format!("/api/v1/sites/{site}/commands"), &token, &body).await;
    assert_eq!(a.status, 202, "{a:?}");
    assert_schema(&doc, "CommandAccepted", &a.body);
    let id = a.body["command_id"].as_str().expect("id").to_owned();
    assert_eq!(a.header("location"), Some(format!("/api/v1/commands/{id}").as_str()));
    assert_eq!((a.body["status"].as_str(), a.body["published"].as_bool()), (Some("sent"), Some(true)));

    // The edge receives the envelope.
    let env = edge.next_command().await;
    assert_eq!((env.command_id.as_str(), env.site_id.as_str(), env.v), (id.as_str(), site.as_str(), 1));
    assert_eq!(
        env.command,
        shared_model::sync::Command::RemoteStart { station: "CP-1".into(), connector: Some(1), id_tag: "TAG-7".into() }
    );
    let lifetime = env.expires_at.expect("expires") - env.issued_at;
    assert_eq!(lifetime.num_seconds(), 600);
    let pending = command_status(&http, &token, &id).await;
    assert_schema(&doc, "CommandStatus", &pending);
    assert_eq!((pending["status"].as_str(), pending["sent_count"].as_i64()), (Some("sent"), Some(1)));
    assert_eq!((pending["result"].clone(), pending["issued_by"].as_str()), (Value::Null, Some("ops")));
    assert_eq!(pending["command"]["type"], "remote_start");

    // The edge answers; the result lands.
    let result = edge.result_for(&id, CommandOutcome::Accepted, json!({"status": "Accepted", "transaction_id": 42}));
    edge.send_result(&result).await;
    eventually("the result is stored", || async { command_status(&http, &token, &id).await["status"] == "answered" })
        .await;
    let done = command_status(&http, &token, &id).await;
    assert_schema(&doc, "CommandStatus", &done);
    assert_eq!(done["result"]["outcome"], "accepted");
    assert_eq!(done["result"]["detail"], json!({"status": "Accepted", "transaction_id": 42}));
    assert!(done["result"]["received_at"].is_string());
    let m = &hub.running().metrics;
    assert_eq!(m.command_results_count("stored"), 1);
    assert_eq!(m.commands_published_count("api"), 1);

    // The same result again (a redelivery): nothing changes. A different one: the first stands.
    edge.send_result(&result).await;
    eventually("the duplicate is counted", || async { m.command_results_count("duplicate") == 1 }).await;
    let mut other = result.clone();
    other.outcome = CommandOutcome::Rejected;
    other.detail = json!({"status": "Rejected"});
    edge.send_result(&other).await;
    eventually("the conflict is counted", || async { m.command_results_count("conflicting") == 1 }).await;
    assert_eq!(command_status(&http, &token, &id).await, done, "the first result stands");
    assert_eq!(m.command_results_count("stored"), 1);

    // A result for a command nobody sent, and one for this command from another site:
    // counted and ignored.
    let unknown = edge.result_for("no-such-command", CommandOutcome::Failed, json!({}));
    edge.send_result(&unknown).await;
    eventually("the unknown id is counted", || async { m.command_results_count("unknown_command") == 1 }).await;
    let (other_site, other_password) = hub.add_site("Intruder").await;
    let intruder = hub.edge(&other_site, &other_password).await;
    intruder.send_result(&intruder.result_for(&id, CommandOutcome::Rejected, json!({}))).await;
    eventually("another site's answer is counted", || async { m.command_results_count("unknown_command") == 2 }).await;
    assert_eq!(command_status(&http, &token, &id).await, done);
    // A result that is not one: dropped with its reason.
    intruder.publish(Topic::Results.of(&other_site), b"{\"v\":1}".to_vec()).await;
    eventually("the bad result is counted", || async { m.rejected_count("bad_json") == 1 }).await;

    // The site's command list.
    let list = http.get(&format!("/api/v1/sites/{site}/commands?status=answered"), &token).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_schema(&doc, "CommandPage", &list.body);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    let sent = http.get(&format!("/api/v1/sites/{site}/commands?status=sent"), &token).await;
    assert_eq!(sent.body["items"], json!([]));
    http.get("/api/v1/commands/nope", &token).await.assert_problem(404, "no command \"nope\"");
    hub.stop().await;
}
on_both_databases!(a_command_round_trip, command_round_trip_sqlite, command_round_trip_postgres);

async fn unanswered_commands_are_resent_at_hello(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (site, mut edge) = site_with_a_charger(&hub, "Resend").await;
    let token = hub.api_key("ops", Role::Admin).await;
    let http = hub.http();
    let path = format!("/api/v1/sites/{site}/commands");

    let post = |body: Value| {
        let (http, token, path) = (&http, &token, &path);
        async move {
            let a = http.post_json(path, token, &body).await;
            assert_eq!(a.status, 202, "{a:?}");
            a.body["command_id"].as_str().expect("id").to_owned()
        }
    };
    let lasting = post(json!({"type": "reset", "station": "CP-1", "hard": false, "expires_in_s": 300})).await;
    let first = edge.next_command().await;
    assert_eq!(first.command_id, lasting);
    let short = post(json!({"type": "unlock_connector", "station": "CP-1", "connector": 1, "expires_in_s": 1})).await;
    assert_eq!(edge.next_command().await.command_id, short);
    // Neither is answered (the edge lost them, say). Once the short one has expired, the
    // edge reconnects and says hello: only the lasting one comes again, unchanged.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    edge.send_hello(None, Some(1)).await;
    assert_eq!(edge.next_ack().await.applied_through, 1);
    assert_eq!(edge.next_command().await, first, "the same envelope again");
    assert!(edge.command_within(Duration::from_millis(700)).await.is_none(), "the expired command is not re-sent");
    let s = command_status(&http, &token, &lasting).await;
    assert_eq!((s["status"].as_str(), s["sent_count"].as_i64()), (Some("sent"), Some(2)));
    assert!(s["last_sent_at"].is_string());
    let s = command_status(&http, &token, &short).await;
    assert_eq!((s["status"].as_str(), s["sent_count"].as_i64()), (Some("unanswered"), Some(1)));
    let unanswered = http.get(&format!("{path}?status=unanswered"), &token).await;
    assert_eq!(unanswered.body["items"][0]["command_id"].as_str(), Some(short.as_str()));
    assert_eq!(hub.running().metrics.commands_published_count("hello"), 1);

    // Answered now: the next hello sends nothing.
    edge.send_result(&edge.result_for(&lasting, CommandOutcome::Accepted, json!({"status": "Accepted"}))).await;
    eventually("the result is stored", || async {
        command_status(&http, &token, &lasting).await["status"] == "answered"
    })
    .await;
    edge.send_hello(None, Some(1)).await;
    assert_eq!(edge.next_ack().await.applied_through, 1);
    assert!(edge.command_within(Duration::from_millis(700)).await.is_none(), "nothing left to re-send");

    // A command sent while the site is away reaches it when it comes back, even across
    // a hub restart (the command is in the database, not in memory).
    drop(edge);
    let away =
        post(json!({"type": "change_availability", "station": "CP-1", "connector": 0, "operative": false})).await;
    hub.stop().await;
    hub.restart().await;
    let http = hub.http();
    let password = new_password(&hub, &site).await;
    let mut edge = hub.edge(&site, &password).await;
    edge.send_hello(None, Some(1)).await;
    assert_eq!(edge.next_ack().await.applied_through, 1);
    assert_eq!(edge.next_command().await.command_id, away);
    let s = command_status(&http, &token, &away).await;
    assert_eq!((s["status"].as_str(), s["sent_count"].as_i64()), (Some("sent"), Some(2)));
    hub.stop().await;
}
on_both_databases!(unanswered_commands_are_resent_at_hello, resend_sqlite, resend_postgres);

/// The site's password is shown only once; to connect again, a test sets a new one.
async fn new_password(hub: &TestHub, site: &str) -> String {
    let password = cloud_hub::sites::generate_password();
    let hash = cloud_hub::sites::hash_password(&password).expect("hash");
    hub.store()
        .exec("UPDATE sites SET mqtt_password_hash = $2 WHERE id = $1", &[site.into(), hash.into()])
        .await
        .expect("update");
    password
}

// ---- bad requests ------------------------------------------------------------------------------

async fn bad_command_bodies_are_refused_with_reasons(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (site, mut edge) = site_with_a_charger(&hub, "Bad bodies").await;
    let token = hub.api_key("ops", Role::FleetManager).await;
    let http = hub.http();
    let path = format!("/api/v1/sites/{site}/commands");
    let raw = |content_type: &'static str, body: &'static str| {
        let (http, token, path) = (&http, &token, &path);
        async move { http.send(reqwest::Method::POST, path, Some(token), Some((content_type, body))).await }
    };
    raw("text/plain", "{}").await.assert_problem(415, "Content-Type: application/json");
    raw("application/json", "{\"type\": ").await.assert_problem(400, "the body is not valid JSON: EOF while parsing");
    raw("application/json", "").await.assert_problem(400, "not valid JSON");
    let post = |body: Value| {
        let (http, token, path) = (&http, &token, &path);
        async move { http.post_json(path, token, &body).await }
    };
    post(json!([1, 2])).await.assert_problem(422, "the body must be a JSON object");
    post(json!({"station": "CP-1"})).await.assert_problem(422, "the command has no `type`: use one of remote_start");
    post(json!({"type": "self_destruct"})).await.assert_problem(422, "unknown command type \"self_destruct\"");
    post(json!({"type": "reset", "station": "CP-1"})).await.assert_problem(422, "reset command: missing field `hard`");
    post(json!({"type": "reset", "station": "CP-1", "hard": "very"}))
        .await
        .assert_problem(422, "reset command: invalid type: string \"very\", expected a boolean");
    post(json!({"type": "remote_start", "station": "CP-1", "conector": 2, "id_tag": "T"})).await.assert_problem(
        422,
        "remote_start command: unknown field `conector`: its fields are `connector`, `id_tag`, `station`",
    );
    post(json!({"type": "reset", "station": "CP-1", "hard": true, "expires_in_s": 0}))
        .await
        .assert_problem(422, "`expires_in_s` must be a whole number of seconds from 1 to 604800");
    post(json!({"type": "reset", "station": "CP-9", "hard": true}))
        .await
        .assert_problem(422, &format!("station \"CP-9\" is not known at site \"{site}\" (the hub knows CP-1)"));
    post(json!({"type": "unlock_connector", "station": "CP-1", "connector": 0})).await.assert_problem(422, "1 or more");
    let a = http
        .post_json("/api/v1/sites/nowhere/commands", &token, &json!({"type": "reset", "station": "CP-1", "hard": true}))
        .await;
    a.assert_problem(404, "no site \"nowhere\"");
    http.post_json(&format!("{path}?dry_run=true"), &token, &json!({}))
        .await
        .assert_problem(400, "this route takes none");
    // Nothing was stored or sent.
    assert_eq!(count(hub.store(), "SELECT COUNT(*) FROM commands WHERE site_id = $1", &site).await, 0);
    assert!(edge.command_within(Duration::from_millis(300)).await.is_none());
    hub.stop().await;
}
on_both_databases!(bad_command_bodies_are_refused_with_reasons, bad_bodies_sqlite, bad_bodies_postgres);

// ---- the OpenAPI document -------------------------------------------------------------------------

/// Every route of the router is in the document (with its role and parameters), and
/// every operation of the document is served: called with real ids it answers its
/// documented status with a body of its documented schema, refuses an unknown query
/// parameter naming exactly the documented ones, and is closed without a key.
async fn the_openapi_document_describes_every_route(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let (site, mut edge) = site_with_a_charger(&hub, "Documented").await;
    let b = batch(
        &site,
        vec![
            tx_started(2, "CP-1", "tx-1", 0),
            meter_values(3, "CP-1", Some("tx-1"), vec![sample(2, "100", Some("Wh"), "Energy.Active.Import.Register")]),
            tx_stopped(4, "CP-1", "tx-1", Some(2_000)),
        ],
    );
    assert_eq!(edge.roundtrip(&b).await, 4);
    let admin = hub.api_key("admin", Role::Admin).await;
    let http = hub.http();

    // Billing data, so that every billing route has something real to answer with: a
    // tariff at the site, a customer owning TAG-1, the session's CDR and an invoice.
    const TARIFF: &str = r#"{"country_code": "NL", "party_id": "SPT", "id": "T1", "currency": "EUR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 21, "step_size": 1}]}],
        "last_updated": "2026-01-01T00:00:00Z"}"#;
    let put =
        http.send(reqwest::Method::PUT, "/api/v1/tariffs/T1", Some(&admin), Some(("application/json", TARIFF))).await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(http.post_json("/api/v1/customers", &admin, &json!({"id": "c1", "name": "C One"})).await.status, 201);
    assert_eq!(http.post_json("/api/v1/customers/c1/id-tags", &admin, &json!({"id_tag": "TAG-1"})).await.status, 200);
    let assign = json!({"tariff_id": "T1", "time_zone": "Europe/Amsterdam", "valid_from": "2026-01-01T00:00:00Z"});
    let a = http.post_json(&format!("/api/v1/sites/{site}/tariffs"), &admin, &assign).await;
    assert_eq!(a.status, 201, "{a:?}");
    let mut cdr_id = String::new();
    for _ in 0..300 {
        let a = http.get("/api/v1/cdrs", &admin).await;
        if let Some(id) = a.body["items"][0]["id"].as_str() {
            cdr_id = id.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cdr_id.is_empty(), "the finished session got a CDR");
    let period = json!({"customer_id": "c1", "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"});
    let invoice = http.post_json("/api/v1/invoices", &admin, &period).await;
    assert_eq!(invoice.status, 201, "{invoice:?}");
    let invoice_id = invoice.body["id"].as_str().expect("invoice id").to_owned();
    let command = http
        .post_json(
            &format!("/api/v1/sites/{site}/commands"),
            &admin,
            &json!({"type": "reset", "station": "CP-1", "hard": false}),
        )
        .await;
    let command_id = command.body["command_id"].as_str().expect("id").to_owned();
    let doc = openapi(&http, &admin).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, cloud_hub::fleet::openapi::document(&cloud_hub::fleet::routes()), "served as generated");

    // Router -> document.
    let routes = cloud_hub::fleet::routes();
    assert!(routes.len() >= 15);
    for r in &routes {
        let path = format!("/api/v1{}", r.path);
        let op = &doc["paths"][&path][r.verb.key()];
        assert!(op.is_object(), "{} {path} is not in the document", r.verb.key());
        assert_eq!(op["x-sitepilot-role"], r.role.as_str(), "{path}");
        let names: Vec<&str> =
            op["parameters"].as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
        let mut expected = cloud_hub::fleet::openapi::path_params(r.path);
        expected.extend(r.doc.query.iter().map(|p| p.name));
        assert_eq!(names, expected, "{path}");
    }

    // Document -> server. The OCPI administration (`/api/v1/ocpi/...`, served only with
    // `[ocpi] enabled`, not by this hub) is documented too; its routes are tested in
    // tests/ocpi_sessions.rs.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path.starts_with("/api/v1/ocpi/") {
            for op in item.as_object().expect("path item").values() {
                assert_eq!(op["x-sitepilot-role"], "admin", "{path}");
                assert!(op["description"].as_str().is_some_and(|d| d.contains("[ocpi] enabled")), "{path}");
            }
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let concrete = path
                .replace("{site}", &site)
                .replace("{station}", "CP-1")
                .replace("{transaction_uid}", "tx-1")
                .replace("{command_id}", &command_id)
                .replace("{tariff_id}", "T1")
                .replace("{customer_id}", "c1")
                .replace("{cdr_id}", &cdr_id)
                .replace("{invoice_id}", &invoice_id);
            assert!(!concrete.contains('{'), "a path parameter without a test value: {path}");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let assign_body = assign.to_string();
            let period_body = period.to_string();
            let body = match (method.as_str(), path.as_str()) {
                ("PUT", "/api/v1/tariffs/{tariff_id}") => Some(TARIFF),
                ("POST", "/api/v1/sites/{site}/tariffs") => Some(assign_body.as_str()),
                ("POST", "/api/v1/customers") => Some(r#"{"name": "Another customer"}"#),
                ("POST", "/api/v1/customers/{customer_id}/id-tags") => Some(r#"{"id_tag": "TAG-9"}"#),
                ("POST", "/api/v1/cdrs/{cdr_id}/credit") => Some(r#"{"reason": "documented"}"#),
                ("POST", "/api/v1/invoices") => Some(period_body.as_str()),
                ("POST", _) => Some(r#"{"type": "reset", "station": "CP-1", "hard": true}"#),
                _ => None,
            }
            .map(|b| ("application/json", b));
            let a = http.send(method.clone(), &concrete, Some(&admin), body).await;
            let (status, content) = op["responses"]
                .as_object()
                .expect("responses")
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .map(|(code, r)| (code.clone(), r["content"].clone()))
                .expect("a success response");
            assert_eq!(a.status.to_string(), status, "{method} {concrete}: {a:?}");
            if let Some(headers) = op["responses"][&status]["headers"].as_object() {
                for name in headers.keys() {
                    assert!(a.header(name).is_some(), "{method} {concrete}: documented header {name} missing");
                }
            }
            if content.get("text/html").is_some() {
                assert!(a.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{concrete}: {a:?}");
            } else {
                let schema = content["application/json"]["schema"]["$ref"].clone();
                let schema = schema.as_str().and_then(|s| s.strip_prefix("#/components/schemas/")).expect("schema ref");
                assert_schema(&doc, schema, &a.body);
            }
            // Unknown query parameters are refused, naming the documented ones.
            let a = http.send(method.clone(), &format!("{concrete}?zz=1"), Some(&admin), body).await;
            let mut documented: Vec<&str> = op["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            documented.sort_unstable();
            let expected = if documented.is_empty() {
                "this route takes none".to_owned()
            } else {
                format!("this route takes {}", documented.join(", "))
            };
            a.assert_problem(400, &expected);
            // And nothing without a key.
            http.send(method, &concrete, None, body).await.assert_problem(401, "no Authorization header");
        }
    }
    assert_eq!(operations, routes.len(), "the document has no operation the router lacks");
    hub.stop().await;
}
on_both_databases!(the_openapi_document_describes_every_route, openapi_sqlite, openapi_postgres);
