//! Shared helpers for the end-to-end scenarios in `tests/tests/`: start a real edge agent
//! (in process, or as its own process for crash tests) on port 0 with a SQLite file in a
//! temporary directory, talk to it over real sockets, and check every OCPP frame that
//! crossed the wire against the official JSON schemas.

#![allow(clippy::unwrap_used)]

pub mod browser;
pub mod hubdb;

use anyhow::{Context, anyhow};
use base64::Engine;
use edge_agent::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use shared_model::ocpp::framing::Frame;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Chargers every test config knows, with their passwords.
pub const CHARGERS: &[(&str, &str)] =
    &[("CP-1", "password-cp-1-0123"), ("CP-2", "password-cp-2-0123"), ("CP-3", "password-cp-3-0123")];

/// Tags in the local list of every test config.
pub const TAG_OK: &str = "TAG-OK";
pub const TAG_BLOCKED: &str = "TAG-BLOCKED";

fn hashes() -> &'static Vec<String> {
    static H: OnceLock<Vec<String>> = OnceLock::new();
    H.get_or_init(|| CHARGERS.iter().map(|(_, p)| edge_agent::auth::hash_password(p).unwrap()).collect())
}

/// The password of a test charger.
pub fn password(id: &str) -> &'static str {
    CHARGERS.iter().find(|(c, _)| *c == id).map(|(_, p)| *p).unwrap_or("no-such-charger")
}

/// A free TCP port on 127.0.0.1, for a broker the hub binds itself (an edge config needs
/// the port before the hub runs).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A hub on `db_url` with its embedded broker on `mqtt_port` and HTTP on port 0, its config
/// written into `dir`; returns once it subscribed.
pub async fn start_hub(dir: &Path, db_url: &str, mqtt_port: u16) -> cloud_hub::app::Running {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
         [database]\nurl = \"{db_url}\"\nmax_connections = 4\n[ingest]\nworkers = 2\n"
    );
    start_hub_with(dir, &text).await
}

/// A hub with the config `text`, written into `dir`; returns once it subscribed.
pub async fn start_hub_with(dir: &Path, text: &str) -> cloud_hub::app::Running {
    let path = dir.join("cloud-hub.toml");
    std::fs::write(&path, text).unwrap();
    let config = cloud_hub::config::Config::load(&path).map_err(|e| e.to_string()).unwrap();
    let running = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).unwrap();
    assert!(running.wait_ready(Duration::from_secs(15)).await, "the hub subscribes");
    running
}

/// A hub as [`start_hub`] starts it, on a SQLite file in `dir`.
pub async fn start_sqlite_hub(dir: &Path, mqtt_port: u16) -> cloud_hub::app::Running {
    start_hub(dir, &format!("sqlite://{}", dir.join("hub.db").display()), mqtt_port).await
}

/// The tail of an edge config (after [`energy_config_text`]'s chargers) for a site whose
/// grid connection (circuit `grid`, 63 A fuse, 12 A safe current) is measured by a Modbus
/// meter at `meter`, polled every 200 ms and stale after 3 periods, synced to the hub's
/// broker on `mqtt_port` as `username` / `password`, reporting its power every 300 ms.
pub fn grid_meter_site_tail(meter: std::net::SocketAddr, mqtt_port: u16, username: &str, password: &str) -> String {
    format!(
        "[balancer]\ntick_ms = 200\n\n[[circuits]]\nid = \"grid\"\nlimit_a = 63\nsafe_current_a = 12\n\n\
         [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{meter}\"\ncircuit = \"grid\"\n\
         period_ms = 200\ntimeout_ms = 100\nretries = 0\nmax_backoff_ms = 400\nstale_after_periods = 3\n\n\
         [sync]\nbroker = \"mqtt://127.0.0.1:{mqtt_port}\"\nusername = \"{username}\"\npassword = \"{password}\"\n\
         poll_interval_ms = 100\nack_timeout_s = 2\nreconnect_min_ms = 100\nreconnect_max_s = 1\n\
         site_energy_interval_ms = 300\n"
    )
}

/// A config TOML text for tests: ports 0, the database in `dir`, three chargers.
pub fn config_text(dir: &Path, extra_ocpp: &str) -> String {
    let mut text = format!(
        "[site]\nid = \"test-site\"\n\n[ocpp]\nlisten = \"127.0.0.1:0\"\n{timeout}{extra_ocpp}\n\n\
         [store]\npath = \"{}\"\nsynchronous = \"normal\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
         [authorization]\nunknown_id_tags = \"reject\"\n\n\
         [[authorization.tags]]\nid_tag = \"{TAG_OK}\"\nstatus = \"Accepted\"\n\n\
         [[authorization.tags]]\nid_tag = \"{TAG_BLOCKED}\"\nstatus = \"Blocked\"\n",
        dir.join("edge.db").display(),
        timeout = if extra_ocpp.contains("call_timeout_s") { "" } else { "call_timeout_s = 5\n" },
    );
    for (i, (id, _)) in CHARGERS.iter().enumerate() {
        text.push_str(&format!("\n[[chargers]]\nid = \"{id}\"\npassword_hash = \"{}\"\n", hashes()[i]));
    }
    text
}

/// A test config with only the listed test chargers, each with extra `[[chargers]]` lines
/// (e.g. `circuit = "grid"`), followed by `tail` (e.g. `[[circuits]]` and `[[meters]]`).
pub fn energy_config_text(dir: &Path, chargers: &[(&str, &str)], tail: &str) -> String {
    let full = config_text(dir, "");
    let mut text = full.split("\n[[chargers]]").next().unwrap_or_default().to_owned();
    for (id, extra) in chargers {
        let i = CHARGERS.iter().position(|(c, _)| c == id).expect("a test charger");
        text.push_str(&format!("\n[[chargers]]\nid = \"{id}\"\npassword_hash = \"{}\"\n{extra}\n", hashes()[i]));
    }
    text.push('\n');
    text.push_str(tail);
    text
}

/// An agent running in this process.
pub struct TestAgent {
    pub running: edge_agent::app::Running,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl TestAgent {
    /// Starts an agent with the standard test config plus extra `[ocpp]` lines.
    pub async fn start_with(extra_ocpp: &str) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(dir.path(), extra_ocpp);
        let config = Config::parse(Path::new("test.toml"), &text).unwrap();
        let running = edge_agent::app::start(config).await.unwrap();
        TestAgent { running, dir, http: reqwest::Client::new() }
    }

    /// Starts an agent with a config built by `text` from its temporary directory.
    pub async fn start_text(text: impl FnOnce(&Path) -> String) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let text = text(dir.path());
        let config = Config::parse(Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let running = edge_agent::app::start(config).await.unwrap();
        TestAgent { running, dir, http: reqwest::Client::new() }
    }

    pub async fn start() -> TestAgent {
        Self::start_with("").await
    }

    /// Base URL for charge points: append `/{id}`.
    pub fn ocpp_url(&self) -> String {
        self.running.ocpp_url()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.running.api_url())
    }

    /// GET a JSON document; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        http_json(self.http.get(self.api(path))).await
    }

    /// POST a JSON body; returns status and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        http_json(self.http.post(self.api(path)).json(&body)).await
    }

    /// Every frame in the message log, oldest first.
    pub async fn message_log(&self) -> Vec<Value> {
        message_log(&self.http, &self.running.api_url()).await
    }
}

/// Sends a request and decodes the JSON answer (text when it is not JSON).
pub async fn http_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The whole message log of an agent at `api_url`, oldest first.
pub async fn message_log(http: &reqwest::Client, api_url: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{api_url}/api/v1/messages?limit=1000");
        if let Some(b) = before {
            url.push_str(&format!("&before_id={b}"));
        }
        let (status, page) = http_json(http.get(url)).await;
        assert_eq!(status, 200, "{page}");
        let rows = page.as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            break;
        }
        before = rows.last().and_then(|r| r["id"].as_i64());
        all.extend(rows);
    }
    all.reverse();
    all
}

/// The official OCPP 1.6 schemas, compiled once.
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
}

/// Where `../shared/ocpp-schemas/v16` is, if present.
pub fn schema_dir() -> Option<PathBuf> {
    let base = std::env::var_os("OCPP_SCHEMAS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ocpp-schemas"));
    let dir = base.join("v16");
    dir.is_dir().then_some(dir)
}

impl Schemas {
    /// Loads the schemas; `None` (with a printed reason) when the folder is absent and
    /// `SITEPILOT_REQUIRE_SCHEMAS` is not set; a panic when it is.
    pub fn load() -> Option<&'static Schemas> {
        static S: OnceLock<Option<Schemas>> = OnceLock::new();
        S.get_or_init(|| {
            let Some(dir) = schema_dir() else {
                if std::env::var_os("SITEPILOT_REQUIRE_SCHEMAS").is_some_and(|v| !v.is_empty()) {
                    panic!("OCPP schemas not found (set OCPP_SCHEMAS_DIR or place them in ../shared/ocpp-schemas)");
                }
                eprintln!("skipping schema checks: ../shared/ocpp-schemas/v16 is absent");
                return None;
            };
            let mut validators = HashMap::new();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let v = jsonschema::draft4::options().should_validate_formats(true).build(&schema).unwrap();
                validators.insert(name, v);
            }
            Some(Schemas { validators })
        })
        .as_ref()
    }

    /// Checks one payload: a CALL of `action` or (`response`) its CALLRESULT.
    pub fn check(&self, action: &str, response: bool, payload: &Value) -> Result<(), String> {
        let name = if response { format!("{action}Response") } else { action.to_owned() };
        let v = self.validators.get(&name).ok_or_else(|| format!("no schema {name}"))?;
        let errors: Vec<String> = v.iter_errors(payload).map(|e| format!("{e} at {}", e.instance_path())).collect();
        if errors.is_empty() { Ok(()) } else { Err(format!("{name}: {}: {payload}", errors.join("; "))) }
    }
}

/// Validates every CALL and CALLRESULT in a message log against the schemas, both
/// directions. Frames that the test sent invalid on purpose are skipped by the caller
/// through `skip_ids`. Returns how many frames were checked.
pub fn assert_log_schema_valid(log: &[Value], skip_ids: &[&str]) -> usize {
    let Some(schemas) = Schemas::load() else { return 0 };
    let mut checked = 0;
    let mut problems = Vec::new();
    for row in log {
        let id = row["unique_id"].as_str().unwrap_or("");
        if skip_ids.contains(&id) {
            continue;
        }
        let Some(action) = row["action"].as_str() else { continue };
        let Ok(frame) = Frame::from_value(row["payload"].clone()) else { continue };
        let result = match &frame {
            Frame::Call(c) if shared_model::ocpp::v16::is_known_action(&c.action) => {
                schemas.check(&c.action, false, &c.payload)
            }
            Frame::CallResult(r) if shared_model::ocpp::v16::is_known_action(action) => {
                schemas.check(action, true, &r.payload)
            }
            _ => continue,
        };
        checked += 1;
        if let Err(e) = result {
            problems.push(format!("{} {}: {e}", row["direction"], row["charger_id"]));
        }
    }
    assert!(problems.is_empty(), "schema violations:\n{}", problems.join("\n"));
    checked
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a raw OCPP WebSocket; `Err` carries the HTTP status when the upgrade is refused.
pub async fn raw_connect(base_url: &str, id: &str, password: Option<&str>, subprotocols: &[&str]) -> Result<Ws, u16> {
    let mut req = format!("{base_url}/{id}").into_client_request().unwrap();
    if !subprotocols.is_empty() {
        req.headers_mut().insert("Sec-WebSocket-Protocol", subprotocols.join(", ").parse().unwrap());
    }
    if let Some(p) = password {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{p}"));
        req.headers_mut().insert("Authorization", format!("Basic {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed without an HTTP answer: {e}"),
    }
}

/// A raw OCPP client for bad-input tests: sends any text, reads the next text frame.
pub struct RawClient {
    pub ws: Ws,
}

impl RawClient {
    pub async fn connect(agent: &TestAgent, id: &str) -> RawClient {
        let ws = raw_connect(&agent.ocpp_url(), id, Some(password(id)), &["ocpp1.6"]).await.unwrap();
        RawClient { ws }
    }

    /// Sends text and returns the next OCPP frame the agent sends.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<Frame> {
        self.ws.send(Message::text(text.to_owned())).await?;
        self.next_frame().await
    }

    /// The next text frame (pings are skipped).
    pub async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .context("no frame within 10 s")?
                .ok_or_else(|| anyhow!("connection closed"))??;
            if let Message::Text(t) = msg {
                return Frame::parse(t.as_str()).map_err(|e| anyhow!("agent sent an invalid frame: {e}"));
            }
            if let Message::Close(c) = msg {
                return Err(anyhow!("closed: {c:?}"));
            }
        }
    }

    /// Sends a CALL and returns the answer.
    pub async fn call(&mut self, id: &str, action: &str, payload: Value) -> anyhow::Result<Frame> {
        let text = Value::Array(vec![2.into(), id.into(), action.into(), payload]).to_string();
        self.send_text(&text).await
    }
}

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A workspace binary next to the test executable's folder (`target/debug/NAME`), built by
/// `cargo test --workspace`; `env` overrides the path.
pub fn workspace_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A server process started as `BIN run --config FILE`, and the JSON of its
/// `SITEPILOT_READY` line (its addresses).
pub struct Spawned {
    pub child: tokio::process::Child,
    pub ready: Value,
}

impl Spawned {
    /// Starts `bin run --config config` and waits (10 s at most) for its ready line.
    pub async fn run(bin: &Path, config: &Path) -> Spawned {
        use tokio::io::{AsyncBufReadExt, BufReader};
        assert!(bin.exists(), "{} not built: run `cargo test --workspace`", bin.display());
        let mut child = tokio::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(json) = line.strip_prefix("SITEPILOT_READY ") {
                    return serde_json::from_str::<Value>(json).unwrap();
                }
            }
            panic!("{} exited before it was ready", bin.display());
        })
        .await
        .expect("ready within 10 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Spawned { child, ready }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
