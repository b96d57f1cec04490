//! The `rotor` command line: `run`, `agent`, `check`, `plan`, `versions`, `history`,
//! `rotate`, `rollback`, `consumers`.
//!
//! Offline commands (`check`, `plan`, `versions`, `history`) never start actors or bind a
//! port. `versions` and `history` print metadata only, never values. `check` validates
//! both kinds of configuration: `rotor run`'s, and `rotor agent`'s (a file with an
//! `[agent]` table).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::server::{HistoryView, VersionView};
use crate::config::{AnyConfig, Config, StoreConfig};
use crate::domain::{SecretRef, validate_ident};
use crate::machine::{Phase, SecretState};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::vault::VaultStore;

mod rotate;

/// Exit code for a configuration that does not validate (EX_USAGE, as linkerd does).
pub const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "rotor",
    version,
    about = "Supervised secret rotation and secret-volume watching",
    long_about = "rotor rotates tenant secrets on TOML policies (generate, store, apply, test, \
                  promote, grace, expire, with automatic rollback) and watches Kubernetes \
                  secret volumes. Run `rotor <command> --help` for each command."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for clusters.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: rotation actors, admin API, metrics. Stops on SIGTERM/SIGINT.
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Run the sidecar agent: watch the pod's mounts, reload, and report the versions it
    /// holds to rotor (the configuration has an `[agent]` table). Stops on SIGTERM/SIGINT.
    Agent {
        /// Agent configuration file (TOML).
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate configuration files offline (`rotor run`'s, or `rotor agent`'s when the
    /// file has an `[agent]` table); prints every error with its line and column.
    Check {
        /// Configuration file (TOML); also accepted as positional arguments.
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: Option<PathBuf>,
        /// More configuration files to validate.
        files: Vec<PathBuf>,
    },
    /// Show upcoming rotations and expiries, sorted by time.
    Plan {
        /// Configuration file (TOML).
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// How many days ahead to look.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Show at most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List the versions of a secret (metadata only, never values) from the store, or
    /// through the running rotor's admin API while it holds the store.
    Versions {
        /// Configuration file (TOML).
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Secret key.
        key: String,
    },
    /// List the rotation history of a secret, newest first, from the store, or through the
    /// running rotor's admin API while it holds the store.
    History {
        /// Configuration file (TOML).
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Secret key.
        key: String,
        /// Show at most this many rotations.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Ask the running rotor (its admin API, with the token from `admin_token_file`) to
    /// rotate a secret now (`rotor rotate TENANT KEY`), or to run an emergency rotation job
    /// over many (`--tenant`, `--policy`, `--key-glob`, `--all`) and follow its progress.
    Rotate {
        /// Configuration file (TOML) of the running rotor.
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Tenant id (with KEY: rotate that one secret).
        tenant: Option<String>,
        /// Secret key.
        key: Option<String>,
        #[command(flatten)]
        job: rotate::JobArgs,
    },
    /// Ask the running rotor to roll back the rotation of a secret that is in grace.
    Rollback {
        /// Configuration file (TOML) of the running rotor.
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Secret key.
        key: String,
    },
    /// List the consumers (agents in workload pods) of a secret, as the running rotor
    /// knows them: the version each holds and whether it is current, lagging or gone.
    Consumers {
        /// Configuration file (TOML) of the running rotor.
        #[arg(short, long, env = "ROTOR_CONFIG")]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Secret key.
        key: String,
    },
}

/// Runs an offline command. (`run` is handled by `main`, which owns the runtime.)
pub fn run_offline(command: Command) -> ExitCode {
    match command {
        Command::Check { config, files } => check(config.into_iter().chain(files).collect()),
        Command::Plan {
            config,
            days,
            limit,
        } => with_config(&config, |cfg| plan(cfg, days, limit, Utc::now())),
        Command::Versions {
            config,
            tenant,
            key,
        } => with_config(&config, |cfg| versions(cfg, &tenant, &key)),
        Command::History {
            config,
            tenant,
            key,
            limit,
        } => with_config(&config, |cfg| history(cfg, &tenant, &key, limit)),
        Command::Rotate {
            config,
            tenant,
            key,
            job,
        } => match (tenant, key, job.is_empty()) {
            (Some(tenant), Some(key), true) => {
                with_config(&config, |cfg| admin_call(cfg, "rotate", &tenant, &key))
            }
            (None, None, false) => with_config(&config, |cfg| rotate::run(cfg, &job)),
            (Some(_), None, _) => rotate::usage_error(
                "give TENANT KEY for one secret, or --tenant TENANT for every secret of a tenant",
            ),
            (Some(_), Some(_), false) => rotate::usage_error(
                "TENANT KEY rotates one secret and takes no job options; select keys with --tenant and --key-glob",
            ),
            (None, _, _) => {
                rotate::usage_error("say what to rotate: TENANT KEY, --tenant TENANT, or --all")
            }
        },
        Command::Rollback {
            config,
            tenant,
            key,
        } => with_config(&config, |cfg| admin_call(cfg, "rollback", &tenant, &key)),
        Command::Consumers {
            config,
            tenant,
            key,
        } => with_config(&config, |cfg| consumers(cfg, &tenant, &key)),
        Command::Run { .. } | Command::Agent { .. } => ExitCode::FAILURE,
    }
}

/// Where the running rotor's admin API answers (loopback when it listens on every
/// address) and its admin token, read from `admin_token_file`.
fn admin_endpoint(
    cfg: &Config,
) -> Result<(std::net::SocketAddr, crate::api::server::AdminToken), String> {
    let token_file = &cfg.server.admin_token_file;
    // Never create a token here: one that the running rotor does not know is useless.
    if !token_file.exists() {
        return Err(format!(
            "no admin token at {} (it is created by `rotor run`)",
            token_file.display()
        ));
    }
    let token =
        crate::api::server::AdminToken::load_or_create(token_file).map_err(|e| e.to_string())?;
    // A service listening on every address is reached on loopback.
    let mut addr = cfg.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((addr, token))
}

/// One request to the running rotor's admin API with the token from `admin_token_file`;
/// returns the status and the JSON body (`Null` when the body is not JSON). The offline
/// commands have no runtime: the request runs on one of its own, on this thread.
fn admin_request(
    cfg: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let (addr, token) = admin_endpoint(cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        // No proxy: the admin API is this machine's (loopback, or the address rotor
        // listens on), and the request carries the admin token.
        let client = crate::http_client::client(std::time::Duration::from_secs(15), None, None)?;
        let mut request = client
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token.expose_secret());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            let why = crate::http_client::failure(&e, false);
            format!("cannot reach rotor at {addr}: {why} (is `rotor run` running?)")
        })?;
        let status = response.status().as_u16();
        let answer = response.bytes().await.map_err(|e| {
            let why = crate::http_client::failure(&e, false);
            format!("no answer from rotor at {addr}: {why}")
        })?;
        Ok((status, serde_json::from_slice(&answer).unwrap_or_default()))
    })
}

/// The `error` of an API answer, or the status alone.
fn api_error(status: u16, json: &serde_json::Value) -> String {
    match json["error"].as_str() {
        Some(e) => format!("({status}): {e}"),
        None => format!("({status})"),
    }
}

/// `POST /admin/secrets/{action}` on the running rotor; prints its answer.
fn admin_call(cfg: &Config, action: &str, tenant: &str, key: &str) -> Result<(), String> {
    let secret = parse_secret(tenant, key)?;
    let body = serde_json::json!({"tenantId": secret.tenant(), "secretKey": secret.key()});
    let (status, json) = admin_request(
        cfg,
        reqwest::Method::POST,
        &format!("/admin/secrets/{action}"),
        Some(body),
    )?;
    if status == 202 {
        println!(
            "{action} of {secret} accepted: rotation {}",
            json["rotationId"].as_str().unwrap_or("?")
        );
        Ok(())
    } else {
        Err(format!(
            "{action} of {secret} refused {}",
            api_error(status, &json)
        ))
    }
}

fn with_config(path: &Path, f: impl FnOnce(&Config) -> Result<(), String>) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match f(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(files: Vec<PathBuf>) -> ExitCode {
    if files.is_empty() {
        eprintln!("error: no configuration file given (use -c FILE or list files)");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let mut bad = 0;
    for file in &files {
        match crate::config::load_any(file) {
            Ok(AnyConfig::Service(cfg)) => println!(
                "{}: ok ({} secrets, {} policies, {} mounts)",
                file.display(),
                cfg.secrets.len(),
                cfg.policies.len(),
                cfg.mounts.len()
            ),
            Ok(AnyConfig::Agent(cfg)) => println!(
                "{}: ok (agent: {} mounts, {} mapped files, workload {})",
                file.display(),
                cfg.mounts.len(),
                cfg.mounts.iter().map(|m| m.files.len()).sum::<usize>(),
                cfg.agent.workload.as_deref().unwrap_or("-"),
            ),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} files have errors", files.len());
        ExitCode::from(EXIT_BAD_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// A store an offline command opened, with the runtime its async calls run on: one
/// current-thread runtime per command, built here, since the command itself is
/// synchronous (and a Vault client's connections belong to the runtime that opened them).
struct OfflineStore {
    // Dropped before the runtime, so its connections close while the runtime still runs.
    store: Box<dyn Store>,
    runtime: tokio::runtime::Runtime,
}

impl OfflineStore {
    /// Runs one store call to completion.
    fn wait<T>(&self, call: impl Future<Output = T>) -> T {
        self.runtime.block_on(call)
    }
}

/// Opens the configured store for reading, refusing to create one: an offline command on a
/// machine without a store must not leave a fresh master key behind.
fn open_existing_store(cfg: &Config) -> Result<Option<OfflineStore>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let store = match &cfg.store {
        StoreConfig::Embedded {
            path,
            master_key_file,
        } => {
            if !path.exists() {
                return Ok(None);
            }
            EmbeddedStore::open(path, master_key_file)
                .map(|s| Box::new(s) as Box<dyn Store>)
                .map_err(|e| format!("{e} (is `rotor run` using this store? stop it first)"))
        }
        // Vault is shared by design: reading while `rotor run` writes is fine. Without the
        // fingerprint key file there is nothing to read with, and none is created here.
        StoreConfig::Vault(settings) => {
            if !settings.master_key_file.exists() {
                return Ok(None);
            }
            runtime
                .block_on(VaultStore::open((**settings).clone()))
                .map(|s| Box::new(s) as Box<dyn Store>)
                .map_err(|e| e.to_string())
        }
    }?;
    Ok(Some(OfflineStore { runtime, store }))
}

fn parse_secret(tenant: &str, key: &str) -> Result<SecretRef, String> {
    validate_ident(tenant).map_err(|e| format!("tenant {tenant:?} {e}"))?;
    validate_ident(key).map_err(|e| format!("key {key:?} {e}"))?;
    SecretRef::new(tenant, key).map_err(|e| e.to_string())
}

/// The secret `tenant`/`key`, which the configuration must name.
fn configured(cfg: &Config, tenant: &str, key: &str) -> Result<SecretRef, String> {
    let secret = parse_secret(tenant, key)?;
    if cfg.secrets.iter().any(|s| s.secret == secret) {
        Ok(secret)
    } else {
        Err(format!("{secret} is not configured"))
    }
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Rows about `secret` from the store when it can be opened; when `rotor run` holds it (the
/// embedded store allows one process), from the running rotor's admin API instead (`GET
/// api_path`, the rows in the answer's `field`), saying so on stderr. `None`: no store
/// exists yet, said on stdout.
fn read_rows<T: serde::de::DeserializeOwned>(
    cfg: &Config,
    secret: &SecretRef,
    offline: impl FnOnce(&OfflineStore) -> Result<Vec<T>, String>,
    api_path: &str,
    field: &str,
) -> Result<Option<Vec<T>>, String> {
    match open_existing_store(cfg) {
        Ok(None) => {
            println!("{secret}: no store yet (nothing has run)");
            Ok(None)
        }
        Ok(Some(store)) => offline(&store).map(Some),
        Err(store_error) => match admin_request(cfg, reqwest::Method::GET, api_path, None) {
            Ok((200, mut json)) => {
                eprintln!("note: the store is in use; read through the running rotor's admin API");
                serde_json::from_value(json[field].take())
                    .map(Some)
                    .map_err(|e| format!("unexpected answer from the admin API: {e}"))
            }
            Ok((status, json)) => Err(format!(
                "{store_error}; the running rotor's admin API refused too {}",
                api_error(status, &json)
            )),
            Err(api) => Err(format!("{store_error}; {api}")),
        },
    }
}

fn versions(cfg: &Config, tenant: &str, key: &str) -> Result<(), String> {
    let secret = configured(cfg, tenant, key)?;
    let rows = read_rows(
        cfg,
        &secret,
        |store| {
            let versions = store
                .wait(store.store.versions(&secret))
                .map_err(|e| e.to_string())?;
            Ok(versions.into_iter().map(VersionView::from).collect())
        },
        &format!(
            "/admin/secrets/versions/{}/{}",
            secret.tenant(),
            secret.key()
        ),
        "versions",
    )?;
    let Some(rows) = rows else { return Ok(()) };
    println!(
        "{:>7}  {:<18}  {:<19}  {:<19}  {:<19}  FINGERPRINT",
        "VERSION", "LABELS", "CREATED", "PROMOTED", "EXPIRED"
    );
    for v in &rows {
        let labels: Vec<&str> = v.labels.iter().map(|l| l.as_str()).collect();
        println!(
            "{:>7}  {:<18}  {:<19}  {:<19}  {:<19}  {}",
            v.version,
            if labels.is_empty() {
                "-".to_owned()
            } else {
                labels.join(",")
            },
            fmt_time(Some(v.created_at)),
            fmt_time(v.promoted_at),
            fmt_time(v.expired_at),
            v.fingerprint
        );
    }
    println!("{} versions", rows.len());
    Ok(())
}

fn history(cfg: &Config, tenant: &str, key: &str, limit: usize) -> Result<(), String> {
    let secret = configured(cfg, tenant, key)?;
    let rows = read_rows(
        cfg,
        &secret,
        |store| {
            let records = store
                .wait(store.store.history(&secret, limit))
                .map_err(|e| e.to_string())?;
            Ok(records.into_iter().map(HistoryView::from).collect())
        },
        &format!(
            "/admin/secrets/history/{}/{}?limit={}",
            secret.tenant(),
            secret.key(),
            limit.clamp(1, crate::api::server::MAX_HISTORY_LIMIT)
        ),
        "rotations",
    )?;
    let Some(rows) = rows else { return Ok(()) };
    println!(
        "{:<8}  {:<9}  {:<9}  {:<12}  {:<8}  {:<19}  {:>9}",
        "ROTATION", "TRIGGER", "VERSIONS", "OUTCOME", "ERROR", "STARTED", "SECONDS"
    );
    for r in &rows {
        let from = r.from_version.map_or("-".into(), |v| v.to_string());
        println!(
            "{:<8}  {:<9}  {:<9}  {:<12}  {:<8}  {:<19}  {:>9.1}",
            r.rotation_id,
            r.trigger.as_str(),
            format!("{from}->{}", r.to_version),
            r.outcome.as_str(),
            r.error.map_or("-", |e| e.as_str()),
            fmt_time(Some(r.started_at)),
            r.duration_seconds
        );
    }
    println!("{} rotations", rows.len());
    Ok(())
}

/// `GET /admin/secrets/consumers/{tenant}/{key}` on the running rotor, as a table. Only
/// the running rotor knows heartbeats, so there is no offline reading.
fn consumers(cfg: &Config, tenant: &str, key: &str) -> Result<(), String> {
    let secret = configured(cfg, tenant, key)?;
    let path = format!(
        "/admin/secrets/consumers/{}/{}",
        secret.tenant(),
        secret.key()
    );
    let (status, mut json) = admin_request(cfg, reqwest::Method::GET, &path, None)?;
    if status != 200 {
        return Err(format!(
            "consumers of {secret} refused {}",
            api_error(status, &json)
        ));
    }
    let rows: Vec<crate::api::ConsumerView> = serde_json::from_value(json["consumers"].take())
        .map_err(|e| format!("unexpected answer from the admin API: {e}"))?;
    println!(
        "{:<32}  {:<20}  {:>7}  {:<8}  {:<8}  LAST REPORT",
        "CONSUMER", "WORKLOAD", "VERSION", "STATE", "RELOADED"
    );
    for c in &rows {
        println!(
            "{:<32}  {:<20}  {:>7}  {:<8}  {:<8}  {}",
            c.consumer_id,
            c.workload.as_deref().unwrap_or("-"),
            c.version.map_or("-".into(), |v| v.to_string()),
            c.state,
            c.reloaded.map_or("-", |r| if r { "yes" } else { "no" }),
            fmt_time(Some(c.last_report_at))
        );
    }
    println!("{} consumers of {secret}", rows.len());
    Ok(())
}

/// One row of `rotor plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub at: DateTime<Utc>,
    pub secret: SecretRef,
    pub policy: String,
    pub event: &'static str,
}

/// Upcoming rotations and expiries within `days`, from the journals in `states` (secrets
/// without one are new: their first version is due now). Pure, for tests.
pub fn plan_rows(
    cfg: &Config,
    states: &dyn Fn(&SecretRef) -> Option<SecretState>,
    now: DateTime<Utc>,
    days: u32,
    per_secret_cap: usize,
) -> Vec<PlanRow> {
    let horizon = now + TimeDelta::days(i64::from(days));
    let mut rows = Vec::new();
    for s in &cfg.secrets {
        let policy = &s.policy;
        let grace = TimeDelta::from_std(policy.grace).unwrap_or(TimeDelta::MAX);
        let state = states(&s.secret).unwrap_or_default();
        let mut push = |at: DateTime<Utc>, event: &'static str| {
            rows.push(PlanRow {
                at,
                secret: s.secret.clone(),
                policy: policy.name.clone(),
                event,
            })
        };
        let mut last = state.last_rotated_at;
        if let Phase::Grace { expires_at, .. } = &state.phase
            && *expires_at <= horizon
        {
            push(*expires_at, "expire previous");
        }
        let mut due = match (&state.phase, state.current) {
            (_, None) => Some(now),
            (Phase::Stuck { .. }, _) => {
                push(now, "stuck: needs an operator");
                None
            }
            _ => policy.schedule.next_due(&s.secret, last, now),
        };
        let mut n = 0;
        while let Some(at) = due {
            if at > horizon || n >= per_secret_cap {
                break;
            }
            push(
                at,
                if last.is_none() {
                    "create v1"
                } else {
                    "rotate"
                },
            );
            if last.is_some() && at + grace <= horizon {
                push(at + grace, "expire previous");
            }
            last = Some(at);
            due = policy.schedule.next_due(&s.secret, last, at);
            n += 1;
        }
    }
    rows.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.secret.cmp(&b.secret)));
    rows
}

fn plan(cfg: &Config, days: u32, limit: usize, now: DateTime<Utc>) -> Result<(), String> {
    let store = open_existing_store(cfg)?;
    let states = |secret: &SecretRef| -> Option<SecretState> {
        let store = store.as_ref()?;
        let bytes = store.wait(store.store.journal(secret)).ok()??;
        serde_json::from_slice(&bytes).ok()
    };
    // Each secret is followed for at most 1,000 rotations, so a demo interval of seconds over
    // 30 days cannot produce millions of rows; the table itself shows `limit` rows.
    let rows = plan_rows(cfg, &states, now, days, 1000);
    println!(
        "{:<19}  {:<32}  {:<22}  EVENT",
        "TIME (UTC)", "SECRET", "POLICY"
    );
    for r in rows.iter().take(limit) {
        println!(
            "{:<19}  {:<32}  {:<22}  {}",
            fmt_time(Some(r.at)),
            r.secret.to_string(),
            r.policy,
            r.event
        );
    }
    if rows.len() > limit {
        println!(
            "... {} more within {days} days not shown (use --limit)",
            rows.len() - limit
        );
    }
    println!(
        "{} secrets, {} events in the next {days} days{}",
        cfg.secrets.len(),
        rows.len(),
        if store.is_none() {
            " (no store yet: every secret gets its first version at start)"
        } else {
            ""
        }
    );
    Ok(())
}
