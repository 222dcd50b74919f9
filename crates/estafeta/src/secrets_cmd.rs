//! `estafeta secrets set|list|delete` and `estafeta credentials set|get|list|delete` against a
//! running server (values are read from stdin, never from the command line), and
//! `estafeta secrets rotate-key`, which re-seals a stopped server's data directly.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use comfy_table::Table;
use estafeta_store::vault::{
    DEFAULT_KEY_FILE, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MasterKey, rotate_master_key,
    write_key_file,
};
use estafeta_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{Value, json};

use crate::cli::ClientArgs;
use crate::client::{Client, s};

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Store a secret; its value is read from stdin (one trailing newline is dropped).
    Set {
        #[command(flatten)]
        client: ClientArgs,
        /// The secret's name (`${secret:NAME}` in config).
        name: String,
    },
    /// List secrets: names and times, never values.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The secret's name.
        name: String,
    },
    /// Re-seal every secret and credential with a new master key, in one transaction. Run
    /// it with the server stopped, on its data.
    RotateKey {
        /// The new key: read if the file exists, else created (mode 0600) with a fresh key.
        #[arg(long)]
        new_key_file: PathBuf,
        /// The store to rotate.
        #[arg(long, env = "ESTAFETA_STORAGE", default_value = estafeta_config::DEFAULT_STORAGE)]
        storage: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Create or replace a credential; its fields are read from stdin as a JSON object
    /// (private fields left out keep their stored values).
    Set {
        #[command(flatten)]
        client: ClientArgs,
        /// The credential's name.
        name: String,
        /// Its type: api_key, bearer, basic, oauth2_client_credentials.
        #[arg(long = "type")]
        kind: String,
    },
    /// Show a credential: public fields, and whether each private one is set.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The credential's name.
        name: String,
    },
    /// List credentials.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a credential.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The credential's name.
        name: String,
    },
}

fn encode(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    Ok(text)
}

pub(crate) async fn secrets(cmd: SecretsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretsCommand::Set { client, name } => {
            let c = Client::new(&client)?;
            let text = read_stdin()?;
            let value = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            if value.is_empty() {
                bail!(
                    "no value on stdin: pipe the secret in, e.g. `printf %s \"$TOKEN\" | estafeta secrets set {name}`"
                );
            }
            let body = json!({ "value": value }).to_string().into_bytes();
            let path = format!("/v1/secrets/{}", encode(&name));
            let v = c
                .call(
                    reqwest::Method::PUT,
                    &path,
                    Some(("application/json", body)),
                    &[],
                )
                .await?;
            println!(
                "secret `{}` stored ({})",
                s(&v, "name"),
                s(&v, "updated_at")
            );
        }
        SecretsCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c
                .call(reqwest::Method::GET, "/v1/secrets", None, &[])
                .await?;
            c.print(&v, |v| {
                let mut t = Table::new();
                t.set_header(["name", "created", "updated"]);
                for i in v["items"].as_array().into_iter().flatten() {
                    t.add_row([s(i, "name"), s(i, "created_at"), s(i, "updated_at")]);
                }
                t
            });
        }
        SecretsCommand::Delete { client, name } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/secrets/{}", encode(&name));
            c.call(reqwest::Method::DELETE, &path, None, &[]).await?;
            println!("secret `{name}` deleted");
        }
        SecretsCommand::RotateKey {
            new_key_file,
            storage,
        } => return rotate(&new_key_file, &storage).await,
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn credentials(cmd: CredentialsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CredentialsCommand::Set { client, name, kind } => {
            let c = Client::new(&client)?;
            let fields: Value = serde_json::from_str(&read_stdin()?)
                .context("stdin must hold the credential's fields as a JSON object")?;
            if !fields.is_object() {
                bail!("stdin must hold the credential's fields as a JSON object");
            }
            let body = json!({ "type": kind, "fields": fields })
                .to_string()
                .into_bytes();
            let path = format!("/v1/credentials/{}", encode(&name));
            let v = c
                .call(
                    reqwest::Method::PUT,
                    &path,
                    Some(("application/json", body)),
                    &[],
                )
                .await?;
            println!("credential `{}` stored ({})", s(&v, "name"), s(&v, "type"));
        }
        CredentialsCommand::Get { client, name } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/credentials/{}", encode(&name));
            let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        CredentialsCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c
                .call(reqwest::Method::GET, "/v1/credentials", None, &[])
                .await?;
            c.print(&v, |v| {
                let mut t = Table::new();
                t.set_header(["name", "type", "fields", "updated"]);
                for i in v["items"].as_array().into_iter().flatten() {
                    let fields: Vec<&str> = i["fields"]
                        .as_object()
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    t.add_row([
                        s(i, "name"),
                        s(i, "type"),
                        fields.join(", "),
                        s(i, "updated_at"),
                    ]);
                }
                t
            });
        }
        CredentialsCommand::Delete { client, name } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/credentials/{}", encode(&name));
            c.call(reqwest::Method::DELETE, &path, None, &[]).await?;
            println!("credential `{name}` deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The key in use now, as `serve` would find it, without ever creating one; and the default
/// key file when that is where it came from.
fn current_key(data_dir: &Path) -> anyhow::Result<(MasterKey, Option<PathBuf>)> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return Ok((MasterKey::from_base64(&text, MASTER_KEY_ENV)?, None));
    }
    if let Some(p) = std::env::var_os(MASTER_KEY_FILE_ENV) {
        return Ok((MasterKey::from_file(Path::new(&p))?, None));
    }
    let default = data_dir.join(DEFAULT_KEY_FILE);
    if !default.exists() {
        bail!(
            "no master key: set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV} to the key the server uses, or keep {} in place",
            default.display()
        );
    }
    Ok((MasterKey::from_file(&default)?, Some(default)))
}

async fn rotate(new_key_file: &Path, storage: &str) -> anyhow::Result<ExitCode> {
    let Some(db) = storage.strip_prefix("sqlite://").filter(|p| !p.is_empty()) else {
        bail!("--storage: `{storage}` is not a storage URL; write `sqlite://PATH`");
    };
    let db = PathBuf::from(db);
    if !db.exists() {
        bail!("no database at {}", db.display());
    }
    let data_dir = db.parent().unwrap_or(Path::new(".")).to_owned();
    let (old, default_file) = current_key(&data_dir)?;
    let new = if new_key_file.exists() {
        MasterKey::from_file(new_key_file)?
    } else {
        let k = MasterKey::generate();
        write_key_file(new_key_file, &k)?;
        eprintln!("wrote a new master key to {}", new_key_file.display());
        k
    };
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(&db))
            .await
            .with_context(|| format!("opening the store at {}", db.display()))?,
    );
    let result = rotate_master_key(Arc::clone(&store), old.clone(), new.clone()).await;
    store.close().await;
    let n = result.context("rotating the master key (nothing was changed)")?;
    println!("re-sealed {n} record(s): key {} -> {}", old.id(), new.id());
    if let Some(default) = default_file {
        // The server finds its key in the data directory: put the new one there.
        let tmp = data_dir.join(format!("{DEFAULT_KEY_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        write_key_file(&tmp, &new)?;
        std::fs::rename(&tmp, &default)
            .with_context(|| format!("replacing {}", default.display()))?;
        println!("{} now holds the new key", default.display());
    } else {
        println!(
            "start the server with {MASTER_KEY_FILE_ENV}={} (or {MASTER_KEY_ENV} set to its contents)",
            new_key_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
