//! Billing end to end: a real hub (embedded broker, real database), tariffs and customers
//! through the fleet API, sessions arriving from an edge over MQTT, the billing worker
//! turning them into CDRs, corrections as credit CDRs, invoices as JSON and HTML. Every
//! scenario runs against SQLite and against PostgreSQL, and the answers are checked
//! against the OpenAPI document's schemas.

mod common;

use cloud_hub::auth::Role;
use common::*;
use serde_json::{Value, json};
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, StopReason, TransactionOrigin};
use shared_model::sync::Command;
use std::time::Duration;

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

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_json(http: &Http, path: &str, token: &str, body: &str) -> Answer {
    http.send(reqwest::Method::PUT, path, Some(token), Some(("application/json", body))).await
}

/// OCPI 2.2.1 tariffs chapter, "Tariff example 0.25 euro per kWh + start fee" (EUR 0.25
/// per kWh at 10 % VAT, a start fee of EUR 0.50 at 20 % VAT), as a CPO would PUT it. The
/// prices are written as JSON numbers with their decimals as text.
const START_FEE_TARIFF: &str = r#"{
  "country_code": "NL", "party_id": "SPT", "id": "12", "currency": "EUR",
  "elements": [{"price_components": [
    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}
  ]}],
  "last_updated": "2018-12-17T11:36:01Z"
}"#;

async fn openapi(http: &Http, token: &str) -> Value {
    let a = http.get("/api/v1/openapi.json", token).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

fn stopped(seq: u64, uid: &str, meter_stop: i64, minute: u32, reconciled: bool) -> shared_model::sync::EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStopped {
            station: "CP-1".into(),
            transaction_uid: uid.into(),
            meter_stop_wh: Some(meter_stop),
            stopped_at: t(minute, 0),
            reason: Some(if reconciled { StopReason::PowerLoss } else { StopReason::EVDisconnected }),
            id_tag: Some("TAG-1".into()),
            reconciled,
        },
    )
}

fn started(seq: u64, uid: &str, meter_start: i64, tag: &str) -> shared_model::sync::EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: "CP-1".into(),
            transaction_uid: uid.into(),
            station_transaction_id: "17".into(),
            connector: ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some(tag.into()),
            meter_start_wh: Some(meter_start),
            started_at: Some(t(1, 0)),
            origin: TransactionOrigin::Online,
        },
    )
}

/// The site `Alpha` with the start-fee tariff from the start of the test day, a customer
/// owning TAG-1, and the edge (with the SetTariff command it received already taken).
async fn billed_site(hub: &TestHub, admin: &str) -> (String, Edge) {
    let http = hub.http();
    let (site, password) = hub.add_site("Alpha").await;
    let mut edge = hub.edge(&site, &password).await;
    let a = put_json(&http, "/api/v1/tariffs/12", admin, START_FEE_TARIFF).await;
    assert_eq!(a.status, 201, "{a:?}");
    let a = http
        .post_json(
            &format!("/api/v1/sites/{site}/tariffs"),
            admin,
            &json!({"tariff_id": "12", "time_zone": "Europe/Amsterdam", "valid_from": "2026-11-21T00:00:00Z"}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let command = edge.next_command().await;
    match &command.command {
        Command::SetTariff { tariff_id, tariff } => {
            assert_eq!(tariff_id, "12");
            assert_eq!(tariff["elements"][0]["price_components"][1]["price"], json!(0.25));
        }
        other => panic!("expected SetTariff, got {other:?}"),
    }
    assert_eq!(a.body["command_id"], json!(command.command_id));
    let a = http
        .post_json(
            "/api/v1/customers",
            admin,
            &json!({"id": "acme", "name": "Acme Logistics B.V.", "vat_id": "NL0001"}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let a = http.post_json("/api/v1/customers/acme/id-tags", admin, &json!({"id_tag": "TAG-1"})).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["id_tags"], json!(["TAG-1"]));
    (site, edge)
}

fn dec(v: &Value) -> rust_decimal::Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{v} is not a decimal string"))
}

#[track_caller]
fn assert_money(v: &Value, expected: &str) {
    assert_eq!(dec(v), expected.parse::<rust_decimal::Decimal>().expect("expected decimal"), "{v}");
}

async fn cdrs_of(http: &Http, token: &str, site: &str) -> Vec<Value> {
    let a = http.get(&format!("/api/v1/cdrs?site={site}"), token).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["items"].as_array().cloned().unwrap_or_default()
}

// ---- a session becomes a CDR, the CDR an invoice -----------------------------------------

async fn a_finished_session_is_priced_and_invoiced(backend: Backend) {
    let Some((_db, mut hub)) = setup(backend).await else { return };
    let admin = hub.api_key("admin", Role::Admin).await;
    let viewer = hub.api_key("viewer", Role::Viewer).await;
    let http = hub.http();
    let doc = openapi(&http, &admin).await;
    let (site, mut edge) = billed_site(&hub, &admin).await;

    // The same content again: nothing moves, last_updated included.
    let first = http.get("/api/v1/tariffs/12", &viewer).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_schema(&doc, "Tariff", &first.body);
    let again = put_json(&http, "/api/v1/tariffs/12", &admin, START_FEE_TARIFF).await;
    assert_eq!((again.status, again.body["outcome"].as_str()), (200, Some("unchanged")), "{again:?}");
    assert_schema(&doc, "TariffStored", &again.body);
    assert_eq!(again.body["tariff"]["last_updated"], first.body["last_updated"]);
    assert_ne!(first.body["last_updated"], json!("2018-12-17T11:36:01Z"), "the hub sets last_updated");

    // 12:01 -> 12:30, 1000 -> 3500 Wh: 2.5 kWh.
    let events = vec![
        started(1, "tx-1", 1_000, "TAG-1"),
        meter_values(2, "CP-1", Some("tx-1"), vec![sample(10, "1800", Some("Wh"), "Energy.Active.Import.Register")]),
        meter_values(3, "CP-1", Some("tx-1"), vec![sample(20, "2.7", Some("kWh"), "Energy.Active.Import.Register")]),
        stopped(4, "tx-1", 3_500, 30, false),
    ];
    assert_eq!(edge.roundtrip(&batch(&site, events)).await, 4);
    eventually("the session has a CDR", || async { !cdrs_of(&http, &viewer, &site).await.is_empty() }).await;
    let cdrs = cdrs_of(&http, &viewer, &site).await;
    assert_eq!(cdrs.len(), 1, "{cdrs:#?}");
    let cdr = &cdrs[0];
    assert_schema(&doc, "Cdr", cdr);
    // 2.5 kWh x 0.25 = 0.625 at 10 %, plus 0.50 at 20 %.
    assert_eq!(cdr["kind"], "debit");
    assert_eq!(cdr["revision"], 1);
    assert_eq!(cdr["customer_id"], "acme");
    assert_eq!(cdr["currency"], "EUR");
    assert_eq!(cdr["time_zone"], "Europe/Amsterdam");
    assert_money(&cdr["total_energy_kwh"], "2.5");
    assert_money(&cdr["total_cost_excl_vat"], "1.125");
    assert_money(&cdr["total_cost_incl_vat"], "1.2875");
    assert_money(&cdr["detail"]["totals"]["total_fixed_cost"]["excl_vat"], "0.50");
    assert_eq!(
        cdr["detail"]["vat"],
        json!([{"rate": "10", "net": "0.625", "vat": "0.0625"}, {"rate": "20", "net": "0.5", "vat": "0.1"}]),
        "VAT lines, normalised decimals"
    );
    let periods = cdr["detail"]["charging_periods"].as_array().expect("periods");
    assert!(!periods.is_empty());
    assert_eq!(periods[0]["start_date_time"], json!("2026-11-21T12:01:00Z"));
    let energy: rust_decimal::Decimal = periods
        .iter()
        .flat_map(|p| p["dimensions"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["type"] == "ENERGY")
        .map(|d| dec(&d["volume"]))
        .sum();
    assert_eq!(energy, rust_decimal::Decimal::new(25, 1), "the periods add up to the session's energy");
    let id = cdr["id"].as_str().expect("id").to_owned();
    assert_eq!(http.get(&format!("/api/v1/cdrs/{id}"), &viewer).await.body, *cdr);

    // Immutable: the database itself refuses.
    let store = hub.store();
    assert!(
        store.exec("UPDATE cdrs SET total_cost_excl_vat = '0' WHERE id = $1", &[id.as_str().into()]).await.is_err()
    );
    assert!(store.exec("DELETE FROM cdrs WHERE id = $1", &[id.as_str().into()]).await.is_err());

    // The worker again, a restart included: still one CDR.
    hub.stop().await;
    hub.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = hub.http();
    assert_eq!(cdrs_of(&http, &viewer, &site).await.len(), 1);

    // The invoice.
    let period = json!({"customer_id": "acme", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"});
    http.post_json("/api/v1/invoices", &viewer, &period).await.assert_problem(403, "fleet_manager");
    let a = http.post_json("/api/v1/invoices", &admin, &period).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_schema(&doc, "Invoice", &a.body);
    let inv = a.body;
    assert_eq!(inv["number"], 1);
    assert_eq!(inv["customer"]["name"], "Acme Logistics B.V.");
    assert_eq!((inv["total_excl_vat"].as_str(), inv["total_vat"].as_str()), (Some("1.125"), Some("0.1625")));
    assert_money(&inv["total_incl_vat"], "1.2875");
    assert_eq!(inv["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(inv["tax_lines"].as_array().map(Vec::len), Some(2));
    let again = http.post_json("/api/v1/invoices", &admin, &period).await;
    again.assert_problem(409, "not invoiced yet");
    let inv_id = inv["id"].as_str().expect("id");
    let cdr = http.get(&format!("/api/v1/cdrs/{id}"), &viewer).await.body;
    assert_eq!(cdr["invoice_id"], json!(inv_id));
    let page =
        http.send(reqwest::Method::GET, &format!("/api/v1/invoices/{inv_id}/document"), Some(&viewer), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.body.as_str().expect("html");
    assert!(html.contains("Invoice 1") && html.contains("1.29 EUR") && html.contains("Acme Logistics B.V."), "{html}");
    let list = http.get("/api/v1/invoices?customer=acme", &viewer).await;
    assert_eq!(list.status, 200);
    assert_schema(&doc, "InvoicePage", &list.body);
    hub.stop().await;
}
on_both_databases!(a_finished_session_is_priced_and_invoiced, priced_and_invoiced_sqlite, priced_and_invoiced_postgres);

// ---- corrections ---------------------------------------------------------------------------

async fn a_corrected_stop_is_credited_and_priced_again(backend: Backend) {
    let Some((_db, hub)) = setup(backend).await else { return };
    let admin = hub.api_key("admin", Role::Admin).await;
    let manager = hub.api_key("manager", Role::FleetManager).await;
    let http = hub.http();
    let doc = openapi(&http, &admin).await;
    let (site, mut edge) = billed_site(&hub, &admin).await;

    // The site inferred a stop (power loss, 3000 Wh at 12:20)...
    let events = vec![started(1, "tx-1", 1_000, "TAG-1"), stopped(2, "tx-1", 3_000, 20, true)];
    assert_eq!(edge.roundtrip(&batch(&site, events)).await, 2);
    eventually("the inferred stop is priced", || async { cdrs_of(&http, &admin, &site).await.len() == 1 }).await;
    // ...then the charger's own stop came (3500 Wh at 12:30).
    assert_eq!(edge.roundtrip(&batch(&site, vec![stopped(3, "tx-1", 3_500, 30, false)])).await, 3);
    eventually("the correction is issued", || async { cdrs_of(&http, &admin, &site).await.len() == 3 }).await;
    let cdrs = cdrs_of(&http, &admin, &site).await;
    for c in &cdrs {
        assert_schema(&doc, "Cdr", c);
    }
    let by = |kind: &str, revision: i64| {
        cdrs.iter().find(|c| c["kind"] == kind && c["revision"] == revision).cloned().expect("cdr")
    };
    let (first, credit, second) = (by("debit", 1), by("credit", 1), by("debit", 2));
    assert_money(&first["total_cost_excl_vat"], "1.000"); // 2 kWh x 0.25 + 0.50
    assert_eq!(credit["credits"], first["id"]);
    assert_money(&credit["total_cost_excl_vat"], "-1.000");
    assert_money(&credit["total_cost_incl_vat"], "-1.150");
    assert!(credit["reason"].as_str().is_some_and(|r| r.contains("session corrected")), "{credit}");
    assert_money(&second["total_cost_excl_vat"], "1.125");
    assert_eq!(second["meter_stop_wh"], 3_500);

    // A refund by hand: admins only, with a reason, once.
    let second_id = second["id"].as_str().expect("id");
    let path = format!("/api/v1/cdrs/{second_id}/credit");
    http.post_json(&path, &manager, &json!({"reason": "goodwill"})).await.assert_problem(403, "admin");
    http.post_json(&path, &admin, &json!({"reason": " "})).await.assert_problem(422, "reason");
    http.post_json(&path, &admin, &json!({"why": "x"})).await.assert_problem(422, "unknown field");
    let a = http.post_json(&path, &admin, &json!({"reason": "goodwill"})).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_schema(&doc, "Cdr", &a.body);
    assert_money(&a.body["total_cost_excl_vat"], "-1.125");
    http.post_json(&path, &admin, &json!({"reason": "again"})).await.assert_problem(409, "already credited");
    let credit_path = format!("/api/v1/cdrs/{}/credit", a.body["id"].as_str().expect("id"));
    http.post_json(&credit_path, &admin, &json!({"reason": "x"})).await.assert_problem(409, "is a credit");
    http.post_json("/api/v1/cdrs/nope/credit", &admin, &json!({"reason": "x"})).await.assert_problem(404, "no CDR");
    // The worker does not price the refunded session again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(cdrs_of(&http, &admin, &site).await.len(), 4);

    // The invoice nets it all out: 1.000 - 1.000 + 1.125 - 1.125.
    let period = json!({"customer_id": "acme", "from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"});
    let inv = http.post_json("/api/v1/invoices", &manager, &period).await;
    assert_eq!(inv.status, 201, "{inv:?}");
    assert_eq!(inv.body["lines"].as_array().map(Vec::len), Some(4));
    assert!(dec(&inv.body["total_incl_vat"]).is_zero(), "{inv:?}");
}
on_both_databases!(a_corrected_stop_is_credited_and_priced_again, corrected_sqlite, corrected_postgres);

// ---- bad input -----------------------------------------------------------------------------

async fn bad_billing_input_gets_precise_errors(backend: Backend) {
    let Some((_db, hub)) = setup(backend).await else { return };
    let admin = hub.api_key("admin", Role::Admin).await;
    let manager = hub.api_key("manager", Role::FleetManager).await;
    let http = hub.http();
    let (site, _) = hub.add_site("Alpha").await;

    put_json(&http, "/api/v1/tariffs/12", &manager, START_FEE_TARIFF).await.assert_problem(403, "admin");
    put_json(&http, "/api/v1/tariffs/13", &admin, START_FEE_TARIFF).await.assert_problem(422, "not the id in the path");
    put_json(&http, "/api/v1/tariffs/12", &admin, "{").await.assert_problem(400, "not valid JSON");
    http.send(reqwest::Method::PUT, "/api/v1/tariffs/12", Some(&admin), Some(("text/plain", START_FEE_TARIFF)))
        .await
        .assert_problem(415, "application/json");
    let no_elements = START_FEE_TARIFF.replace(
        r#""elements": [{"price_components": [
    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}
  ]}]"#,
        r#""elements": []"#,
    );
    assert_ne!(no_elements, START_FEE_TARIFF);
    put_json(&http, "/api/v1/tariffs/12", &admin, &no_elements).await.assert_problem(422, "no elements");
    let bad_currency = START_FEE_TARIFF.replace("\"EUR\"", "\"euro\"");
    put_json(&http, "/api/v1/tariffs/12", &admin, &bad_currency).await.assert_problem(422, "ISO 4217");
    let float_price = START_FEE_TARIFF.replace("0.25", "\"cheap\"");
    put_json(&http, "/api/v1/tariffs/12", &admin, &float_price).await.assert_problem(422, "not an OCPI 2.2.1 Tariff");
    http.get("/api/v1/tariffs/12", &admin).await.assert_problem(404, "no tariff");

    assert_eq!(put_json(&http, "/api/v1/tariffs/12", &admin, START_FEE_TARIFF).await.status, 201);
    let assign = format!("/api/v1/sites/{site}/tariffs");
    http.post_json(&assign, &manager, &json!({"tariff_id": "12", "time_zone": "Mars/Olympus"}))
        .await
        .assert_problem(422, "unknown time zone");
    http.post_json(&assign, &manager, &json!({"tariff_id": "99", "time_zone": "Europe/Berlin"}))
        .await
        .assert_problem(422, "no tariff \"99\"");
    http.post_json(&assign, &manager, &json!({"time_zone": "Europe/Berlin"}))
        .await
        .assert_problem(422, "tariff_id is required");
    http.post_json(&assign, &manager, &json!({"tariff_id": "12", "time_zone": "Europe/Berlin", "valid_from": "today"}))
        .await
        .assert_problem(422, "RFC 3339");
    http.post_json(
        "/api/v1/sites/nowhere/tariffs",
        &manager,
        &json!({"tariff_id": "12", "time_zone": "Europe/Berlin"}),
    )
    .await
    .assert_problem(404, "no site");

    http.post_json("/api/v1/customers", &manager, &json!({"name": ""})).await.assert_problem(422, "name");
    assert_eq!(http.post_json("/api/v1/customers", &manager, &json!({"id": "c1", "name": "C"})).await.status, 201);
    http.post_json("/api/v1/customers", &manager, &json!({"id": "c1", "name": "C"}))
        .await
        .assert_problem(409, "exists");
    http.post_json("/api/v1/customers/c2/id-tags", &manager, &json!({"id_tag": "T"}))
        .await
        .assert_problem(404, "no customer");
    let period = json!({"customer_id": "c1", "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"});
    http.post_json("/api/v1/invoices", &manager, &period).await.assert_problem(422, "must be after");
    let period = json!({"customer_id": "c1", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"});
    http.post_json("/api/v1/invoices", &manager, &period).await.assert_problem(409, "no CDRs");
    http.get("/api/v1/invoices/nope", &manager).await.assert_problem(404, "no invoice");
    http.get("/api/v1/cdrs?from=yesterday", &manager).await.assert_problem(400, "from");
}
on_both_databases!(bad_billing_input_gets_precise_errors, bad_input_sqlite, bad_input_postgres);
