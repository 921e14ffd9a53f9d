//! The installer page over real sockets: a real agent on port 0, a charger played over a
//! real OCPP WebSocket, a meter address that refuses connections. Checks the checklist
//! against what really happened, the escaping of what a charger or the config says, the
//! live event stream, and the endpoints the page's command buttons call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_agent::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);
const EVIL_NAME: &str = "<script>alert('name')</script>";
/// At most 20 characters (CiString20Type).
const EVIL_VENDOR: &str = "<i>\"v'&</i>";

struct Agent {
    running: edge_agent::app::Running,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// CP-1 (which the tests connect) and CP-2 (which never connects), and one meter
    /// on an address nothing listens on.
    async fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        // A port that was free a moment ago: connections to it are refused.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let text = format!(
            "[site]\nid = \"page-test\"\nname = \"Depot & Yard\"\n\n\
             [ocpp]\nlisten = \"127.0.0.1:0\"\nsecurity_profile = 0\ncall_timeout_s = 5\n\n\
             [store]\npath = \"{}\"\nsynchronous = \"normal\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
             [[authorization.tags]]\nid_tag = \"TAG-OK\"\nstatus = \"Accepted\"\n\n\
             [[chargers]]\nid = \"CP-1\"\nname = \"{}\"\ncircuit = \"grid\"\n\n\
             [[chargers]]\nid = \"CP-2\"\ncircuit = \"grid\"\n\n\
             [[circuits]]\nid = \"grid\"\nlimit_a = 32\nsafe_current_a = 6\n\n\
             [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{dead}\"\ncircuit = \"grid\"\n\
             period_ms = 200\ntimeout_ms = 200\n",
            dir.path().join("edge.db").display(),
            EVIL_NAME.replace('"', "\\\""),
        );
        let config = Config::parse(Path::new("page-test.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let running = edge_agent::app::start(config).await.unwrap();
        Agent { running, http: reqwest::Client::new(), _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.api_url())
    }

    async fn page(&self) -> String {
        let resp = self.http.get(self.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    async fn command(&self, charger: &str, command: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(&format!("/api/v1/chargers/{charger}/commands/{command}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the page's checklist item `key` has `state`; returns the page.
    async fn wait_check(&self, key: &str, state: &str) -> String {
        let needle = format!("data-check=\"{key}\" data-state=\"{state}\"");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let page = self.page().await;
            if page.contains(&needle) {
                return page;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {needle} in\n{page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The state of checklist item `key` on a page.
fn check_state(page: &str, key: &str) -> Option<String> {
    let needle = format!("data-check=\"{key}\" data-state=\"");
    let at = page.find(&needle)? + needle.len();
    Some(page[at..].split('"').next()?.to_owned())
}

struct Call {
    action: String,
    payload: Value,
    reply: oneshot::Sender<Value>,
}

/// A charger played over a real WebSocket: sends CALLs and answers the agent's CALLs as
/// a charger that accepts everything would, recording them.
struct Charger {
    calls: mpsc::UnboundedSender<Call>,
    received: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Charger {
    async fn connect(agent: &Agent, id: &str) -> Charger {
        let mut request = format!("{}/{id}", agent.running.ocpp_url()).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "ocpp1.6".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let (calls, mut rx) = mpsc::unbounded_channel::<Call>();
        let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen = received.clone();
        let task = tokio::spawn(async move {
            let mut waiting: HashMap<String, oneshot::Sender<Value>> = HashMap::new();
            let mut next_id = 0u32;
            loop {
                tokio::select! {
                    call = rx.recv() => {
                        let Some(call) = call else { break };
                        next_id += 1;
                        let id = format!("cp-{next_id}");
                        waiting.insert(id.clone(), call.reply);
                        let frame = json!([2, id, call.action, call.payload]);
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            break;
                        }
                    }
                    msg = ws.next() => {
                        let Some(Ok(msg)) = msg else { break };
                        let Message::Text(text) = msg else { continue };
                        let frame: Value = serde_json::from_str(&text).unwrap();
                        match frame[0].as_u64() {
                            Some(2) => {
                                let action = frame[2].as_str().unwrap().to_owned();
                                seen.lock().unwrap().push((action.clone(), frame[3].clone()));
                                let status = if action == "UnlockConnector" { "Unlocked" } else { "Accepted" };
                                let answer = json!([3, frame[1], { "status": status }]);
                                if ws.send(Message::text(answer.to_string())).await.is_err() {
                                    break;
                                }
                            }
                            Some(3) | Some(4) => {
                                if let Some(reply) = waiting.remove(frame[1].as_str().unwrap_or_default()) {
                                    let _ = reply.send(frame);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Charger { calls, received, task }
    }

    async fn call(&self, action: &str, payload: Value) -> Value {
        let (reply, rx) = oneshot::channel();
        self.calls.send(Call { action: action.to_owned(), payload, reply }).unwrap();
        let frame = tokio::time::timeout(WAIT, rx).await.expect("an answer in time").unwrap();
        assert_eq!(frame[0], 3, "{action} was answered with {frame}");
        frame[2].clone()
    }

    async fn boot(&self) {
        let answer =
            self.call("BootNotification", json!({ "chargePointVendor": EVIL_VENDOR, "chargePointModel": "M-1" })).await;
        assert_eq!(answer["status"], "Accepted");
    }

    async fn status(&self, connector: u32, status: &str, info: Option<&str>) {
        let mut payload = json!({ "connectorId": connector, "errorCode": "NoError", "status": status });
        if let Some(i) = info {
            payload["info"] = json!(i);
        }
        self.call("StatusNotification", payload).await;
    }

    fn received(&self, action: &str) -> Vec<Value> {
        self.received.lock().unwrap().iter().filter(|(a, _)| a == action).map(|(_, p)| p.clone()).collect()
    }

    fn close(self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn the_page_is_html_and_its_checklist_follows_what_happens() {
    let agent = Agent::start().await;
    let resp = agent.http.get(agent.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    for section in ["checklist", "meters", "balancer", "chargers", "messages"] {
        assert!(page.contains(&format!("data-section=\"{section}\"")), "section {section} missing");
    }
    // Nothing seen yet: both chargers wait, the meter is not fine, the limits are there.
    assert_eq!(check_state(&page, "charger:CP-1").as_deref(), Some("pending"));
    assert_eq!(check_state(&page, "charger:CP-2").as_deref(), Some("pending"));
    let meter = check_state(&page, "meter:grid-meter").unwrap();
    assert!(meter == "pending" || meter == "fail", "meter: {meter}");
    assert_eq!(check_state(&page, "limits").as_deref(), Some("pass"));
    assert_eq!(check_state(&page, "cloud").as_deref(), Some("off"));
    assert_eq!(check_state(&page, "config").as_deref(), Some("pass"));
    assert!(page.contains("security_profile = 0"), "the config notice is shown");
    // The meter's address refuses connections: it fails, and says why.
    let page = agent.wait_check("meter:grid-meter", "fail").await;
    assert!(page.contains("stale: "), "{page}");

    let cp = Charger::connect(&agent, "CP-1").await;
    cp.boot().await;
    cp.status(1, "Available", None).await;
    let page = agent.wait_check("charger:CP-1", "pass").await;
    assert_eq!(check_state(&page, "charger:CP-2").as_deref(), Some("pending"), "CP-2 never connected");
    assert!(page.contains("data-charger=\"CP-1\" data-connected=\"true\""));
    assert!(page.contains("data-status=\"Available\""));
    assert!(page.contains("BootNotification"), "the message log shows the boot");

    // Gone again: the item fails and says when it was last seen.
    cp.close();
    let page = agent.wait_check("charger:CP-1", "fail").await;
    assert!(page.contains("not connected; last seen"));

    // The assets: script and style from the binary, cacheable.
    for (path, kind) in [("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css"), ("/ui/icon.svg", "image/svg")]
    {
        let resp = agent.http.get(agent.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert!(resp.headers()["cache-control"].to_str().unwrap().contains("max-age"), "{path}");
        assert!(!resp.text().await.unwrap().is_empty());
    }
    agent.running.shutdown().await;
}

#[tokio::test]
async fn what_chargers_and_the_config_say_is_escaped() {
    let agent = Agent::start().await;
    let cp = Charger::connect(&agent, "CP-1").await;
    cp.boot().await;
    cp.status(1, "Available", Some("<img src=x onerror=alert(1)>")).await;
    let page = agent.wait_check("charger:CP-1", "pass").await;
    // Shown, as text.
    assert!(page.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"), "the config name, escaped");
    assert!(page.contains("&lt;i&gt;&quot;v&#39;&amp;&lt;/i&gt;"), "the vendor, escaped");
    assert!(page.contains("Depot &amp; Yard"), "the site name, escaped");
    // Never as markup: the only script element is the page's own.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(!page.contains("<img") && !page.contains("<i>"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"), "the status info, escaped");
    assert!(!page.contains(EVIL_NAME) && !page.contains(EVIL_VENDOR));

    // A charger identity with markup in it never gets in (and so never onto the page).
    let mut request = format!("{}/%3Cscript%3E", agent.running.ocpp_url()).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "ocpp1.6".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err(), "the upgrade is refused");
    let page = agent.page().await;
    assert!(!page.contains("<script>") && !page.contains("%3Cscript"));

    // The event stream carries the same escaped HTML inside its JSON.
    let mut events = Events::open(&agent).await;
    let first = events.next().await;
    let chargers = first["sections"]["chargers"].as_str().unwrap();
    assert!(chargers.contains("&lt;i&gt;&quot;v&#39;&amp;&lt;/i&gt;"), "{chargers}");
    assert!(!chargers.contains("<script") && !chargers.contains("<img") && !chargers.contains("<i>"), "{chargers}");
    cp.close();
    agent.running.shutdown().await;
}

/// A reader of `/ui/events`.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(agent: &Agent) -> Events {
        let resp = agent.http.get(agent.url("/ui/events")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Events { resp, buf: String::new() }
    }

    /// The next `snapshot` event's JSON.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = Some(n.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if name.as_deref() == Some("snapshot") {
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk()).await.expect("an event in time").unwrap();
            let chunk = chunk.expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Waits for an event whose `section` contains `needle`; returns that event.
    async fn until(&mut self, section: &str, needle: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no {needle:?} in section {section}");
            let event = self.next().await;
            if event["sections"][section].as_str().is_some_and(|h| h.contains(needle)) {
                return event;
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_pushes_a_status_change() {
    let agent = Agent::start().await;
    let cp = Charger::connect(&agent, "CP-1").await;
    cp.boot().await;
    cp.status(1, "Available", None).await;
    let mut events = Events::open(&agent).await;
    // First: every section.
    let first = events.next().await;
    for section in ["checklist", "meters", "balancer", "chargers", "messages"] {
        assert!(first["sections"][section].is_string(), "{section} missing from the first event");
    }
    let chargers = first["sections"]["chargers"].as_str().unwrap();
    assert!(chargers.contains("data-status=\"Available\""), "{chargers}");

    cp.status(1, "Preparing", None).await;
    let event = events.until("chargers", "data-status=\"Preparing\"").await;
    let chargers = event["sections"]["chargers"].as_str().unwrap();
    assert!(!chargers.contains("data-status=\"Available\""), "{chargers}");
    // The message log follows in the same update (both are one store transaction).
    let messages = event["sections"]["messages"].as_str().unwrap_or_default();
    assert!(messages.contains("StatusNotification") && messages.contains("Preparing"), "{event}");
    // Only what changed is sent: the meters section did not.
    assert!(event["sections"].get("meters").is_none() || event["sections"]["meters"] != first["sections"]["meters"]);
    cp.close();
    agent.running.shutdown().await;
    // The stream ends with the agent instead of holding its shutdown up.
    let end = async {
        while let Some(chunk) = events.resp.chunk().await.unwrap() {
            assert!(!chunk.is_empty());
        }
    };
    tokio::time::timeout(WAIT, end).await.expect("the event stream ends on shutdown");
}

#[tokio::test]
async fn the_command_buttons_endpoints_reach_the_charger() {
    let agent = Agent::start().await;
    let cp = Charger::connect(&agent, "CP-1").await;
    cp.boot().await;
    cp.status(1, "Available", None).await;
    let page = agent.wait_check("charger:CP-1", "pass").await;
    for cmd in ["remote-start", "remote-stop", "unlock", "availability", "trigger-message", "reset"] {
        assert!(page.contains(&format!("data-cmd=\"{cmd}\" data-charger=\"CP-1\"")), "no {cmd} button");
    }

    // The bodies app.js sends for each button.
    let sent = [
        ("remote-start", json!({ "idTag": "TAG-OK", "connectorId": 1 }), "Accepted"),
        ("unlock", json!({ "connectorId": 1 }), "Unlocked"),
        ("availability", json!({ "connectorId": 1, "type": "Inoperative" }), "Accepted"),
        ("trigger-message", json!({ "requestedMessage": "StatusNotification", "connectorId": 1 }), "Accepted"),
        ("reset", json!({ "type": "Soft" }), "Accepted"),
    ];
    for (cmd, body, status) in sent {
        let (code, answer) = agent.command("CP-1", cmd, body).await;
        assert_eq!(code, 200, "{cmd}: {answer}");
        assert_eq!(answer["status"], status, "{cmd}: {answer}");
    }
    assert_eq!(cp.received("RemoteStartTransaction"), vec![json!({ "idTag": "TAG-OK", "connectorId": 1 })]);
    assert_eq!(cp.received("UnlockConnector"), vec![json!({ "connectorId": 1 })]);
    assert_eq!(cp.received("ChangeAvailability"), vec![json!({ "connectorId": 1, "type": "Inoperative" })]);
    assert_eq!(cp.received("Reset"), vec![json!({ "type": "Soft" })]);

    // A session: the page shows it with a stop button carrying its transaction id.
    let start = cp
        .call(
            "StartTransaction",
            json!({ "connectorId": 1, "idTag": "TAG-OK", "meterStart": 1000, "timestamp": chrono::Utc::now() }),
        )
        .await;
    let tx = start["transactionId"].as_i64().unwrap();
    cp.status(1, "Charging", None).await;
    let page = agent.page().await;
    assert!(page.contains(&format!("data-transaction=\"{tx}\"")), "{page}");
    assert!(page.contains(&format!("data-tx=\"{tx}\"")), "{page}");
    let (code, answer) = agent.command("CP-1", "remote-stop", json!({ "transactionId": tx })).await;
    assert_eq!((code, answer["status"].as_str()), (200, Some("Accepted")), "{answer}");
    assert_eq!(cp.received("RemoteStopTransaction"), vec![json!({ "transactionId": tx })]);

    // What the page shows when a button fails: problem JSON with a reason.
    let (code, answer) = agent.command("CP-2", "reset", json!({ "type": "Soft" })).await;
    assert_eq!(code, 409, "CP-2 is not connected: {answer}");
    assert!(answer["detail"].as_str().is_some_and(|d| !d.is_empty()), "{answer}");
    let (code, answer) = agent.command("CP-1", "remote-start", json!({ "connectorId": 1 })).await;
    assert_eq!(code, 422, "no idTag: {answer}");
    cp.close();
    agent.running.shutdown().await;
}
