//! OCPI 2.2.1 tariffs (CPO role, Sender) end to end: a real hub with `[ocpi]` enabled on
//! a real database (SQLite and PostgreSQL), tariffs written through the fleet API, and
//! the simulated eMSP (`simulators::emsp`) over real sockets: crawling page by page,
//! our country code / party id on every tariff, `last_updated` that moves only with the
//! content, pushes of new and changed tariffs, and the 2001 error paths.

mod common;

use base64::Engine as _;
use cloud_hub::app::Running;
use cloud_hub::auth::Role;
use cloud_hub::config::Config;
use common::*;
use serde_json::{Value, json};
use simulators::emsp::{Emsp, EmspConfig};

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

struct Hub {
    running: Running,
    admin: String,
    http: reqwest::Client,
    base: String,
}

async fn start(db: &TestDb) -> Hub {
    init_logs();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n\
         max_connections = 4\n[ingest]\nworkers = 2\n[ocpi]\nenabled = true\ncountry_code = \"DE\"\n\
         party_id = \"SPL\"\nrefresh_interval_ms = 100\n",
        db.url
    );
    let path = db.dir.path().join("cloud-hub.toml");
    std::fs::write(&path, text).expect("write the config");
    let config = Config::load(&path).map_err(|e| e.to_string()).expect("valid config");
    let running = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).expect("hub starts");
    let admin =
        cloud_hub::auth::add_key(&running.store, &format!("admin-{}", uuid::Uuid::new_v4().simple()), Role::Admin)
            .await
            .expect("key")
            .token;
    let base = format!("http://{}", running.http_addr);
    Hub { running, admin, http: reqwest::Client::new(), base }
}

impl Hub {
    async fn token_a(&self) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/ocpi/partners", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"name": "emsp"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.expect("json");
        body["token_a"].as_str().expect("token").to_owned()
    }

    /// `PUT /api/v1/tariffs/{id}`: the HTTP status.
    async fn put_tariff(&self, id: &str, energy_price: &str) -> u16 {
        let body = format!(
            r#"{{"country_code": "NL", "party_id": "XXX", "id": "{id}", "currency": "EUR",
                "elements": [{{"price_components": [
                  {{"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1}},
                  {{"type": "ENERGY", "price": {energy_price}, "vat": 10.0, "step_size": 1}}]}}],
                "last_updated": "2018-12-17T11:36:01Z"}}"#
        );
        let r = self
            .http
            .put(format!("{}/api/v1/tariffs/{id}", self.base))
            .bearer_auth(&self.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        r.status().as_u16()
    }
}

fn b64(token: &str) -> String {
    format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token))
}

/// An eMSP crawls the tariffs page by page and sees them as ours; an unchanged PUT moves
/// no `last_updated`; a `date_from` crawl returns only what changed; bad parameters are 2001.
async fn tariffs_crawl(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db).await;
    for i in 0..5 {
        assert_eq!(hub.put_tariff(&format!("T{i}"), "0.25").await, 201);
    }
    let emsp = Emsp::start(EmspConfig::default()).await.expect("emsp");
    emsp.register(&format!("{}/ocpi/versions", hub.base), &hub.token_a().await).await.expect("registered");
    let crawl = emsp.crawl("tariffs", Some(2), None).await.expect("crawl");
    assert_eq!(crawl.pages.len(), 3, "{:?}", crawl.pages);
    assert_eq!(crawl.pages.iter().map(|p| p.count).collect::<Vec<_>>(), vec![2, 2, 1]);
    assert_eq!(crawl.pages[0].total, Some(5));
    assert!(crawl.pages[2].next.is_none());
    let ids: Vec<&str> = crawl.locations.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec!["T0", "T1", "T2", "T3", "T4"]);
    for t in &crawl.locations {
        assert_eq!((t["country_code"].as_str(), t["party_id"].as_str()), (Some("DE"), Some("SPL")), "{t}");
        assert_ne!(t["last_updated"], "2018-12-17T11:36:01Z", "the hub's last_updated, not the body's");
    }
    let before = crawl.locations.clone();

    // The same content again: nothing moves.
    assert_eq!(hub.put_tariff("T3", "0.25").await, 200);
    let again = emsp.crawl("tariffs", None, None).await.expect("crawl");
    assert_eq!(again.locations, before);

    // A changed tariff: only it comes back from `date_from` = the newest last_updated
    // seen so far plus one millisecond.
    let newest = before.iter().filter_map(|t| t["last_updated"].as_str()).max().expect("some").to_owned();
    let after = shared_model::ocpi::parse_timestamp(&newest).expect("time") + chrono::Duration::milliseconds(1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(hub.put_tariff("T1", "0.30").await, 200);
    let since = shared_model::ocpi::timestamp(after);
    let changed = emsp.crawl("tariffs", None, Some(&since)).await.expect("crawl");
    let ids: Vec<&str> = changed.locations.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec!["T1"]);
    assert_eq!(changed.locations[0]["elements"][0]["price_components"][1]["price"], json!(0.30));

    // Bad parameters: HTTP 400 with 2001.
    let cpo = emsp.cpo().expect("registered");
    for bad in ["limit=0", "offset=-3", "date_from=yesterday"] {
        let r = hub
            .http
            .get(format!("{}/ocpi/2.2.1/tariffs?{bad}", hub.base))
            .header("authorization", b64(&cpo.token))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["status_code"], 2001, "{bad}: {body}");
    }
    // Without a partner's token: 401 with 2000.
    let r = hub.http.get(format!("{}/ocpi/2.2.1/tariffs", hub.base)).send().await.expect("request");
    assert_eq!(r.status().as_u16(), 401);
    hub.running.shutdown().await;
}
on_both_databases!(tariffs_crawl, tariffs_crawl_sqlite, tariffs_crawl_postgres);

/// A new tariff and a changed tariff are PUT to the eMSP's tariffs Receiver; an
/// unchanged PUT pushes nothing.
async fn tariff_pushes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db).await;
    let emsp = Emsp::start(EmspConfig::default()).await.expect("emsp");
    emsp.register(&format!("{}/ocpi/versions", hub.base), &hub.token_a().await).await.expect("registered");
    // Let the first scan learn the (empty) set of tariffs.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(hub.put_tariff("AC-1", "0.25").await, 201);
    let put = emsp
        .wait_for_push(TIMEOUT, |p| p.module == "tariffs" && p.path == "DE/SPL/AC-1")
        .await
        .expect("the new tariff is PUT");
    assert_eq!(put.method, "PUT");
    assert_eq!(put.body["country_code"], "DE");
    assert_eq!(put.body["elements"][0]["price_components"][1]["price"], json!(0.25));

    assert_eq!(hub.put_tariff("AC-1", "0.25").await, 200);
    assert_eq!(hub.put_tariff("AC-1", "0.35").await, 200);
    let changed = emsp
        .wait_for_push(TIMEOUT, |p| {
            p.module == "tariffs" && p.body["elements"][0]["price_components"][1]["price"] == json!(0.35)
        })
        .await
        .expect("the changed tariff is PUT");
    assert_ne!(changed.body["last_updated"], put.body["last_updated"]);
    // Give an (unwanted) push of the unchanged PUT time to arrive: only two pushes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pushes: Vec<_> = emsp.pushes().into_iter().filter(|p| p.module == "tariffs").collect();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    hub.running.shutdown().await;
}
on_both_databases!(tariff_pushes, tariff_pushes_sqlite, tariff_pushes_postgres);
