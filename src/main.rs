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
use rotor::api::Admin;
use rotor::api::server::{self, AdminToken};
use rotor::api::thread::{ApiThread, OnWorkRuntime};
use rotor::cli::{Cli, Command, EXIT_BAD_CONFIG, LogFormat};
use rotor::config::{Config, StoreConfig};
use rotor::ha::follower::StoreAdmin;
use rotor::ha::{Election, ElectionSettings, HaAdmin, Leadership, Role};
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
    let ha = config.ha.enabled;

    // 2. The store and the admin token. With `[ha]` the replicas share the master key
    // and the tokens through one Kubernetes Secret: a replica that made its own would
    // fingerprint differently and lock the others' clients out, so nothing is created.
    // A Vault store's token is renewed by its own actor.
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
            let settings = (**settings).clone();
            let opened = if ha {
                VaultStore::open_shared_key(settings).await
            } else {
                VaultStore::open(settings).await
            };
            let store = match opened {
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
    let load_token = |path: &std::path::Path| {
        if ha {
            AdminToken::load(path)
        } else {
            AdminToken::load_or_create(path)
        }
    };
    let token = match load_token(&config.server.admin_token_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the admin token");
            return ExitCode::FAILURE;
        }
    };
    // The consumer token is created like the admin token when missing (not with `[ha]`):
    // an operator copies it into the Secret the agents mount, and no default token exists.
    let consumer_token = match &config.server.consumer_token_file {
        None => None,
        Some(path) => match load_token(path) {
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
    let self_id = config
        .ha
        .id
        .clone()
        .or_else(rotor::agent::system_hostname)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rotor".to_owned());
    let metrics = Metrics::with_options(config.metrics.per_secret);
    let api = Api {
        listener,
        token,
        consumer_token,
        max_connections: config.server.max_connections,
    };

    if ha {
        return run_ha(
            &config,
            &config_path,
            store,
            extra_children,
            metrics,
            api,
            self_id,
        )
        .await;
    }

    // 3. The supervision tree.
    let mut tree = match tree::start(
        &config,
        store,
        metrics.clone(),
        TreeOptions {
            extra_children,
            hibernate_after: Some(config.runtime.hibernate_after),
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
    metrics.leader.set(1);
    tracing::info!(
        listen = %addr,
        secrets = config.secrets.len(),
        mounts = config.mounts.len(),
        config = %config_path.display(),
        "rotor started"
    );

    // 4. The admin API, stopped by the same shutdown. Without `[ha]` this process leads
    // for ever, at term 0.
    let backend = Arc::new(HaAdmin::new(
        Leadership::single(self_id),
        actor_admin(&tree),
    ));
    let api = match api.serve(backend, None) {
        Ok(served) => served,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin API");
            return ExitCode::FAILURE;
        }
    };

    // 5. Wait for a signal or for the tree to end on its own.
    let exit = tokio::select! {
        exit = tree.wait() => {
            tracing::error!(%exit, "supervision tree ended; exiting");
            exit
        }
        signal = shutdown_signal() => {
            force_exit_on_second_signal(signal, &config);
            stop_tree(&mut tree, &config).await
        }
    };
    stop_api(api).await;
    let code = match &exit {
        RootExit::Stopped(_) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    };
    tracing::info!(%exit, "rotor stopped");
    code
}

/// The admin API, bound but not serving yet.
struct Api {
    listener: tokio::net::TcpListener,
    token: AdminToken,
    consumer_token: Option<AdminToken>,
    max_connections: usize,
}

impl Api {
    /// Serves `backend` on the API's own thread until [`ApiThread::stop`]; its calls that
    /// may start an actor run on this (the work) runtime. With `leadership` (HA), a replica
    /// that does not lead forwards every write to the leader; without it the process takes
    /// every request itself.
    fn serve(
        self,
        backend: Arc<HaAdmin>,
        leadership: Option<(Leadership, &Metrics)>,
    ) -> Result<ApiThread, String> {
        let timeout = std::time::Duration::from_secs(10);
        let backend: Arc<dyn Admin> = Arc::new(OnWorkRuntime::new(
            backend,
            tokio::runtime::Handle::current(),
        ));
        let router = match leadership {
            None => {
                server::router_with_consumers(backend, self.token, self.consumer_token, timeout)
            }
            Some((leadership, metrics)) => server::router_with_leadership(
                backend,
                self.token,
                self.consumer_token,
                timeout,
                leadership,
                metrics,
            )?,
        };
        let limits = server::Limits {
            max_connections: self.max_connections,
            ..server::Limits::default()
        };
        let listener = self.listener.into_std().map_err(|e| e.to_string())?;
        rotor::api::thread::spawn(listener, router, limits, API_DRAIN).map_err(|e| e.to_string())
    }
}

/// How long the API's connections have to finish their requests once rotor stops.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Stops the API and waits for its connections to finish their requests: [`API_DRAIN`],
/// after which the API's thread cuts what is left (and drops what its router holds, the
/// store among it, before the process ends). The extra second covers a thread that does
/// not answer at all.
async fn stop_api(api: ApiThread) {
    let bound = API_DRAIN + std::time::Duration::from_secs(1);
    if tokio::time::timeout(bound, api.stop()).await.is_err() {
        tracing::warn!("the admin API did not stop in time; exiting anyway");
    }
}

/// The API backend of a running tree.
fn actor_admin(tree: &tree::Tree) -> Arc<dyn Admin> {
    Arc::new(ActorAdmin {
        context: tree.context.clone(),
        secrets: tree.secrets.clone(),
        ready: tree.ready_flag(),
    })
}

/// After the first signal, a second one forces the exit.
fn force_exit_on_second_signal(signal: &'static str, config: &Config) {
    tracing::info!(signal, timeout = ?config.runtime.shutdown_timeout, "shutting down");
    tokio::spawn(async {
        let s = shutdown_signal().await;
        tracing::warn!(signal = s, "second signal: exiting now");
        std::process::exit(130);
    });
}

/// Stops the tree within the configured shutdown timeout.
async fn stop_tree(tree: &mut tree::Tree, config: &Config) -> RootExit {
    let timeout = config.runtime.shutdown_timeout;
    match tokio::time::timeout(timeout, tree.shutdown(timeout)).await {
        Ok(exit) => exit,
        Err(_) => {
            tracing::warn!("shutdown did not finish in time; exiting anyway");
            RootExit::Failed("shutdown timed out".into())
        }
    }
}

/// Why a leader's term ended.
enum TermEnd {
    /// The election says this replica no longer leads (lease lost, or its fence closed).
    Lost,
    /// The tree ended by itself.
    TreeEnded(RootExit),
    /// SIGTERM or SIGINT.
    Signal(&'static str),
}

/// `rotor run` with `[ha]`: the API and the election start at once; each time this replica
/// becomes the leader it starts the actor tree for that term (its writes fenced by the
/// term's [`rotor::ha::Fence`]), and the moment it stops leading it stops that tree and
/// goes back to following. The API answers from the tree while leading and from the
/// follower backend otherwise. A signal stops the tree, then releases the lease.
async fn run_ha(
    config: &Config,
    config_path: &std::path::Path,
    store: Arc<dyn Store>,
    extra_children: Vec<rotor::supervisor::ChildSpec>,
    metrics: Metrics,
    api: Api,
    self_id: String,
) -> ExitCode {
    // The Vault token renewer runs on followers too (the election needs the store), so it
    // has a root of its own instead of a place in the leader's tree.
    let mut renewer = match rotor::actors::root::spawn_root(
        Some("rotor.vault_token".to_owned()),
        rotor::supervisor::SupervisorArgs::new(extra_children),
    )
    .await
    {
        Ok(root) => root,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the Vault token renewer");
            return ExitCode::FAILURE;
        }
    };
    let election = Election::start(
        store.clone(),
        ElectionSettings {
            id: self_id.clone(),
            url: config.ha.advertise_url.clone(),
            lease_duration: config.ha.lease_duration,
        },
    );
    let leadership = election.leadership();
    let follower: Arc<dyn rotor::api::Admin> = Arc::new(StoreAdmin::new(
        config,
        store.clone(),
        metrics.clone(),
        rotor::clock::Clock::System,
    ));
    let backend = Arc::new(HaAdmin::new(leadership.clone(), follower.clone()));
    let api = match api.serve(backend.clone(), Some((leadership, &metrics))) {
        Ok(served) => served,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin API");
            return ExitCode::FAILURE;
        }
    };
    metrics.leader.set(0);
    tracing::info!(
        id = %self_id,
        advertise_url = %config.ha.advertise_url,
        lease_duration = ?config.ha.lease_duration,
        secrets = config.secrets.len(),
        config = %config_path.display(),
        "rotor started (HA): following until elected"
    );

    let mut roles = election.roles();
    let mut signal = std::pin::pin!(shutdown_signal());
    let code = 'replica: loop {
        // Following: wait to be elected, or for a signal.
        let fence = loop {
            if let Role::Leading(fence) = &*roles.borrow_and_update()
                && fence.is_valid()
            {
                break fence.clone();
            }
            tokio::select! {
                changed = roles.changed() => {
                    if changed.is_err() {
                        tracing::error!("the election stopped; exiting");
                        break 'replica ExitCode::FAILURE;
                    }
                }
                signal = &mut signal => {
                    tracing::info!(signal, "shutting down");
                    break 'replica ExitCode::SUCCESS;
                }
            }
        };
        let term = fence.term();
        let mut tree = match tree::start(
            config,
            store.clone(),
            metrics.clone(),
            TreeOptions {
                fence: fence.clone(),
                hibernate_after: Some(config.runtime.hibernate_after),
                ..TreeOptions::default()
            },
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, term, "cannot start the supervision tree");
                break 'replica ExitCode::FAILURE;
            }
        };
        backend.set_backend(actor_admin(&tree));
        metrics.leader.set(1);
        tracing::info!(term, "leading: actor tree started");

        // Leading: until the lease is lost, the tree ends, or a signal.
        let end = loop {
            tokio::select! {
                changed = roles.changed() => {
                    let still = changed.is_ok()
                        && matches!(&*roles.borrow_and_update(), Role::Leading(f) if f.term() == term && f.is_valid());
                    if !still {
                        break TermEnd::Lost;
                    }
                }
                exit = tree.wait() => break TermEnd::TreeEnded(exit),
                signal = &mut signal => break TermEnd::Signal(signal),
            }
        };
        backend.set_backend(follower.clone());
        metrics.leader.set(0);
        match end {
            TermEnd::Lost => {
                // The fence is closed already: whatever the stopping actors try to
                // commit is refused. Running effects may finish.
                let exit = stop_tree(&mut tree, config).await;
                tracing::warn!(term, %exit, "no longer the leader: actor tree stopped; following");
            }
            TermEnd::TreeEnded(exit) => {
                if fence.is_valid()
                    && !matches!(&exit, RootExit::Stopped(Some(r)) if r == "deposed")
                {
                    tracing::error!(term, %exit, "supervision tree ended; exiting");
                    break 'replica ExitCode::FAILURE;
                }
                // Deposed (a commit refused by the store or the fence): the election
                // steps down at its next round; nothing is written under this term.
                fence.revoke();
                tracing::warn!(term, %exit, "deposed: actor tree stopped; following");
            }
            TermEnd::Signal(signal) => {
                force_exit_on_second_signal(signal, config);
                let exit = stop_tree(&mut tree, config).await;
                tracing::info!(term, %exit, "actor tree stopped");
                break 'replica if exit.is_success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
        }
    };
    // The tree is stopped: release the lease so that another replica leads at once.
    election.stop().await;
    stop_api(api).await;
    let _ = renewer.shutdown(std::time::Duration::from_secs(2)).await;
    tracing::info!("rotor stopped");
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
