//! Roaming end to end, on SQLite and on PostgreSQL: an eMSP (the simulator, over real
//! HTTP) registers with the hub; a driver presents its card, a foreign id tag the site
//! does not know, at a simulated charger; the edge asks the hub over MQTT (`up/auth`), the
//! hub asks the eMSP in real time, the eMSP allows it, the edge caches the answer and the
//! charger starts; the car charges, the session stops, reaches the hub through the outbox,
//! billing prices it, and the CDR is POSTed to the eMSP with the price the tariff gives for
//! the energy measured — checked against the tariff engine run here on the session's
//! meter values, and against the tariff by hand.
//!
//! PostgreSQL is used where it runs (`SITEPILOT_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`); when it is absent the PostgreSQL variant
//! says why and returns, except with `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used)]

use cloud_hub::db::Ty;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use shared_model::ocpp::v16::{AuthorizationStatus, Reason};
use shared_model::tariff::{CompiledTariff, MeterReading, Pricer, Session, Tariff};
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use simulators::emsp::{AuthAnswer, Emsp, EmspConfig};
use std::time::Duration;
use tests::hubdb::{Backend, database, drop_database};
use tests::{TestAgent, energy_config_text, eventually, password};

/// OCPI 2.2.1 tariffs chapter, "Tariff example 0.25 euro per kWh + start fee".
const START_FEE_TARIFF: &str = r#"{
  "country_code": "NL", "party_id": "XXX", "id": "12", "currency": "EUR",
  "elements": [{"price_components": [
    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}
  ]}],
  "last_updated": "2018-12-17T11:36:01Z"
}"#;

/// The driver's card: an eMSP's token, not in the site's local list.
const FOREIGN_TAG: &str = "NL-EMS-CARD-7";

async fn start_hub(dir: &std::path::Path, db_url: &str) -> cloud_hub::app::Running {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n\
         [database]\nurl = \"{db_url}\"\nmax_connections = 4\n[ingest]\nworkers = 2\n[billing]\ninterval_s = 1\n\
         [ocpi]\nenabled = true\ncountry_code = \"DE\"\nparty_id = \"SPL\"\nrefresh_interval_ms = 200\n\
         push_retry_min_ms = 100\npush_retry_max_ms = 1000\n"
    );
    tests::start_hub_with(dir, &text).await
}

/// Calls the hub's fleet API as the admin; status and body.
async fn api(
    http: &reqwest::Client,
    hub: &cloud_hub::app::Running,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let req = http.request(method, format!("http://{}/api/v1{path}", hub.http_addr)).bearer_auth(key).json(&body);
    tests::http_json(req).await
}

/// The decimal a JSON number has in `raw` right after `"key":` (its digits as sent).
fn number_after(raw: &str, key: &str) -> Decimal {
    let at = raw.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {raw}")) + key.len() + 3;
    let text: String = raw[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
    text.parse().unwrap_or_else(|e| panic!("{key}: {text:?}: {e}"))
}

async fn a_foreign_token_charges_and_its_cdr_reaches_the_emsp(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((db_url, pg_name)) = database(backend, dir.path()).await else { return };
    let hub = start_hub(dir.path(), &db_url).await;
    let creds = cloud_hub::sites::add_site(&hub.store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
    let key = cloud_hub::auth::add_key(&hub.store, "admin", cloud_hub::auth::Role::Admin).await.unwrap().token;
    let http = reqwest::Client::new();

    // The CPO side: the site as a Location, its tariff, the eMSP registered.
    let location = json!({"address": "Main St 1", "city": "Berlin", "country": "DEU", "latitude": 52.52,
                          "longitude": 13.405, "time_zone": "Europe/Berlin"});
    let (status, body) = api(&http, &hub, &key, reqwest::Method::PUT, "/ocpi/sites/test-site/location", location).await;
    assert_eq!(status, 200, "{body}");
    let tariff: Value = serde_json::from_str(START_FEE_TARIFF).unwrap();
    let (status, body) = api(&http, &hub, &key, reqwest::Method::PUT, "/tariffs/12", tariff).await;
    assert_eq!(status, 201, "{body}");
    let assign = json!({"tariff_id": "12", "time_zone": "Europe/Berlin", "valid_from": "2020-01-01T00:00:00Z"});
    let (status, body) = api(&http, &hub, &key, reqwest::Method::POST, "/sites/test-site/tariffs", assign).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(&http, &hub, &key, reqwest::Method::POST, "/ocpi/partners", json!({"name": "emsp"})).await;
    assert_eq!(status, 201, "{body}");
    let emsp = Emsp::start(EmspConfig::default()).await.unwrap();
    emsp.register(&format!("http://{}/ocpi/versions", hub.http_addr), body["token_a"].as_str().unwrap()).await.unwrap();
    // The eMSP pushes its card with whitelist NEVER: every use must be authorized by it
    // in real time, and it allows this one.
    let mut card = emsp.token(FOREIGN_TAG);
    card.whitelist = "NEVER".into();
    emsp.push_token(&card).await.unwrap();
    emsp.set_authorization(FOREIGN_TAG, AuthAnswer::Allowed);

    // The site: an edge agent with one charger, connected to the hub.
    let port = hub.embedded_broker.unwrap().port();
    let tail = format!(
        "[sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\npoll_interval_ms = 100\n",
        creds.mqtt_username, creds.mqtt_password
    );
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", "")], &tail)).await;
    eventually(20, || async { (agent.get("/api/v1/sync").await.1["connected"] == true).then_some(()) })
        .await
        .expect("the edge connects to the hub");
    let cfg = ChargePointConfig::new("CP-1", agent.ocpp_url())
        .with_password(password("CP-1"))
        .fast()
        .with_ev(EvModel::instant().with_max_current(32.0))
        .with_meter_interval(Duration::from_millis(200));
    let cp = ChargePoint::connect(cfg).await.unwrap();
    cp.boot().await.unwrap();

    // The card at the charger: asked of the hub, which asks the eMSP.
    let answer = cp.authorize(FOREIGN_TAG).await.unwrap();
    assert_eq!(answer.id_tag_info.status, AuthorizationStatus::Accepted);
    let asked = emsp.authorizations();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, FOREIGN_TAG);
    assert_eq!(asked[0].1.as_ref().map(|l| l["location_id"].clone()), Some(json!("test-site")));
    // Cached at the site for offline use.
    let cached: Option<String> = agent
        .running
        .shared
        .store
        .read(|c| Ok(c.query_row("SELECT status FROM auth_cache WHERE id_tag = ?1", [FOREIGN_TAG], |r| r.get(0)).ok()))
        .await
        .unwrap();
    assert_eq!(cached.as_deref(), Some("Accepted"));

    // The car charges; the session stops.
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, FOREIGN_TAG).await.unwrap();
    assert!(tx > 0, "the site started it: {tx}");
    assert_eq!(emsp.authorizations().len(), 1, "the start used the fresh cached answer");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cp.stop_transaction(1, Reason::EVDisconnected).await.unwrap();
    cp.unplug(1).await.unwrap();

    // The CDR reaches the eMSP.
    let posted = emsp.wait_for_push(Duration::from_secs(60), |p| p.module == "cdrs").await.expect("the CDR is POSTed");
    let cdr = &posted.body;
    assert_eq!(cdr["cdr_token"]["uid"], FOREIGN_TAG);
    assert_eq!(cdr["auth_method"], "AUTH_REQUEST", "{cdr}");
    assert!(cdr["authorization_reference"].as_str().is_some_and(|r| !r.is_empty()), "{cdr}");
    assert_eq!(cdr["cdr_location"]["id"], "test-site");
    assert_eq!(cdr["cdr_location"]["evse_uid"], "test-site*CP-1*1");
    assert_eq!(cdr["currency"], "EUR");

    // The session as the hub stored it, and its meter values.
    let uid = cdr["session_id"].as_str().unwrap().to_owned();
    let s = hub
        .store
        .fetch_opt(
            "SELECT started_at, meter_start_wh, stopped_at, meter_stop_wh FROM sessions WHERE site_id = 'test-site' \
             AND transaction_uid = $1",
            &[uid.as_str().into()],
            &[Ty::Time, Ty::Int, Ty::Time, Ty::Int],
        )
        .await
        .unwrap()
        .expect("the session at the hub");
    let (start, start_wh, stop, stop_wh) =
        (s.time(0).unwrap(), s.int(1).unwrap(), s.time(2).unwrap(), s.int(3).unwrap());
    assert!(stop_wh > start_wh, "the car drew energy: {start_wh} -> {stop_wh} Wh");
    let samples = hub
        .store
        .fetch(
            "SELECT ts, value_num FROM meter_samples WHERE site_id = 'test-site' AND transaction_uid = $1 \
             AND measurand = 'Energy.Active.Import.Register' AND phase IS NULL AND value_num IS NOT NULL \
             AND ts > $2 AND ts < $3 ORDER BY ts",
            &[uid.as_str().into(), start.into(), stop.into()],
            &[Ty::Time, Ty::Real],
        )
        .await
        .unwrap();
    assert!(!samples.is_empty(), "meter values during the session");

    // The price, independently: the tariff engine on the meter values ...
    let mut meter = vec![MeterReading { at: start, energy_wh: Decimal::from(start_wh) }];
    for r in &samples {
        let (at, wh) = (r.time(0).unwrap(), Decimal::try_from(r.real(1).unwrap()).unwrap().round_dp(3));
        if at > meter.last().unwrap().at && wh >= meter.last().unwrap().energy_wh && wh <= Decimal::from(stop_wh) {
            meter.push(MeterReading { at, energy_wh: wh });
        }
    }
    meter.push(MeterReading { at: stop, energy_wh: Decimal::from(stop_wh) });
    let session = Session::try_new(start, stop, "Europe/Berlin", meter).unwrap();
    let tariff: Tariff = serde_json::from_str(START_FEE_TARIFF).unwrap();
    let priced = Pricer::new().price(&CompiledTariff::try_new(&tariff).unwrap(), &session).unwrap();
    let expected = priced.totals.total_cost;
    // ... and by hand: EUR 0.50 + 0.25 per kWh (VAT 20 % and 10 %).
    let kwh = Decimal::new(stop_wh - start_wh, 3);
    let by_hand_excl = Decimal::new(50, 2) + kwh * Decimal::new(25, 2);
    let by_hand_incl = Decimal::new(60, 2) + kwh * Decimal::new(275, 3);
    let ocpi_round = |d: Decimal| d.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(expected.excl_vat, ocpi_round(by_hand_excl));
    assert_eq!(expected.incl_vat, Some(ocpi_round(by_hand_incl)));

    // The CDR as the eMSP received it carries exactly that.
    let raw = &posted.raw;
    let total_at = raw.find("\"total_cost\":").unwrap();
    assert_eq!(number_after(&raw[total_at..], "excl_vat"), expected.excl_vat, "{raw}");
    assert_eq!(number_after(&raw[total_at..], "incl_vat"), expected.incl_vat.unwrap(), "{raw}");
    assert_eq!(number_after(raw, "total_energy"), kwh, "{raw}");

    // The session reached the eMSP too, completed, with the same energy.
    let pushed = eventually(20, || async { emsp.session(&uid).filter(|s| s["status"] == "COMPLETED") })
        .await
        .expect("the completed session at the eMSP");
    assert_eq!(pushed["auth_method"], "AUTH_REQUEST");
    assert_eq!(Decimal::try_from(pushed["kwh"].as_f64().unwrap()).unwrap().round_dp(4), kwh);

    agent.running.shutdown().await;
    hub.shutdown().await;
    drop_database(pg_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_token_charges_and_its_cdr_reaches_the_emsp_sqlite() {
    a_foreign_token_charges_and_its_cdr_reaches_the_emsp(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_token_charges_and_its_cdr_reaches_the_emsp_postgres() {
    a_foreign_token_charges_and_its_cdr_reaches_the_emsp(Backend::Postgres).await;
}
