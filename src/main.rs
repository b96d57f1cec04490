//! `rotor`: the binary. `rotor run` reads like a runbook: load and validate the
//! configuration without binding anything (exit 64 on bad config), open the store, start
//! the supervision tree, serve the admin API, wait for a signal or for the tree to give
//! up, drain within the configured bound, and say so if it did not finish. `rotor agent`
//! (the sidecar) loads its own kind of configuration (exit 64 on a bad one) and runs
//! [`rotor::agent::run`] on a current-thread runtime until a signal.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rotor::actors::admin::ActorAdmin;
use rotor::actors::panic_hook::install_quiet_panic_hook;
use rotor::actors::root::RootExit;
use rotor::actors::tree::{self, TreeOptions};
use rotor::actors::vault_token;
use rotor::api::server::{self, AdminToken};
use rotor::cli::{Cli, Command, EXIT_BAD_CONFIG, LogFormat};
use rotor::config::{Config, StoreConfig};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::vault::VaultStore;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_format } => {
            init_logging(log_format);
            install_quiet_panic_hook();
            // Before any key or value is in memory: no core file can hold one.
            if let Err(e) = rotor::process::disable_core_dumps() {
                tracing::warn!(error = %e, "cannot disable core dumps; continuing");
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Actor calls from the block_on thread are ~10x slower than from a worker
            // (ARCHITECTURE.md, "Measured facts"), so the service runs in a spawned task.
            rt.block_on(async move {
                match tokio::spawn(run(config)).await {
                    Ok(code) => code,
                    Err(e) => {
                        tracing::error!(error = %e, "rotor run task failed");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Agent { config, log_format } => {
            init_logging(log_format);
            install_quiet_panic_hook();
            run_agent(&config)
        }
        other => rotor::cli::run_offline(other),
    }
}

fn init_logging(format: LogFormat) {
    // vaultrs and rustify log every non-2xx answer (an expected 404 included) at ERROR;
    // the Vault store reports failures itself, with the path and a clear reason.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,vaultrs=off,rustify=off"));
    // Colours only for a terminal: a file or a container log gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.finish().with(no_sql_text()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(no_sql_text())
            .init(),
    }
}

/// tokio-postgres logs the text of every statement it runs at debug, and the `postgres`
/// target's `ALTER ROLE ... PASSWORD` carries the SCRAM verifier a login can be replayed
/// from: whatever `RUST_LOG` asks for, that crate's lines stop at info.
fn no_sql_text<S: tracing::Subscriber>() -> impl tracing_subscriber::Layer<S> {
    tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO)
    })
}

async fn run(config_path: std::path::PathBuf) -> ExitCode {
    // 1. Configuration, validated before anything is opened or bound.
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(config = %config_path.display(), "invalid configuration; not starting");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };

    // 2. The store and the admin token.
    // A Vault store's token is renewed by its own actor, a child of the root supervisor.
    let mut extra_children = Vec::new();
    let store: Arc<dyn Store> = match &config.store {
        StoreConfig::Embedded {
            path,
            master_key_file,
        } => match EmbeddedStore::open(path, master_key_file) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the store");
                return ExitCode::FAILURE;
            }
        },
        StoreConfig::Vault(settings) => {
            let store = match VaultStore::open((**settings).clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the Vault store");
                    return ExitCode::FAILURE;
                }
            };
            extra_children.push(vault_token::child_spec(store.session(), store.lease()));
            Arc::new(store)
        }
    };
    let token = match AdminToken::load_or_create(&config.server.admin_token_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the admin token");
            return ExitCode::FAILURE;
        }
    };
    // The consumer token is created like the admin token when missing: an operator copies
    // it into the Secret the agents mount, and no default token exists.
    let consumer_token = match &config.server.consumer_token_file {
        None => None,
        Some(path) => match AdminToken::load_or_create(path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the consumer token");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.server.listen, error = %e, "cannot bind the admin API");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.server.listen.to_string(), |a| a.to_string());

    // 3. The supervision tree.
    let metrics = Metrics::with_options(config.metrics.per_secret);
    let mut tree = match tree::start(
        &config,
        store,
        metrics,
        TreeOptions {
            extra_children,
            ..TreeOptions::default()
        },
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the supervision tree");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %addr,
        secrets = config.secrets.len(),
        mounts = config.mounts.len(),
        config = %config_path.display(),
        "rotor started"
    );

    // 4. The admin API, stopped by the same shutdown.
    let backend = Arc::new(ActorAdmin {
        context: tree.context.clone(),
        secrets: tree.secrets.clone(),
        ready: tree.ready_flag(),
    });
    let router = server::router_with_consumers(
        backend,
        token,
        consumer_token,
        std::time::Duration::from_secs(10),
    );
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = server::Limits {
        max_connections: config.server.max_connections,
        ..server::Limits::default()
    };
    let api = tokio::spawn(rotor::api::listener::serve(
        listener,
        router,
        limits,
        async move {
            let _ = api_stopped.await;
        },
    ));

    // 5. Wait for a signal or for the tree to end on its own.
    let exit = tokio::select! {
        exit = tree.wait() => {
            tracing::error!(%exit, "supervision tree ended; exiting");
            exit
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, timeout = ?config.runtime.shutdown_timeout, "shutting down");
            // A second signal forces the exit.
            tokio::spawn(async {
                let s = shutdown_signal().await;
                tracing::warn!(signal = s, "second signal: exiting now");
                std::process::exit(130);
            });
            match tokio::time::timeout(config.runtime.shutdown_timeout, tree.shutdown(config.runtime.shutdown_timeout)).await {
                Ok(exit) => exit,
                Err(_) => {
                    tracing::warn!("shutdown did not finish in time; exiting anyway");
                    RootExit::Failed("shutdown timed out".into())
                }
            }
        }
    };
    let _ = stop_api.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), api).await;
    let code = match &exit {
        RootExit::Stopped(_) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    };
    tracing::info!(%exit, "rotor stopped");
    code
}

/// `rotor agent`: the configuration (exit 64 when bad), the consumer id, then the agent on
/// one current-thread runtime (a sidecar in every pod: small matters more than parallel).
fn run_agent(config_path: &std::path::Path) -> ExitCode {
    let config = match rotor::config::AgentConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(config = %config_path.display(), "invalid agent configuration; not starting");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let consumer_id = match rotor::agent::consumer_id(
        config.agent.consumer_id.as_deref(),
        &|name| std::env::var(name).ok(),
        &rotor::agent::system_hostname,
    ) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(rotor::agent::run(config, consumer_id, async {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "rotor agent stopping");
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, kind = e.metric_label(), "rotor agent stopped");
            if e.is_config() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
