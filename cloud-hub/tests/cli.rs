//! The `cloud-hub` binary: `check-config` errors name file, line, key and reason;
//! `site add` provisions a site in a real database and prints what the edge needs;
//! `apikey add` prints a token that opens the fleet API (until `apikey revoke`);
//! `openapi` prints the API's document; `--help` everywhere; `run` starts and says where
//! it listens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn hub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cloud-hub"))
}

fn run(args: &[&str]) -> Output {
    hub().args(args).output().expect("run cloud-hub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write");
    path.display().to_string()
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/cloud-hub.example.toml");
    let out = run(&["check-config", "--config", example]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": ok (HTTP on 0.0.0.0:8080, embedded MQTT broker on 0.0.0.0:1883"), "{stdout}");
}

#[test]
fn check_config_names_file_line_key_and_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "hub.toml",
        "[http]\nlisten = \"0.0.0.0:8080\"\n\n[mqtt]\nurl = \"mqtts://broker:8883\"\nkeep_alive_s = 2\n\
         [database]\nurl = \"mysql://db/hub\"\n",
    );
    let out = run(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{path}:5: key `mqtt.url`: mqtts:// (MQTT over TLS) is not supported yet")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{path}:6: key `mqtt.keep_alive_s`: 2 s: use 5 to 3600")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:8: key `database.url`: unknown database scheme \"mysql\": use \"sqlite://PATH\""
        )),
        "{stderr}"
    );

    let path = write(dir.path(), "typo.toml", "[mqtt]\nembedded = true\nlisten = 1883\n");
    let out = run(&["check-config", "--config", &path]);
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with(&format!("{path}:3: key `mqtt.listen`: ")), "{stderr}");

    let path = write(dir.path(), "unknown.toml", "[database]\nurl = \"sqlite://x.db\"\npool = 3\n");
    let stderr = text(&run(&["check-config", "--config", &path]).stderr);
    assert!(stderr.starts_with(&format!("{path}:3: key `database.pool`: unknown field `pool`")), "{stderr}");

    let out = run(&["check-config", "--config", "/nonexistent/hub.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("/nonexistent/hub.toml: cannot read file"), "{}", text(&out.stderr));
}

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check-config", "--help"],
        vec!["site", "--help"],
        vec!["site", "add", "--help"],
        vec!["site", "list", "--help"],
        vec!["site", "rotate-password", "--help"],
        vec!["mosquitto-files", "--help"],
        vec!["apikey", "--help"],
        vec!["apikey", "add", "--help"],
        vec!["apikey", "list", "--help"],
        vec!["apikey", "revoke", "--help"],
        vec!["openapi", "--help"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage: cloud-hub"), "{args:?}");
    }
}

#[test]
fn site_add_creates_the_site_and_prints_the_edge_config() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write(
        dir.path(),
        "hub.toml",
        "[mqtt]\npublic_url = \"mqtt://hub.example.com:1883\"\n[database]\nurl = \"sqlite://data/hub.db\"\n",
    );
    let out = run(&["site", "add", "Depot North", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    let id = field("id:");
    assert!(id.starts_with("depot-north-"), "{stdout}");
    assert_eq!(field("MQTT username:"), id);
    let password = field("MQTT password:");
    assert_eq!(password.len(), 32);
    // The pasted lines are TOML an edge config takes.
    let snippet = &stdout[stdout.find("[site]").expect("snippet")..];
    let table: toml::Table = toml::from_str(snippet).expect("valid TOML");
    assert_eq!(table["site"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(table["sync"]["broker"].as_str(), Some("mqtt://hub.example.com:1883"));
    assert_eq!(table["sync"]["password"].as_str(), Some(password.as_str()));
    assert!(dir.path().join("data/hub.db").exists(), "the database is created next to the config");

    // The same id again is refused; a chosen id works; list shows both.
    let out = run(&["site", "add", "Again", "--config", &config, "--id", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("a site with id \"{id}\" already exists")), "{}", text(&out.stderr));
    let out = run(&["site", "add", "Chosen", "--config", &config, "--id", "bad id"]);
    assert!(text(&out.stderr).contains("\"bad id\" is not a valid site id"), "{}", text(&out.stderr));
    assert!(run(&["site", "add", "Chosen", "--config", &config, "--id", "chosen-1"]).status.success());
    let list = text(&run(&["site", "list", "--config", &config]).stdout);
    assert!(list.contains(&id) && list.contains("chosen-1"), "{list}");
    assert!(!list.contains(&password), "the password is not stored");
}

#[test]
fn mosquitto_files_hold_the_sites_passwords_and_rotate_password_changes_them() {
    let dir = tempfile::tempdir().expect("dir");
    let config =
        write(dir.path(), "hub.toml", "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[database]\nurl = \"sqlite://hub.db\"\n");
    let out = run(&["site", "add", "Depot", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("`cloud-hub mosquitto-files`"), "external broker: says how the site gets in: {stdout}");
    let value = |stdout: &str, name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    let (id, password) = (value(&stdout, "id:"), value(&stdout, "MQTT password:"));

    let passwd = dir.path().join("passwd").display().to_string();
    let acl = dir.path().join("acl").display().to_string();
    let generate = || run(&["mosquitto-files", "--config", &config, "--passwd", &passwd, "--acl", &acl]);
    let hash_of = |site: &str| {
        let file = std::fs::read_to_string(&passwd).expect("the password file");
        let users: Vec<(&str, &str)> =
            file.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(':')).collect();
        assert_eq!(users.len(), 1, "only the site (the hub has no password here): {file}");
        assert_eq!(users[0].0, site, "{file}");
        users[0].1.to_owned()
    };
    let out = generate();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("the hub's user \"sitepilot-hub\" is not in the password file: [mqtt] password is not set"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("(1 site; mode 0600)"), "{}", text(&out.stdout));
    let hash = hash_of(&id);
    assert!(cloud_hub::mosquitto::verify_password(&password, &hash), "{hash}");
    let acl_text = std::fs::read_to_string(&acl).expect("the ACL file");
    assert!(acl_text.contains("user sitepilot-hub\ntopic read sitepilot/v1/+/up/#\n"), "{acl_text}");
    assert!(acl_text.contains("pattern read sitepilot/v1/%u/down/#"), "{acl_text}");

    // A new password replaces both hashes; the old one no longer verifies.
    let out = run(&["site", "rotate-password", &id, "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_password = value(&text(&out.stdout), "MQTT password:");
    assert_ne!(new_password, password);
    assert!(generate().status.success());
    let hash = hash_of(&id);
    assert!(cloud_hub::mosquitto::verify_password(&new_password, &hash), "{hash}");
    assert!(!cloud_hub::mosquitto::verify_password(&password, &hash), "{hash}");

    let out = run(&["site", "rotate-password", "nobody", "--config", &config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no site with id \"nobody\""), "{}", text(&out.stderr));
    let out = run(&["mosquitto-files", "--config", &config, "--passwd", &passwd, "--acl", &passwd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("must be two files"), "{}", text(&out.stderr));
    let missing = dir.path().join("no/such/dir/passwd").display().to_string();
    let out = run(&["mosquitto-files", "--config", &config, "--passwd", &missing, "--acl", &acl]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("cannot write the password file {missing}")), "{}", text(&out.stderr));
}

#[test]
fn run_starts_and_reports_its_addresses() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write(
        dir.path(),
        "hub.toml",
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://hub.db\"\n",
    );
    let mut child =
        hub().args(["run", "--config", &config]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("read the ready line");
    let json: serde_json::Value =
        serde_json::from_str(line.strip_prefix("SITEPILOT_READY ").expect("ready line")).expect("json");
    assert!(json["http"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{line}");
    assert!(json["mqtt"].as_str().is_some_and(|a| a.starts_with("mqtt://127.0.0.1:")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apikey_add_prints_a_token_that_opens_the_api_until_revoked() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write(
        dir.path(),
        "hub.toml",
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://hub.db\"\n",
    );
    let out = run(&["apikey", "add", "dashboard", "--role", "fleet_manager", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:").map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("a token line in {stdout}"));
    assert!(token.starts_with("spk_") && token.len() == 47, "{token}");
    assert!(stdout.contains("role:  fleet_manager") && stdout.contains("shown only now"), "{stdout}");

    let out = run(&["apikey", "add", "dashboard", "--config", &config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("an API key named \"dashboard\" already exists"), "{}", text(&out.stderr));
    let out = run(&["apikey", "add", "x", "--role", "root", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("\"root\" is not a role: use admin, fleet_manager or viewer"),
        "{}",
        text(&out.stderr)
    );
    assert!(run(&["apikey", "add", "wallboard", "--config", &config]).status.success(), "viewer by default");
    let list = text(&run(&["apikey", "list", "--config", &config]).stdout);
    assert!(list.contains("dashboard") && list.contains("fleet_manager"), "{list}");
    assert!(list.lines().any(|l| l.contains("wallboard") && l.contains("viewer")), "{list}");
    assert!(!list.contains(&token), "the token is not stored");

    // A hub on that database lets the token in, until it is revoked.
    let loaded = cloud_hub::config::Config::load(std::path::Path::new(&config)).expect("config");
    let hub = cloud_hub::app::start(loaded).await.expect("hub starts");
    let url = format!("http://{}/api/v1/sites", hub.http_addr);
    let client = reqwest::Client::new();
    let status = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).bearer_auth(token).send().await.expect("request").status().as_u16() }
    };
    assert_eq!(status(token.clone()).await, 200);
    let out = run(&["apikey", "revoke", "dashboard", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("revoked"));
    assert_eq!(status(token.clone()).await, 401);
    let out = run(&["apikey", "revoke", "nobody", "--config", &config]);
    assert!(text(&out.stderr).contains("no API key with id or name \"nobody\""), "{}", text(&out.stderr));
    hub.shutdown().await;
}

#[test]
fn openapi_prints_the_document() {
    let out = run(&["openapi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc, cloud_hub::fleet::openapi::document(&cloud_hub::fleet::routes()));
    assert_eq!(doc["openapi"], "3.1.0");
}
