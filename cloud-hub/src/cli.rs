//! The command line: `cloud-hub run | check-config | site add | site list | site
//! rotate-password | mosquitto-files | apikey add | apikey list | apikey revoke | openapi`.

use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{BrokerPlan, Config};

#[derive(Parser)]
#[command(
    name = "cloud-hub",
    version,
    about = "Sitepilot cloud hub: collects every site over MQTT into SQLite or PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (embedded or external MQTT broker, ingest, /health, /metrics and the fleet API).
    Run {
        /// The TOML config file (see configs/cloud-hub.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and report every problem with its file, line and key.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Provision and list sites.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Write Mosquitto's password file and ACL file for the sites (for an external
    /// Mosquitto 2.x broker instead of the embedded one).
    MosquittoFiles {
        /// The TOML config file (for the database and the hub's [mqtt] username and password).
        #[arg(long, short)]
        config: PathBuf,
        /// Where to write the password file (mosquitto.conf `password_file`; mode 0600).
        #[arg(long)]
        passwd: PathBuf,
        /// Where to write the ACL file (mosquitto.conf `acl_file`).
        #[arg(long)]
        acl: PathBuf,
    },
    /// Manage the API keys of the fleet REST API (/api/v1).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage the dashboard's users (log-in at `/`).
    User {
        #[command(subcommand)]
        command: crate::dashboard::cli::UserCommand,
    },
    /// Print the fleet API's OpenAPI 3.1 document (the same as GET /api/v1/openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create an API key: prints its bearer token once (only a SHA-256 of it is stored).
    Add {
        /// A unique name saying who or what uses it, e.g. "dashboard" or "alice".
        name: String,
        /// viewer: read everything; fleet_manager: and send commands; admin: and list keys.
        #[arg(long, default_value = "viewer", value_parser = parse_role)]
        role: crate::auth::Role,
        /// The TOML config file (for the database).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the API keys (never their tokens).
    List {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke an API key by its id or name (it stops working at once).
    Revoke {
        /// The key's id or name.
        key: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<crate::auth::Role, String> {
    s.parse()
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Create a site: prints its id, its MQTT user name and password (shown once; only a
    /// hash is stored) and the lines to paste into the site's edge-agent config.
    Add {
        /// A human-readable name, e.g. "Depot North".
        name: String,
        /// The TOML config file (for the database and the broker address).
        #[arg(long, short)]
        config: PathBuf,
        /// The site id (1-64 letters, digits, '-', '_'); default: made from the name.
        #[arg(long)]
        id: Option<String>,
    },
    /// List the sites and how far their events are applied.
    List {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Give a site a new MQTT password (the old one stops working at its next login):
    /// prints it once, like `site add`.
    RotatePassword {
        /// The site's id.
        site_id: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({})", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => run(&config),
        Command::Site { command: SiteCommand::Add { name, config, id } } => {
            with_config(&config, |c| async move { site_add(c, &name, id.as_deref()).await })
        }
        Command::Site { command: SiteCommand::List { config } } => with_config(&config, site_list),
        Command::Site { command: SiteCommand::RotatePassword { site_id, config } } => {
            with_config(&config, |c| async move { site_rotate_password(c, &site_id).await })
        }
        Command::MosquittoFiles { config, passwd, acl } => {
            let path = config.clone();
            with_config(&config, |c| async move { mosquitto_files(c, &path, &passwd, &acl).await })
        }
        Command::Apikey { command: ApikeyCommand::Add { name, role, config } } => {
            with_config(&config, |c| async move { apikey_add(c, &name, role).await })
        }
        Command::Apikey { command: ApikeyCommand::List { config } } => with_config(&config, apikey_list),
        Command::Apikey { command: ApikeyCommand::Revoke { key, config } } => {
            with_config(&config, |c| async move { apikey_revoke(c, &key).await })
        }
        Command::User { command } => command.run(),
        Command::Openapi => {
            let doc = crate::fleet::openapi::document(&crate::fleet::routes());
            match serde_json::to_string_pretty(&doc) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cloud-hub: cannot write the document: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads the config and runs `f` on a small runtime.
pub(crate) fn with_config<F, Fut>(path: &Path, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cloud-hub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The broker address to give sites: `public_url`, else what the config implies.
fn broker_url_for_sites(config: &Config) -> (String, bool) {
    if let Some(url) = &config.mqtt.public_url {
        return (url.clone(), true);
    }
    match &config.broker {
        BrokerPlan::Embedded { listen } => match listen.ip() {
            ip if ip.is_unspecified() => (format!("mqtt://HUB_HOST:{}", listen.port()), false),
            IpAddr::V6(ip) => (format!("mqtt://[{ip}]:{}", listen.port()), false),
            IpAddr::V4(ip) => (format!("mqtt://{ip}:{}", listen.port()), false),
        },
        BrokerPlan::External { host, port } if host.contains(':') => (format!("mqtt://[{host}]:{port}"), false),
        BrokerPlan::External { host, port } => (format!("mqtt://{host}:{port}"), false),
    }
}

async fn site_add(config: Config, name: &str, id: Option<&str>) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let result = crate::sites::add_site(&store, name, id, &config.mqtt.username).await;
    store.close().await;
    let creds = result?;
    println!("site added");
    print_credentials(&config, &creds);
    Ok(())
}

async fn site_rotate_password(config: Config, site_id: &str) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let result = crate::sites::rotate_password(&store, site_id).await;
    store.close().await;
    let creds = result?;
    println!("site password changed (connections already open stay open)");
    print_credentials(&config, &creds);
    Ok(())
}

/// What `site add` and `site rotate-password` print: the credentials (shown once), and
/// the lines for the site's edge-agent config.
fn print_credentials(config: &Config, creds: &crate::sites::SiteCredentials) {
    let (url, public) = broker_url_for_sites(config);
    println!("  id:            {}", creds.site_id);
    println!("  name:          {}", creds.name);
    println!("  MQTT username: {}", creds.mqtt_username);
    println!("  MQTT password: {}", creds.mqtt_password);
    println!();
    println!(
        "The password is shown only now (the hub keeps an argon2id hash of it, and the PBKDF2 hash Mosquitto's \
         password file takes)."
    );
    if let BrokerPlan::External { .. } = config.broker {
        println!(
            "With Mosquitto as the broker, it works once `cloud-hub mosquitto-files` has written the files again \
             and Mosquitto has reloaded them (SIGHUP)."
        );
    }
    if !public {
        println!(
            "The broker address below is the hub's own view{}: the site may need another one (set mqtt.public_url).",
            if url.contains("HUB_HOST") { " (replace HUB_HOST)" } else { "" }
        );
    }
    println!("Paste into the site's edge-agent config:");
    println!();
    print!("{}", crate::sites::edge_config_snippet(creds, &url));
}

/// `cloud-hub mosquitto-files`: writes both files, then says how Mosquitto uses them.
async fn mosquitto_files(config: Config, path: &Path, passwd: &Path, acl: &Path) -> anyhow::Result<()> {
    use crate::mosquitto::SkipReason;
    use anyhow::Context as _;

    let passwd = std::path::absolute(passwd).with_context(|| format!("bad path {}", passwd.display()))?;
    let acl = std::path::absolute(acl).with_context(|| format!("bad path {}", acl.display()))?;
    if passwd == acl {
        anyhow::bail!("the password file and the ACL file must be two files, not both {}", passwd.display());
    }
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let files = crate::mosquitto::generate(&store, &config.mqtt).await;
    store.close().await;
    let files = files?;
    crate::mosquitto::write_atomically(&passwd, &files.passwd, 0o600)
        .with_context(|| format!("cannot write the password file {}", passwd.display()))?;
    crate::mosquitto::write_atomically(&acl, &files.acl, 0o644)
        .with_context(|| format!("cannot write the ACL file {}", acl.display()))?;

    let hub = &config.mqtt.username;
    for skipped in &files.skipped {
        let site = &skipped.site_id;
        match skipped.reason {
            SkipReason::NoHash => eprintln!(
                "cloud-hub: warning: site {site:?} is not in the password file: it was added before the hub kept \
                 Mosquitto password hashes, and its password is not stored; give it a new one with `cloud-hub site \
                 rotate-password {site} --config {}`, put that into the site's edge-agent config, and run this \
                 command again",
                path.display()
            ),
            SkipReason::HubUser => eprintln!(
                "cloud-hub: warning: site {site:?} is not in the password file: its id is the hub's MQTT user name \
                 ([mqtt] username), and as that user it would read and write every site's topics"
            ),
            SkipReason::InvalidId => {
                eprintln!("cloud-hub: warning: site {site:?} is not in the password file: not a valid site id")
            }
        }
    }
    if !files.hub_user_included {
        eprintln!(
            "cloud-hub: warning: the hub's user {hub:?} is not in the password file: [mqtt] password is not set in \
             {}, and without one the hub connects to the broker without a user name, which Mosquitto refuses \
             under `allow_anonymous false`; set [mqtt] password and run this command again",
            path.display()
        );
    }
    if let BrokerPlan::Embedded { .. } = config.broker {
        eprintln!(
            "cloud-hub: note: {} runs the embedded broker ([mqtt] url is not set); these files are for running \
             the hub with Mosquitto instead",
            path.display()
        );
    }

    let sites = if files.sites == 1 { "1 site".to_owned() } else { format!("{} sites", files.sites) };
    let hub_line = if files.hub_user_included { format!(" and the hub's user {hub:?}") } else { String::new() };
    println!("wrote {} ({sites}{hub_line}; mode 0600)", passwd.display());
    println!(
        "wrote {} (the hub's user {hub:?} reads every site's up/ topics and writes their down/ topics; each site \
         only its own)",
        acl.display()
    );
    println!();
    println!("In mosquitto.conf (Mosquitto 2.x):");
    println!();
    println!("  allow_anonymous false");
    println!("  password_file {}", passwd.display());
    println!("  acl_file {}", acl.display());
    println!();
    println!("Mosquitto reads both files at start and again on SIGHUP (`systemctl reload mosquitto` or");
    println!("`kill -HUP <pid>`): after every `site add` or `site rotate-password`, run this command again, then");
    println!("reload. The password file is for its owner only: make that the user Mosquitto runs as (it drops");
    println!("root to the user `mosquitto` before reading), e.g. `chown mosquitto: {}`.", passwd.display());
    Ok(())
}

async fn site_list(config: Config) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let sites = crate::sites::list_sites(&store).await;
    store.close().await;
    let sites = sites?;
    println!("{:<40} {:>15} {:<25} {:<8} name", "id", "applied_through", "last event", "online");
    for s in sites {
        let last = s.last_event_at.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_else(|| "-".into());
        let online = match s.online {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!("{:<40} {:>15} {:<25} {:<8} {}", s.id, s.applied_through, last, online, s.name);
    }
    Ok(())
}

async fn apikey_add(config: Config, name: &str, role: crate::auth::Role) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let result = crate::auth::add_key(&store, name, role).await;
    store.close().await;
    let new = result?;
    println!("API key added");
    println!("  id:    {}", new.key.id);
    println!("  name:  {}", new.key.name);
    println!("  role:  {}", new.key.role);
    println!("  token: {}", new.token);
    println!();
    println!("The token is shown only now (the hub keeps a SHA-256 of it). Send it on every /api/v1 request:");
    println!("  Authorization: Bearer {}", new.token);
    Ok(())
}

async fn apikey_list(config: Config) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let keys = crate::auth::list_keys(&store).await;
    store.close().await;
    let keys = keys?;
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_else(|| "-".into())
    };
    println!("{:<36}  {:<14} {:<20} {:<20} {:<20} name", "id", "role", "created", "last used", "revoked");
    for k in keys {
        println!(
            "{:<36}  {:<14} {:<20} {:<20} {:<20} {}",
            k.id,
            k.role.as_str(),
            when(k.created_at),
            when(k.last_used_at),
            when(k.revoked_at),
            k.name
        );
    }
    Ok(())
}

async fn apikey_revoke(config: Config, key: &str) -> anyhow::Result<()> {
    let store = crate::db::Store::connect(&config.db, 1).await?;
    let result = crate::auth::revoke_key(&store, key).await;
    store.close().await;
    if result? {
        println!("API key {key:?} revoked");
    } else {
        println!("API key {key:?} was revoked already");
    }
    Ok(())
}

fn run(path: &Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rumqttd logs every connection and subscription at info.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("{}", config.summary());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cloud-hub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match crate::app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cloud-hub: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        // One machine-readable line for supervisors and tests (ports may be 0 in the
        // config), then the human one.
        println!(
            "SITEPILOT_READY {}",
            serde_json::json!({
                "http": running.http_addr.to_string(),
                "mqtt": running.broker_url,
                "embedded_broker": running.embedded_broker.map(|a| a.to_string()),
            })
        );
        println!(
            "cloud-hub: MQTT {}; health at http://{addr}/health, fleet API at http://{addr}/api/v1",
            running.broker_url,
            addr = running.http_addr
        );
        wait_for_signal().await;
        tracing::info!("cloud-hub: shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
