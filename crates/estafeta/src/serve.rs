//! `estafeta serve`: load the config, open the store, start the engine and the API, and shut
//! down gracefully on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use estafeta_api::{AppState, Auth, app, token_digest};
use estafeta_config::model::LogFormat;
use estafeta_config::{Config, ProcessLookup, StorageSettings};
use estafeta_destinations::HttpClients;
use estafeta_engine::Engine;
use estafeta_sources::Sources;
use estafeta_store::vault::{Vault, load_master_key};
use estafeta_store::{SqliteOptions, SqliteStore, Store};
use tracing_subscriber::EnvFilter;

use crate::secret_lookup::{StoreFirst, first_pass};

const ADMIN_DIGEST_SETTING: &str = "admin_token_sha256";

/// Command-line options of `serve`.
pub(crate) struct Options {
    pub(crate) config: Option<PathBuf>,
    pub(crate) listen: Option<std::net::SocketAddr>,
    pub(crate) storage: Option<String>,
}

pub(crate) async fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let lookup = ProcessLookup::from_env();
    // Stored secrets can only be read once the store is open, and where the store is comes
    // from the config: this first pass finds it; the config is validated again below.
    let config_path = opts.config.clone();
    let config = match &opts.config {
        Some(p) => first_pass(p, &lookup),
        None => estafeta_config::defaults(&lookup),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(l) = opts.listen {
        config.listen = l;
    }
    if let Some(s) = &opts.storage {
        match s.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => {
                config.storage = StorageSettings::Sqlite {
                    path: PathBuf::from(p),
                }
            }
            _ => {
                eprintln!("--storage: `{s}` is not a storage URL; write `sqlite://PATH`");
                return Ok(ExitCode::from(2));
            }
        }
    }
    init_logging(&config);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ])
        .context("configuring metrics")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                estafeta_core::metric_names::STORE_BATCH_SIZE.to_owned(),
            ),
            &[
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
            ],
        )
        .context("configuring metrics")?
        .install_recorder()
        .ok();

    let StorageSettings::Sqlite { path } = config.storage.clone();
    let path = &path;
    create_private_dir(path.parent().unwrap_or(std::path::Path::new(".")))
        .with_context(|| format!("creating the data directory for {}", path.display()))?;
    let mut opts = SqliteOptions::new(path.clone());
    opts.dedupe_window = config.dedupe_window;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(opts)
            .await
            .with_context(|| format!("opening the store at {}", path.display()))?,
    );

    let data_dir = path.parent().unwrap_or(std::path::Path::new("."));
    let key = load_master_key(data_dir).context("loading the master key")?;
    let vault = Vault::new(Arc::clone(&store), key);
    if let Some(p) = &config_path {
        let stored = vault
            .all_secrets()
            .await
            .context("reading the stored secrets")?;
        let lookup = StoreFirst {
            stored: &stored,
            fallback: &lookup,
        };
        match estafeta_config::load_file(p, &lookup) {
            Ok(mut c) => {
                c.listen = config.listen;
                c.storage = config.storage.clone();
                config = c;
            }
            Err(errors) => {
                eprint!("{errors}");
                store.close().await;
                return Ok(ExitCode::from(2));
            }
        }
    }

    let auth = admin_auth(&config, &*store, path).await?;

    let clients = HttpClients::new();
    let mut destinations = Vec::new();
    for d in &config.destinations {
        destinations.push(
            estafeta_destinations::build(d, &clients)
                .with_context(|| format!("destination `{}`", d.id))?,
        );
    }
    let engine = Engine::start(&config, Arc::clone(&store), destinations).await?;
    let sources = Sources::start(
        &config.sources,
        Arc::new(engine.clone()),
        Arc::clone(&store),
        &vault.credentials(),
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // A fixed line on stdout that scripts and tests can wait for.
    println!("estafeta listening on http://{addr}");

    let state = AppState {
        engine: engine.clone(),
        auth: Arc::new(auth),
        max_body_bytes: config.max_body_bytes,
        metrics,
        http_sources: Arc::new(
            config
                .sources
                .iter()
                .filter(|s| matches!(s.kind, estafeta_config::SourceKindSettings::Http))
                .map(|s| s.id.clone())
                .collect(),
        ),
        sources: sources.board().clone(),
        schedules: sources.schedules().clone(),
        vault,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    shutdown_signal().await;
    stop.cancel();
    // Requests being answered get the grace period to finish; then we move on.
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e).context("serving HTTP"),
        Ok(Err(e)) => return Err(e).context("serving HTTP"),
        Err(_) => tracing::warn!("requests still open after the grace period; closing them"),
    }
    sources.shutdown(config.shutdown_grace).await;
    tracing::info!("intake stopped; finishing attempts in flight");
    engine.shutdown(config.shutdown_grace).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The admin token: configured (`server.admin_token`), from `ESTAFETA_ADMIN_TOKEN`, or
/// generated on first start. Only its SHA-256 digest is stored; a configured token replaces
/// the stored one, so an old generated token stops working.
async fn admin_auth(
    config: &Config,
    store: &dyn Store,
    db_path: &std::path::Path,
) -> anyhow::Result<Auth> {
    let configured = match (&config.admin_token, std::env::var("ESTAFETA_ADMIN_TOKEN")) {
        (Some(t), _) => Some(t.expose().to_owned()),
        (None, Ok(t)) if t.len() < 16 => {
            anyhow::bail!("ESTAFETA_ADMIN_TOKEN must be at least 16 characters long")
        }
        (None, Ok(t)) => Some(t),
        (None, Err(_)) => None,
    };
    if let Some(t) = configured {
        let digest = token_digest(&t);
        if store.get_setting(ADMIN_DIGEST_SETTING).await?.as_deref() != Some(digest.as_str()) {
            store.put_setting(ADMIN_DIGEST_SETTING, &digest).await?;
        }
        return Ok(Auth::from_digest(&digest));
    }
    if let Some(d) = store.get_setting(ADMIN_DIGEST_SETTING).await? {
        return Ok(Auth::from_digest(&d));
    }
    let token = generate_token();
    store
        .put_setting(ADMIN_DIGEST_SETTING, &token_digest(&token))
        .await?;
    // The token goes to a file only its owner can read, not to the logs (a service's output
    // usually ends up in the journal). On a terminal it is shown too.
    let file = db_path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("admin-token");
    write_private(&file, &token).with_context(|| format!("writing {}", file.display()))?;
    eprintln!(
        "Generated an admin API token and wrote it to {} (readable only by this user).",
        file.display()
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "\n    {token}\n\nUse it as `Authorization: Bearer <token>` (or ESTAFETA_TOKEN for the CLI).\n"
        );
    }
    Ok(Auth::from_token(&token))
}

/// Creates the data directory readable only by this user (events and deliveries are
/// confidential); an existing directory is left as it is.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

fn generate_token() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    format!(
        "est_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}

fn init_logging(config: &Config) {
    let filter = std::env::var("ESTAFETA_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
