//! What `cloud-hub mosquitto-files` writes is enforced by a real Mosquitto 2.x
//! (`/usr/sbin/mosquitto`, started by the test on a free port with only those files):
//! sites log in with the passwords `site add` printed, the hub's user reads every site's
//! up/ topics and writes their down/ topics, a site can neither publish on another
//! site's up/ topics nor read another site's down/ topics, a wrong password is refused,
//! the hub itself runs against it (shared subscriptions), and a site added before the
//! hub kept Mosquitto hashes gets in after `site rotate-password`, a new file and SIGHUP.
//!
//! Mosquitto drops a denied PUBLISH without telling anyone, so "not received" is shown
//! with a marker: the forbidden message is sent first, an allowed one after it on the same
//! connection, and the next message to arrive must be the marker (the broker keeps the
//! order of one publisher's messages to one subscriber).
//!
//! Without the binary the test says why and passes, except with `CI=true`.

mod common;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

use common::TIMEOUT;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Started as root, Mosquitto drops to the user `mosquitto` before it reads the files,
/// which cannot then read this test's private temporary directory and 0600 password
/// file; `user root` keeps it as it is (the line is ignored when not started as root).
const USER_LINE: &str = "user root\n";
const HUB_USER: &str = "sitepilot-hub";

fn hub_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloud-hub")).args(args).output().expect("run cloud-hub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port nobody listens on now (bound to port 0, then released for Mosquitto).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("address").port()
}

/// A Mosquitto process of this test; killed when dropped.
struct Mosquitto {
    child: Child,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto on `port` with only the generated files and no anonymous access,
    /// and waits until it accepts connections.
    async fn start(dir: &Path, port: u16, passwd: &Path, acl: &Path) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
                 persistence false\nlog_dest stderr\nlog_type all\n{USER_LINE}",
                passwd.display(),
                acl.display()
            ),
        )
        .expect("write mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .expect("start mosquitto");
        let mut mosquitto = Mosquitto { child, log };
        let ready = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Ok(Some(status)) = mosquitto.child.try_wait() {
                    return Err(status);
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => mosquitto,
            Ok(Err(status)) => panic!("mosquitto exited ({status}):\n{}", mosquitto.log_text()),
            Err(_) => panic!("mosquitto does not listen on {port}:\n{}", mosquitto.log_text()),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGHUP: Mosquitto reads its password and ACL files again.
    fn reload(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("run kill -HUP");
        assert!(status.success(), "kill -HUP mosquitto");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain MQTT 3.1.1 client: what arrives goes into channels.
struct Client {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Bytes)>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects as `user`; the broker's refusal as an error.
    async fn connect(port: u16, user: &str, password: &str) -> Result<Client, ConnectionError> {
        let mut options = MqttOptions::new(format!("test-{user}-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", port);
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(10));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let connected = tokio::time::timeout(TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("mosquitto answers the CONNECT");
        connected?;
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (subacks_tx, subacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = messages_tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                        let _ = subacks_tx.send(ack.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Client { client, messages, subacks, task })
    }

    /// Subscribes and waits for the SUBACK; its return code.
    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.expect("queue a subscribe");
        let codes = tokio::time::timeout(TIMEOUT, self.subacks.recv()).await.expect("a SUBACK").expect("connected");
        codes[0]
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.expect("queue");
    }

    /// The next message; fails the test after [`TIMEOUT`].
    async fn next(&mut self) -> (String, String) {
        let (topic, payload) = tokio::time::timeout(TIMEOUT, self.messages.recv())
            .await
            .expect("a message within the timeout")
            .expect("connected");
        (topic, text(&payload))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn up(site: &str, what: &str) -> String {
    format!("sitepilot/v1/{site}/up/{what}")
}

fn down(site: &str, what: &str) -> String {
    format!("sitepilot/v1/{site}/down/{what}")
}

#[track_caller]
fn assert_refused(result: Result<Client, ConnectionError>, who: &str) {
    match result {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        Err(e) => panic!("{who}: expected CONNACK 5 (not authorized), got {e}"),
        Ok(_) => panic!("{who}: logged in"),
    }
}

/// The value after `name` on a line of `site add` / `site rotate-password` output.
fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{name} in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_the_generated_password_and_acl_files() {
    common::init_logs();
    if !Path::new(MOSQUITTO).exists() {
        common::skip(&format!("{MOSQUITTO} is not installed (Debian package mosquitto)"));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let hub_password = format!("hub-{}", uuid::Uuid::new_v4().simple());
    let config_path = dir.path().join("cloud-hub.toml");
    std::fs::write(
        &config_path,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nusername = \"{HUB_USER}\"\n\
             password = \"{hub_password}\"\nshare_group = \"hubtest-{}\"\n[database]\nurl = \"sqlite://hub.db\"\n\
             max_connections = 2\n",
            uuid::Uuid::new_v4().simple()
        ),
    )
    .expect("write the config");
    let config_arg = config_path.display().to_string();
    let config = cloud_hub::config::Config::load(&config_path).map_err(|e| e.to_string()).expect("valid config");

    // Two sites from `site add`'s library function, and one as a hub before schema 3
    // left it: an argon2id hash only.
    let store = cloud_hub::db::Store::connect(&config.db, 1).await.expect("database");
    let a = cloud_hub::sites::add_site(&store, "Site A", None, HUB_USER).await.expect("site A");
    let b = cloud_hub::sites::add_site(&store, "Site B", None, HUB_USER).await.expect("site B");
    let old_hash = cloud_hub::sites::hash_password("forgotten").expect("hash");
    store
        .exec(
            "INSERT INTO sites (id, name, mqtt_password_hash, created_at) VALUES ($1, $2, $3, $4)",
            &["old-site".into(), "Old".into(), old_hash.into(), chrono::Utc::now().into()],
        )
        .await
        .expect("a site without a Mosquitto hash");
    store.close().await;

    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    let (passwd_arg, acl_arg) = (passwd.display().to_string(), acl.display().to_string());
    let files = ["mosquitto-files", "--config", &config_arg, "--passwd", &passwd_arg, "--acl", &acl_arg];
    let out = hub_cli(&files);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains(&format!("wrote {passwd_arg} (2 sites and the hub's user \"{HUB_USER}\"")), "{stdout}");
    for line in ["allow_anonymous false", &format!("password_file {passwd_arg}"), &format!("acl_file {acl_arg}")] {
        assert!(stdout.lines().any(|l| l.trim() == line), "{line:?} in {stdout}");
    }
    assert!(stdout.contains("SIGHUP"), "{stdout}");
    assert!(
        stderr.contains("site \"old-site\" is not in the password file")
            && stderr.contains(&format!("`cloud-hub site rotate-password old-site --config {config_arg}`")),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&passwd).expect("passwd").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the password file is for its owner only");
    }

    let mosquitto = Mosquitto::start(dir.path(), port, &passwd, &acl).await;

    // Logins: wrong passwords and the site without a hash are refused.
    assert_refused(Client::connect(port, &a.site_id, "not-the-password").await, "site A, wrong password");
    assert_refused(Client::connect(port, HUB_USER, &a.mqtt_password).await, "the hub with A's password");
    assert_refused(Client::connect(port, "old-site", "forgotten").await, "a site without a Mosquitto hash");

    let mut hub = Client::connect(port, HUB_USER, &hub_password).await.expect("the hub logs in");
    let mut site_a = Client::connect(port, &a.site_id, &a.mqtt_password).await.expect("site A logs in");
    let mut site_b = Client::connect(port, &b.site_id, &b.mqtt_password).await.expect("site B logs in");
    assert_eq!(hub.subscribe("sitepilot/v1/+/up/#").await, SubscribeReasonCode::Success(QoS::AtLeastOnce));

    // A site's own up/ topics reach the hub.
    site_a.publish(&up(&a.site_id, "events"), "from A").await;
    assert_eq!(hub.next().await, (up(&a.site_id, "events"), "from A".to_owned()));

    // Not another site's: the forged batch is dropped, the marker after it arrives first.
    site_a.publish(&up(&b.site_id, "events"), "forged by A").await;
    site_a.publish(&up(&b.site_id, "status"), "forged by A").await;
    site_a.publish(&up(&a.site_id, "hello"), "marker 1").await;
    assert_eq!(hub.next().await, (up(&a.site_id, "hello"), "marker 1".to_owned()));
    // B's own publish still gets through.
    site_b.publish(&up(&b.site_id, "results"), "from B").await;
    assert_eq!(hub.next().await, (up(&b.site_id, "results"), "from B".to_owned()));

    // Down: A may read its own down/ topics only; B gets what the hub sends it.
    assert_eq!(site_a.subscribe(&down(&a.site_id, "#")).await, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert_eq!(site_b.subscribe(&down(&b.site_id, "#")).await, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    // Mosquitto 2.0 may grant these SUBSCRIBEs (their SUBACK code is not asserted): it
    // checks the read rule again for each message it would deliver.
    site_a.subscribe(&down(&b.site_id, "#")).await;
    site_a.subscribe("sitepilot/v1/+/down/#").await;
    hub.publish(&down(&b.site_id, "commands"), "for B only").await;
    hub.publish(&down(&a.site_id, "acks"), "marker 2").await;
    assert_eq!(site_b.next().await, (down(&b.site_id, "commands"), "for B only".to_owned()));
    assert_eq!(site_a.next().await, (down(&a.site_id, "acks"), "marker 2".to_owned()));
    // And a site cannot write down/ topics (a forged ack or command for B).
    site_a.publish(&down(&b.site_id, "commands"), "forged command").await;
    site_a.publish(&down(&a.site_id, "acks"), "forged ack").await;
    hub.publish(&down(&b.site_id, "acks"), "marker 3").await;
    assert_eq!(site_b.next().await, (down(&b.site_id, "acks"), "marker 3".to_owned()));
    drop((site_a, site_b));

    // The hub itself: its shared subscriptions are accepted (it is ready only once every
    // SUBACK succeeded), and an edge's hello is answered with an ack.
    let running = cloud_hub::app::start(config.clone()).await.expect("the hub starts");
    assert!(running.wait_ready(TIMEOUT).await, "the hub subscribes on Mosquitto:\n{}", mosquitto.log_text());
    let mut edge =
        common::Edge::connect("127.0.0.1", port, &a.site_id, Some((a.site_id.clone(), a.mqtt_password.clone()))).await;
    edge.send_hello(None, None).await;
    assert_eq!(edge.next_ack().await.applied_through, 0);
    drop(edge);
    running.shutdown().await;

    // The old site: a new password, the files again, SIGHUP, and it logs in.
    let out = hub_cli(&["site", "rotate-password", "old-site", "--config", &config_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(field(&stdout, "MQTT username:"), "old-site");
    let new_password = field(&stdout, "MQTT password:");
    assert!(stdout.contains(&format!("password = \"{new_password}\"")), "the edge snippet: {stdout}");
    let out = hub_cli(&files);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(3 sites and the hub's user"), "{}", text(&out.stdout));
    assert!(!text(&out.stderr).contains("old-site"), "{}", text(&out.stderr));
    mosquitto.reload();
    let logged_in = tokio::time::timeout(TIMEOUT, async {
        loop {
            match Client::connect(port, "old-site", &new_password).await {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    let old_site = logged_in.unwrap_or_else(|_| panic!("old-site logs in after SIGHUP:\n{}", mosquitto.log_text()));
    // With the same rights as the others, and A's unchanged password still works.
    let mut hub = Client::connect(port, HUB_USER, &hub_password).await.expect("the hub logs in again");
    assert_eq!(hub.subscribe("sitepilot/v1/+/up/#").await, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    old_site.publish(&up(&a.site_id, "events"), "forged by old-site").await;
    old_site.publish(&up("old-site", "events"), "marker 4").await;
    assert_eq!(hub.next().await, (up("old-site", "events"), "marker 4".to_owned()));
    assert!(Client::connect(port, &a.site_id, &a.mqtt_password).await.is_ok(), "A's password survives");
    assert_refused(Client::connect(port, "old-site", "forgotten").await, "old-site, the old password");
}
