//! `cloud-hub user add NAME --role ROLE [--customer ID]`: a dashboard user with a generated
//! password, printed once (only its argon2id hash is kept).

use chrono::Utc;

use crate::dashboard::Role;
use crate::db::{Store, Ty, Val};
use crate::sites;

/// Why a user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name must be 1 to 64 characters of letters, digits, '.', '_', '-' or '@'")]
    BadName,
    #[error("a fleet_manager needs --customer (the billing customer whose sessions they see)")]
    CustomerNeeded,
    #[error("only a fleet_manager has a customer")]
    CustomerNotAllowed,
    #[error("no customer {0} (create it through the fleet API first)")]
    NoCustomer(String),
    #[error("user {0} exists already")]
    Exists(String),
    #[error(transparent)]
    Hash(#[from] crate::sites::SiteError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Whether `name` is acceptable as a user name.
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Adds a user and returns the generated password.
pub async fn add_user(store: &Store, name: &str, role: Role, customer: Option<&str>) -> Result<String, UserError> {
    if !valid_username(name) {
        return Err(UserError::BadName);
    }
    match (role, customer) {
        (Role::FleetManager, None) => return Err(UserError::CustomerNeeded),
        (Role::Admin | Role::CpoOperator, Some(_)) => return Err(UserError::CustomerNotAllowed),
        _ => {}
    }
    if let Some(c) = customer
        && store.fetch_opt("SELECT id FROM customers WHERE id = $1", &[c.into()], &[Ty::Text]).await?.is_none()
    {
        return Err(UserError::NoCustomer(c.to_owned()));
    }
    if store
        .fetch_opt("SELECT username FROM dashboard_users WHERE username = $1", &[name.into()], &[Ty::Text])
        .await?
        .is_some()
    {
        return Err(UserError::Exists(name.to_owned()));
    }
    let password = sites::generate_password();
    let hash = sites::hash_password(&password)?;
    store
        .exec(
            "INSERT INTO dashboard_users (username, password_hash, role, customer_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[name.into(), hash.into(), role.as_str().into(), Val::from(customer), Utc::now().into()],
        )
        .await?;
    Ok(password)
}

/// `cloud-hub user ...`.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add a dashboard user: prints a generated password once (only an argon2id hash is kept).
    Add {
        /// The log-in name (letters, digits, '.', '_', '-', '@').
        name: String,
        /// admin: everything; cpo_operator: every site, charger and session, and charger
        /// commands; fleet_manager: only their customer's sessions and invoices.
        #[arg(long)]
        role: Role,
        /// For a fleet_manager: the billing customer id whose id tags' sessions they see.
        #[arg(long)]
        customer: Option<String>,
        /// The TOML config file (for the database).
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
}

impl UserCommand {
    pub fn run(self) -> std::process::ExitCode {
        match self {
            UserCommand::Add { name, role, customer, config } => crate::cli::with_config(&config, |c| async move {
                let store = Store::connect(&c.db, 1).await?;
                let result = add_user(&store, &name, role, customer.as_deref()).await;
                store.close().await;
                let password = result?;
                println!("Dashboard user added");
                println!("  name:     {name}");
                println!("  role:     {}", role.as_str());
                if let Some(customer) = &customer {
                    println!("  customer: {customer}");
                }
                println!("  password: {password}");
                println!();
                println!("The password is shown only now (the hub keeps an argon2id hash of it).");
                Ok(())
            }),
        }
    }
}
