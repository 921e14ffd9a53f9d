//! A headless Chromium for end-to-end tests of the web pages, driven over W3C WebDriver.
//!
//! [`Browser::start`] runs `/usr/bin/chromedriver` (Debian package `chromium-driver`) on a
//! free port and opens a session of `/usr/bin/chromium` (package `chromium`); nothing is
//! downloaded at test time. WebDriver is spoken as plain JSON over `reqwest`, which the
//! tests already use: no client crate to keep in step with our tokio and hyper versions,
//! and chromedriver's browser-log endpoint (which the client crates do not cover) is just
//! one more request.
//!
//! Without the two binaries a test is skipped with a message, except when `CI=true`,
//! where it fails, so CI cannot pass by not testing.
//!
//! ```no_run
//! # async fn demo(url: &str) {
//! let Some(mut browser) = tests::browser::Browser::start("demo").await else { return };
//! browser.phone().await.unwrap();
//! browser.open(url).await.unwrap();
//! browser.wait_text("h1", "Sitepilot").await.unwrap();
//! browser.screenshot("loaded").await.unwrap();
//! browser.assert_no_console_errors().await;
//! browser.close().await;
//! # }
//! ```

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where Debian's `chromium` and `chromium-driver` packages put the binaries; the
/// environment variables `CHROMIUM` and `CHROMEDRIVER` override them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the `wait_*` helpers wait by default.
pub const WAIT: Duration = Duration::from_secs(15);

/// The WebDriver key of an element reference (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE` (errors), `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    pub message: String,
}

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    test: String,
    shots: u32,
    log: Vec<LogEntry>,
    _profile: tempfile::TempDir,
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
}

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

/// `target/screenshots/` of the workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("screenshots"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("screenshots"),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session for the test `test` (used in
    /// screenshot names). `None` (after printing why) when the binaries are missing and
    /// `CI` is not `true`; panics when they are missing on CI or do not start.
    pub async fn start(test: &str) -> Option<Browser> {
        let chromium = binary("CHROMIUM", CHROMIUM);
        let driver = binary("CHROMEDRIVER", CHROMEDRIVER);
        let missing: Vec<String> =
            [&chromium, &driver].iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
        if !missing.is_empty() {
            let why = format!(
                "browser test {test}: {} not found; install the Debian packages with \
                 `apt-get install -y chromium chromium-driver`",
                missing.join(" and ")
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why} (CI=true: browser tests must run on CI)");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        match Browser::launch(test, &chromium, &driver).await {
            Ok(b) => Some(b),
            Err(e) => panic!("browser test {test}: starting headless Chromium failed: {e:#}"),
        }
    }

    async fn launch(test: &str, chromium: &Path, driver_bin: &Path) -> anyhow::Result<Browser> {
        let port = free_port()?;
        let mut driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", driver_bin.display()))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let base = format!("http://127.0.0.1:{port}");
        // chromedriver answers /status once it listens.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = driver.try_wait()? {
                bail!("chromedriver exited with {status}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir()?;
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:loggingPrefs": { "browser": "ALL" },
                "goog:chromeOptions": {
                    "binary": chromium.display().to_string(),
                    "args": [
                        "--headless=new",
                        // Tests run as root in containers, where the sandbox cannot start.
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-extensions",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }},
        });
        let resp = http.post(format!("{base}/session")).json(&caps).send().await?;
        let value = answer(resp).await.context("creating the session")?;
        let id = value["sessionId"].as_str().ok_or_else(|| anyhow!("no sessionId in {value}"))?;
        Ok(Browser {
            driver,
            http,
            session: format!("{base}/session/{id}"),
            test: test.to_owned(),
            shots: 0,
            log: Vec::new(),
            _profile: profile,
        })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self.http.post(format!("{}{path}", self.session)).json(&body).send().await?;
        answer(resp).await.with_context(|| format!("POST {path}"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.session)).send().await?;
        answer(resp).await.with_context(|| format!("GET {path}"))
    }

    /// A phone's viewport: 375 x 812 CSS pixels, touch, device scale 2 (an iPhone X-class
    /// phone), emulated through the DevTools protocol so the page sees exactly that width.
    pub async fn phone(&mut self) -> anyhow::Result<()> {
        self.set_window(375, 812).await?;
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await?;
        self.cdp("Emulation.setTouchEmulationEnabled", json!({ "enabled": true })).await?;
        Ok(())
    }

    /// A laptop's window (1280 x 900), without phone emulation.
    pub async fn desktop(&mut self) -> anyhow::Result<()> {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await?;
        self.cdp("Emulation.setTouchEmulationEnabled", json!({ "enabled": false })).await?;
        self.set_window(1280, 900).await
    }

    /// Sets the window's outer size.
    pub async fn set_window(&mut self, width: u32, height: u32) -> anyhow::Result<()> {
        self.post("/window/rect", json!({ "width": width, "height": height })).await.map(drop)
    }

    /// Runs a DevTools protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params })).await
    }

    /// Navigates and waits for the page to load.
    pub async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, selector: &str) -> anyhow::Result<Option<Element>> {
        let resp = self
            .http
            .post(format!("{}/element", self.session))
            .json(&json!({ "using": "css selector", "value": selector }))
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if body["value"]["error"] == "no such element" {
                return Ok(None);
            }
            bail!("finding {selector}: {body}");
        }
        let value = answer(resp).await.with_context(|| format!("finding {selector}"))?;
        let id = value[ELEMENT_KEY].as_str().ok_or_else(|| anyhow!("no element reference in {value}"))?;
        Ok(Some(Element { id: id.to_owned() }))
    }

    /// Waits up to [`WAIT`] for an element matching `selector`.
    pub async fn wait_for(&self, selector: &str) -> anyhow::Result<Element> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(selector).await? {
                return Ok(e);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no element {selector} within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to [`WAIT`] for an element matching `selector` whose text contains
    /// `text`; returns that text. Elements replaced by a live update are looked up again.
    pub async fn wait_text(&self, selector: &str, text: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // Read in the page, so a re-render between find and read cannot fail the read.
            let found = self
                .execute(
                    "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join('\\n');",
                    json!([selector]),
                )
                .await?;
            let last = found.as_str().unwrap_or_default().to_owned();
            if last.contains(text) {
                return Ok(last);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no {text:?} in {selector} within {WAIT:?}; it reads {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to [`WAIT`] until `script` (a function body) returns `true`.
    pub async fn wait_until(&self, what: &str, script: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.execute(script, json!([])).await? == Value::Bool(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not within {WAIT:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to [`WAIT`] until `script` (a function body, `arguments` are `args`) returns
    /// exactly `expected`. Where [`wait_until`](Self::wait_until) can only say "not yet",
    /// the error shows what the page gave last, which is what tells a wrong value from a
    /// late one.
    pub async fn wait_value(&self, what: &str, script: &str, args: Value, expected: &Value) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = self.execute(script, args.clone()).await?;
            if &last == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not within {WAIT:?}: {what}; expected {expected}, the page gives {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `selector` (waiting for it to appear). A live
    /// update may replace the element between finding and clicking it: then it is found
    /// again, a few times.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let mut attempts = 0;
        loop {
            let e = self.wait_for(selector).await?;
            match self.post(&format!("/element/{}/click", e.id), json!({})).await {
                Err(err) if attempts < 5 && format!("{err:#}").contains("stale element reference") => attempts += 1,
                other => return other.map(drop),
            }
        }
    }

    /// Replaces the text of the input matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let e = self.wait_for(selector).await?;
        self.post(&format!("/element/{}/clear", e.id), json!({})).await?;
        self.post(&format!("/element/{}/value", e.id), json!({ "text": text })).await.map(drop)
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// Saves a PNG of the viewport as `target/screenshots/<test>-<NN>-<step>.png`.
    pub async fn screenshot(&mut self, step: &str) -> anyhow::Result<PathBuf> {
        let value = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().ok_or_else(|| anyhow!("no screenshot data"))?)
            .context("decoding the screenshot")?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.shots += 1;
        let path = dir.join(format!("{}-{:02}-{step}.png", self.test, self.shots));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The console log so far (chromedriver hands out each entry once; they are kept here).
    pub async fn console(&mut self) -> anyhow::Result<&[LogEntry]> {
        let value = self.post("/se/log", json!({ "type": "browser" })).await?;
        for e in value.as_array().into_iter().flatten() {
            self.log.push(LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(&self.log)
    }

    /// Panics with the entries when the console has any error.
    pub async fn assert_no_console_errors(&mut self) {
        let log = self.console().await.unwrap_or_else(|e| panic!("reading the console log: {e:#}"));
        let errors: Vec<&LogEntry> = log.iter().filter(|e| e.level == "SEVERE").collect();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

/// The `value` of a WebDriver answer, or its error.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let mut body: Value = resp.json().await.context("a WebDriver answer that is not JSON")?;
    let value = body["value"].take();
    if !status.is_success() {
        bail!("WebDriver {status}: {} ({})", value["error"], value["message"]);
    }
    Ok(value)
}
