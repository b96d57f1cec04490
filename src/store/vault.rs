//! The Vault store: HashiCorp Vault's KV v2 engine through `vaultrs`, every write a
//! check-and-set.
//!
//! Tested against a real Vault-compatible server, a private OpenBao per test, its faults
//! included (sealed, a policy's 403, a second writer, a restart:
//! `tests/suite/faults_vault.rs`), and, for faults no real server shows on demand (500s,
//! timeouts, Kubernetes login), against the in-repo fake (`vault_fake`, built with the
//! `test-util` feature), which speaks the same HTTP API (`tests/suite/store_vault.rs`).
//!
//! # Layout in Vault
//!
//! Everything the store writes is below `{path_prefix}/_rotor`, where no consumer looks.
//! For a secret `tenant/key`, with `mount = "secret"` and `path_prefix = "prod/tenants"`:
//!
//! | KV path                                | what                                              |
//! |----------------------------------------|---------------------------------------------------|
//! | `prod/tenants/_rotor/tenant/key`       | the values: KV version N is rotor version N       |
//! | `prod/tenants/_rotor/tenant/key/_rotor`| the state document: journal, version metadata, labels, history tail |
//! | `prod/tenants/_rotor/_layout`          | the layout marker, `{"layout": 2, ...}`           |
//!
//! Consumers read views, never store paths. The Vault CSI provider, Vault Agent, External
//! Secrets and `vault kv get` read the latest KV version of a path, and the store writes a
//! version when it is generated, before it is applied, tested and promoted: a consumer
//! pointed at a store path would see pending and failed versions. So the store keeps its
//! paths apart, and what a consumer reads is a view of the promoted current version.
//! `prod/tenants/tenant/key` is where layout 1 (rotor before the layout marker) kept the
//! values; [`VaultStore::open`] copies a store of that layout below `_rotor` once and
//! never writes those paths again (`migrate.rs` says how, and why the old paths are left
//! for an operator to delete).
//!
//! A value version's data is `{"value": "<the value>", "rotor_rotation": "<id>"}` when the
//! value is UTF-8, or `{"value_base64": ...}` otherwise; a version without
//! `rotor_rotation` (a placeholder the migration wrote for a version rotor did not write) is
//! no rotor version. The secret's custom metadata mirrors the labels
//! (`rotor_current = "7"`, `rotor_previous`, `rotor_pending`) for other Vault readers, and
//! `cas_required = true` makes Vault demand check-and-set from every writer of it.
//!
//! The state document is one JSON document in the data of `_rotor`. Vault limits custom
//! metadata to 64 keys of at most 512-byte values, which the journal and history do not
//! fit, and two metadata writes would not be atomic; a single check-and-set write of one
//! document is. So [`Store::commit`] is one CAS write of the document (journal, labels,
//! promoted/expired stamps and the history tail together), and the label mirror on the
//! value path is written after it, best effort (the document is authoritative). The
//! document keeps the newest [`HISTORY_KEEP`] history records and the metadata of the
//! labelled and newest [`VERSIONS_KEEP`] versions. Neither `_rotor` nor `_layout` can
//! collide with a tenant or key: rotor identifiers never start with `_`.
//!
//! # Check-and-set and fencing
//!
//! `put_version(v)` writes the value with `cas = v - 1`, so two writers of version `v`
//! cannot both win; the loser finds version `v` and succeeds only if it was written for its
//! own rotation (the idempotent replay), else gets [`StoreError::VersionConflict`].
//!
//! The state document's CAS index is remembered per secret from the last [`Store::journal`]
//! read or own write (the *fence*). A write whose fresh read of the document shows another
//! index — another replica, or this process resumed after someone else wrote — fails with
//! [`StoreError::Conflict`] before writing, and the write itself is CAS'd on that index.
//! Reads of versions and history do not move the fence, so an admin read cannot make a
//! stale writer current.
//!
//! # Runtime
//!
//! [`Store`] is async, and every request runs on the caller's runtime: the store owns no
//! runtime, thread or task. The HTTP client's pooled connections belong to the runtime
//! that opened them, so a store is opened and used on one runtime (`rotor run`'s, or the
//! one an offline command builds).
//!
//! # Errors and retries
//!
//! Transport errors, timeouts, 429, 412 and 5xx other than a sealed 503 are retried inside
//! the call with bounded exponential backoff (`max_attempts`, `retry_backoff`). 403 is
//! [`StoreError::PermissionDenied`], a sealed Vault or exhausted retries
//! [`StoreError::Unavailable`], a CAS mismatch [`StoreError::Conflict`]. Messages name the
//! Vault path and status; values never appear in errors or logs, and [`VaultStore`]'s
//! `Debug` shows neither token nor values.
//!
//! # Several nodes
//!
//! With `addresses`, the store talks to several nodes of one cluster, one at a time: the
//! active node when one is found (an OpenBao standby answers reads from a raft copy that
//! may lag, which the fence would take for another writer), else the node that answered
//! last. A node that gives no answer, a 5xx (sealed included) or a
//! redirect is left for the next one, and a request tries every node before it fails
//! (`retry_with` says how, and why redirects are not followed). A check-and-set write
//! retried after an attempt without a clear answer may meet its own earlier attempt;
//! `VaultStore::write_kv` tells that apart from another writer's.

pub mod config;
mod migrate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use vaultrs::api::kv2::requests::{
    ReadSecretRequest, SetSecretMetadataRequest, SetSecretRequestOptions,
};
use vaultrs::client::{VaultClient, VaultClientSettings};
use vaultrs::error::ClientError;

use super::crypto::MasterKey;
use super::labels::{apply_labels, new_version};
use super::{Commit, ReadValue, Record, Rev, Store, StoreError, check_record_name};
use crate::backoff::ExponentialBackoff;
use crate::domain::{HistoryRecord, Label, RotationId, SecretRef, VersionMeta, VersionNo};
use crate::generator::SecretValue;

/// History records kept in a secret's state document (newest ones).
pub const HISTORY_KEEP: usize = 200;

/// Version metadata kept in the state document: every labelled version, plus the newest
/// unlabelled ones up to this many in all. Vault itself keeps only `max_versions` values
/// (10 by default), so older metadata would describe values that are gone, and the
/// document (rewritten by every commit) would grow without bound.
pub const VERSIONS_KEEP: usize = 100;

/// Name of the state document under a secret's path.
const STATE_DOC: &str = "_rotor";

/// The folder below `path_prefix` that holds all the store writes, where no consumer
/// looks. It cannot collide with a tenant: rotor identifiers never start with `_`.
const STORE_DIR: &str = "_rotor";

/// The folder below the store's folder that holds records (`Store::record_*`):
/// `{path_prefix}/_rotor/_records/{namespace}/{id}`, the KV version being the revision.
const RECORDS_DIR: &str = "_records";

/// The data of one record's KV version: its bytes, or a tombstone. A delete writes a
/// tombstone (check-and-set, like every write) instead of deleting the path's metadata:
/// Vault has no check-and-set delete, and keeping the path keeps its version numbers, so a
/// revision is never handed out twice.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotor_record: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rotor_record_deleted: bool,
}

/// Format of the state document; a newer one is refused, not misread.
const DOC_FORMAT: u32 = 1;

/// Vault's error text for a check-and-set mismatch.
const CAS_MISMATCH: &str = "check-and-set parameter did not match";

/// Everything the Vault store needs to connect. Built by the config (`[store] type =
/// "vault"`) or by tests.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// `https://vault.vault.svc:8200`: the (first) node requests go to.
    pub address: String,
    /// Further nodes of the same Vault cluster (config `addresses`), tried in this order
    /// after `address` when a node fails; empty for a single server.
    pub other_addresses: Vec<String>,
    /// The KV v2 mount (`secret`).
    pub mount: String,
    /// Secret path = `{path_prefix}/{tenant}/{key}`; may be empty.
    pub path_prefix: String,
    /// Vault Enterprise namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM bundle of CAs to trust for an `https` address.
    pub ca_file: Option<PathBuf>,
    /// Key of the value fingerprints (see [`MasterKey::fingerprint`]); created if missing.
    pub master_key_file: PathBuf,
    /// Bound of one HTTP request.
    pub timeout: Duration,
    /// Attempts per request when Vault fails transiently (at least 1).
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, capped at 2 s.
    pub retry_backoff: Duration,
    pub auth: VaultAuth,
    /// The proxy requests go through, unless the address is loopback; none when `None`
    /// (never one from the environment).
    pub proxy: Option<crate::http_client::ProxyUrl>,
    /// `http://` to a host that is not loopback was allowed explicitly; `open` warns.
    pub allow_insecure_http: bool,
}

impl VaultSettings {
    /// Every node: `address`, then `other_addresses`.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str())
            .chain(self.other_addresses.iter().map(String::as_str))
    }

    fn node_count(&self) -> usize {
        1 + self.other_addresses.len()
    }

    /// Node `n` as logs show it: scheme, host and port (never userinfo).
    fn node_shown(&self, n: usize) -> String {
        let address = self.nodes().nth(n).unwrap_or(&self.address);
        match url::Url::parse(address) {
            Ok(u) => match u.port() {
                Some(port) => format!(
                    "{}://{}:{port}",
                    u.scheme(),
                    u.host_str().unwrap_or_default()
                ),
                None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default()),
            },
            Err(_) => "(not a URL)".to_owned(),
        }
    }
}

impl fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSettings")
            .field("address", &self.address)
            .field("other_addresses", &self.other_addresses)
            .field("mount", &self.mount)
            .field("path_prefix", &self.path_prefix)
            .field("namespace", &self.namespace)
            .field("auth", &self.auth)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// How the store gets its Vault token. Tokens are read from files, never from config text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// Kubernetes service-account login: `POST /v1/auth/{mount}/login` with the JWT in
    /// `token_file`; re-login when renewal fails.
    Kubernetes {
        role: String,
        token_file: PathBuf,
        mount: String,
    },
    /// A token in a file (written by Vault Agent, or by hand); re-read when renewal fails.
    Token { token_file: PathBuf },
}

/// What Vault said about the token in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLease {
    /// Remaining lifetime; zero for a token that never expires.
    pub ttl: Duration,
    pub renewable: bool,
}

impl TokenLease {
    /// When to renew: at two thirds of the lifetime, or never for a non-expiring token.
    pub fn renew_after(&self) -> Option<Duration> {
        (!self.ttl.is_zero()).then(|| self.ttl * 2 / 3)
    }
}

/// The authenticated connection, shared by the store and the token-renewal actor
/// (`actors::vault_token`), which swaps in new clients after a re-login.
pub struct VaultSession {
    settings: VaultSettings,
    /// One client per node ([`VaultSettings::nodes`], in that order), all holding the same
    /// token: a Vault cluster's nodes share their token store. Replaced together.
    clients: RwLock<Arc<[Arc<VaultClient>]>>,
    /// The node that answered last, where every request starts (see [`retry_with`]).
    node: AtomicUsize,
    /// Whether `node` was found to be the active node and has not failed since. OpenBao's
    /// standby nodes answer reads from their own copy of the raft log, which may lag the
    /// active node's: a state document read there right after a write shows the version
    /// before it, and the store's fence then refuses every write (measured on a 3-node
    /// raft cluster after its active node was killed: conflicts for up to two minutes
    /// while the store stayed on a standby). So requests go to the active node whenever
    /// one is found ([`VaultSession::find_active`]); a standby serves only while none is.
    on_active: AtomicBool,
    /// When `find_active` last asked the nodes, so that it asks at most every
    /// [`ACTIVE_PROBE_EVERY`].
    probed_at: Mutex<Option<std::time::Instant>>,
    /// The client for `sys/health` (no token).
    http: reqwest::Client,
}

/// How often, at most, the nodes are asked which one is active while the node in use is
/// not known to be.
const ACTIVE_PROBE_EVERY: Duration = Duration::from_millis(500);

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.settings.address)
            .field("node_in_use", &self.node_in_use())
            .finish_non_exhaustive()
    }
}

impl VaultSession {
    /// The client of node `n` (the first node's if `n` is out of range).
    fn client(&self, n: usize) -> Arc<VaultClient> {
        let clients = match self.clients.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        clients
            .get(n)
            .or(clients.first())
            .cloned()
            .unwrap_or_else(|| {
                // `login` builds one client per node and there is at least one node.
                unreachable!("a Vault session without clients")
            })
    }

    fn set_clients(&self, clients: Arc<[Arc<VaultClient>]>) {
        match self.clients.write() {
            Ok(mut c) => *c = clients,
            Err(poisoned) => *poisoned.into_inner() = clients,
        }
    }

    /// With several nodes and the node in use not known to be the active one: asks each
    /// node's `sys/health` (200 on the active node, 429 on a standby, 503 sealed), at most
    /// every [`ACTIVE_PROBE_EVERY`], and moves to the active node if one answers.
    async fn find_active(&self) {
        let nodes = self.settings.node_count();
        if nodes < 2 || self.on_active.load(Ordering::Acquire) {
            return;
        }
        {
            let mut last = match self.probed_at.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last.is_some_and(|t| t.elapsed() < ACTIVE_PROBE_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for (n, address) in self.settings.nodes().enumerate() {
            let url = format!("{}/v1/sys/health", address.trim_end_matches('/'));
            let active = matches!(self.http.get(&url).send().await, Ok(r) if r.status() == 200);
            if active {
                let was = self.node.swap(n, Ordering::AcqRel);
                self.on_active.store(true, Ordering::Release);
                if was != n {
                    tracing::info!(
                        node = %self.settings.node_shown(n),
                        "vault store: using the active node"
                    );
                }
                return;
            }
        }
    }

    /// [`retry_with`] on this session's nodes, starting at the active node when one is
    /// known or found.
    async fn retry<T, F, Fut>(&self, op: &str, path: &str, f: F) -> Result<T, Failure>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.find_active().await;
        let before = self.node.load(Ordering::Acquire);
        let result = retry_with(&self.settings, &self.node, op, path, f).await;
        if self.node.load(Ordering::Acquire) != before {
            // Moved on from a failing node: the next one may be a standby.
            self.on_active.store(false, Ordering::Release);
        }
        result
    }

    /// The node requests go to now (the one that answered last), as
    /// `scheme://host:port`.
    pub fn node_in_use(&self) -> String {
        self.settings
            .node_shown(self.node.load(Ordering::Relaxed) % self.settings.node_count())
    }

    /// Renews the token (`renew-self`, on the node in use and the others if it fails); if
    /// that fails, logs in again (Kubernetes) or re-reads the token file (token auth).
    pub async fn renew(&self) -> Result<TokenLease, StoreError> {
        let renewed = self
            .retry("renew", "auth/token/renew-self", |n| {
                let client = self.client(n);
                async move {
                    vaultrs::api::auth(&*client, RenewSelf)
                        .await
                        .map_err(classify)
                }
            })
            .await;
        match renewed {
            Ok(info) => Ok(TokenLease {
                ttl: Duration::from_secs(info.lease_duration),
                renewable: info.renewable,
            }),
            Err(failure) => {
                tracing::warn!(error = %failure.describe(), "vault token renewal failed; authenticating again");
                let (clients, lease) = login(&self.settings, &self.node).await?;
                self.set_clients(clients);
                Ok(lease)
            }
        }
    }
}

/// `POST /v1/auth/token/renew-self`. vaultrs 0.8's own `token::renew_self` writes its path
/// as `"\t/auth/token/renew-self"`, which reaches Vault as `/v1/%09/auth/...` and is not
/// routed; this endpoint is the same request with the path Vault expects.
struct RenewSelf;

impl rustify::endpoint::Endpoint for RenewSelf {
    type Response = ();
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        "auth/token/renew-self".to_owned()
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::POST
    }
}

/// A [`Store`] on Vault KV v2. See the module documentation.
pub struct VaultStore {
    session: Arc<VaultSession>,
    key: MasterKey,
    lease: TokenLease,
    /// CAS index of each secret's state document as this process last saw it (0: absent).
    fence: Mutex<HashMap<SecretRef, u64>>,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("settings", &self.session.settings)
            .finish_non_exhaustive()
    }
}

/// The state document of one secret (JSON in the data of `{path}/_rotor`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StateDoc {
    format: u32,
    /// Base64 of the opaque journal bytes.
    #[serde(default)]
    journal: Option<String>,
    /// Every version, oldest first; labels and stamps included.
    #[serde(default)]
    versions: Vec<VersionMeta>,
    /// Oldest first, at most [`HISTORY_KEEP`].
    #[serde(default)]
    history: Vec<HistoryRecord>,
    /// The highest leader term that committed this state (HA store fencing; 0: only
    /// processes without HA have). A commit at a lower term is refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    term: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The data of one value version.
#[derive(Serialize, Deserialize)]
struct ValueData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(default)]
    rotor_rotation: Option<String>,
}

impl fmt::Debug for ValueData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueData")
            .field("rotor_rotation", &self.rotor_rotation)
            .finish_non_exhaustive()
    }
}

impl VaultStore {
    /// Connects: reads (or creates) the fingerprint key, authenticates and looks the token
    /// up. Fails with a message naming the address and the reason.
    pub async fn open(settings: VaultSettings) -> Result<Self, StoreError> {
        for address in settings.nodes() {
            if settings.allow_insecure_http
                && let Ok(url) = url::Url::parse(address)
                && url.scheme() == "http"
                && !crate::http_client::url_is_loopback(&url)
            {
                // The host only: an address never holds a secret (the config refuses a path
                // and query), but the warning needs no more than where the tokens travel.
                tracing::warn!(
                    host = url.host_str().unwrap_or_default(),
                    "the Vault store uses plain http to a host that is not loopback (allow_insecure_http = true): tokens and secret values travel unencrypted"
                );
            }
        }
        Self::open_with(settings, migrate::Budget::unlimited()).await
    }

    /// [`VaultStore::open`] for one replica of several (`[ha]`): the fingerprint key must
    /// exist already (every replica reads the same one from a shared Kubernetes Secret;
    /// keys made by each replica would fingerprint the same value differently), so a
    /// missing key file is an error here, never created.
    pub async fn open_shared_key(settings: VaultSettings) -> Result<Self, StoreError> {
        MasterKey::load(&settings.master_key_file)?;
        Self::open(settings).await
    }

    /// [`VaultStore::open`] whose layout migration stops, as a crash would, before its
    /// `writes + 1`th write: an error if it had more to do, else the open store. Lets a
    /// test prove that a migration cut short anywhere completes when opened again.
    #[cfg(feature = "test-util")]
    pub async fn open_migrating_at_most(
        settings: VaultSettings,
        writes: usize,
    ) -> Result<Self, StoreError> {
        Self::open_with(settings, migrate::Budget::at_most(writes)).await
    }

    async fn open_with(
        settings: VaultSettings,
        mut budget: migrate::Budget,
    ) -> Result<Self, StoreError> {
        let key = MasterKey::load_or_create(&settings.master_key_file)?;
        let node = AtomicUsize::new(0);
        let (clients, lease) = login(&settings, &node).await?;
        let http = crate::http_client::client(
            settings.timeout,
            settings.ca_file.as_deref(),
            settings.proxy.as_ref(),
        )
        .map_err(|e| StoreError::Open {
            path: settings.address.clone(),
            source: format!("cannot build the Vault client: {e}").into(),
        })?;
        let store = VaultStore {
            session: Arc::new(VaultSession {
                settings,
                clients: RwLock::new(clients),
                node,
                on_active: AtomicBool::new(false),
                probed_at: Mutex::new(None),
                http,
            }),
            key,
            lease,
            fence: Mutex::new(HashMap::new()),
        };
        store.ensure_layout(&mut budget).await?;
        Ok(store)
    }

    /// The connection, for the token-renewal actor.
    pub fn session(&self) -> Arc<VaultSession> {
        self.session.clone()
    }

    /// The node requests go to now, as `scheme://host:port` (see [`VaultSession::node_in_use`]).
    pub fn node_in_use(&self) -> String {
        self.session.node_in_use()
    }

    /// The token's lease as found at open.
    pub fn lease(&self) -> TokenLease {
        self.lease
    }

    /// `rest` below `path_prefix` (without mount).
    fn under_prefix(&self, rest: &str) -> String {
        let prefix = self.session.settings.path_prefix.trim_matches('/');
        if prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{prefix}/{rest}")
        }
    }

    /// The folder holding everything the store writes: `{path_prefix}/_rotor`.
    fn store_dir(&self) -> String {
        self.under_prefix(STORE_DIR)
    }

    /// KV path of a secret's values (without mount).
    fn value_path(&self, secret: &SecretRef) -> String {
        format!("{}/{}/{}", self.store_dir(), secret.tenant(), secret.key())
    }

    fn doc_path(&self, secret: &SecretRef) -> String {
        format!("{}/{STATE_DOC}", self.value_path(secret))
    }

    /// `mount/data/path` for messages.
    fn shown(&self, path: &str) -> String {
        format!("{}/data/{path}", self.session.settings.mount)
    }

    fn fence_of(&self, secret: &SecretRef) -> Option<u64> {
        self.fence.lock().map_or_else(
            |p| p.into_inner().get(secret).copied(),
            |f| f.get(secret).copied(),
        )
    }

    fn set_fence(&self, secret: &SecretRef, index: u64) {
        match self.fence.lock() {
            Ok(mut f) => f.insert(secret.clone(), index),
            Err(p) => p.into_inner().insert(secret.clone(), index),
        };
    }

    /// Reads the state document and its CAS index (0 and an empty document if absent).
    async fn read_doc(&self, secret: &SecretRef) -> Result<(StateDoc, u64), StoreError> {
        let path = self.doc_path(secret);
        let path = path.as_str();
        let found = self
            .request("read", &self.shown(path), |client, mount| async move {
                let req = ReadSecretRequest::builder()
                    .mount(mount)
                    .path(path)
                    .build()
                    .map_err(|e| Failure::Other(e.to_string()))?;
                vaultrs::api::exec_with_result(&*client, req)
                    .await
                    .map_err(classify)
            })
            .await;
        let resp = match found {
            Ok(resp) => resp,
            Err(Failure::Status(404, _)) => return Ok((StateDoc::default(), 0)),
            Err(f) => return Err(f.into_store_error(&self.shown(&self.doc_path(secret)))),
        };
        let doc: StateDoc = serde_json::from_value(resp.data).map_err(|e| {
            StoreError::Backend(format!(
                "state document {} is not rotor's: {e}",
                self.shown(&self.doc_path(secret))
            ))
        })?;
        if doc.format > DOC_FORMAT {
            return Err(StoreError::Backend(format!(
                "state document {} has format {}, newer than this rotor's {DOC_FORMAT}; use a matching rotor release",
                self.shown(&self.doc_path(secret)),
                doc.format
            )));
        }
        Ok((doc, resp.metadata.version))
    }

    /// Reads the document for a write, refusing if it moved past this process's fence.
    async fn read_doc_for_write(&self, secret: &SecretRef) -> Result<(StateDoc, u64), StoreError> {
        let (doc, index) = self.read_doc(secret).await?;
        if let Some(fence) = self.fence_of(secret)
            && fence != index
        {
            return Err(StoreError::Conflict {
                path: self.shown(&self.doc_path(secret)),
            });
        }
        Ok((doc, index))
    }

    /// CAS-writes the document over `index`. A CAS mismatch whose fresh read shows exactly
    /// this document is our own earlier attempt that landed (a retried timeout): success.
    async fn write_doc(
        &self,
        secret: &SecretRef,
        doc: &StateDoc,
        index: u64,
    ) -> Result<(), StoreError> {
        let path = self.doc_path(secret);
        let shown = self.shown(&path);
        let data = serde_json::to_value(doc)
            .map_err(|e| StoreError::Backend(format!("encode state document {shown}: {e}")))?;
        let cas = cas_index(index, &shown)?;
        match self.write_kv(&path, &data, cas, &shown).await {
            Ok(version) => {
                self.set_fence(secret, version);
                Ok(())
            }
            Err(StoreError::Conflict { path }) => match self.read_doc(secret).await? {
                (found, now) if &found == doc => {
                    self.set_fence(secret, now);
                    Ok(())
                }
                _ => Err(StoreError::Conflict { path }),
            },
            Err(e) => Err(e),
        }
    }

    /// Reads one value version's data; `None` if Vault has no such (live) version.
    async fn read_version_data(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<Option<ValueData>, StoreError> {
        let path = self.value_path(secret);
        let shown = format!("{}?version={version}", self.shown(&path));
        let path = path.as_str();
        let found = self
            .request("read", &shown, |client, mount| async move {
                vaultrs::kv2::read_version::<ValueData>(&*client, mount, path, version)
                    .await
                    .map_err(classify)
            })
            .await;
        match found {
            Ok(data) => Ok(Some(data)),
            // A deleted or destroyed version reads as 404 with empty data.
            Err(Failure::Status(404, _)) | Err(Failure::EmptyData) => Ok(None),
            Err(f) => Err(f.into_store_error(&shown)),
        }
    }

    /// Writes the label mirror into the value path's custom metadata (best effort).
    async fn mirror_labels(&self, secret: &SecretRef, versions: &[VersionMeta]) {
        let mut custom = HashMap::new();
        for m in versions {
            for l in &m.labels {
                custom.insert(format!("rotor_{}", l.as_str()), m.version.to_string());
            }
        }
        let path = self.value_path(secret);
        let shown = format!("{}/metadata/{path}", self.session.settings.mount);
        let path = path.as_str();
        let result = self
            .request("write metadata", &shown, |client, mount| {
                let mut req = SetSecretMetadataRequest::builder();
                req.cas_required(true).custom_metadata(custom.clone());
                async move {
                    vaultrs::kv2::set_metadata(&*client, mount, path, Some(&mut req))
                        .await
                        .map_err(classify)
                }
            })
            .await;
        if let Err(e) = result.map_err(|f| f.into_store_error(&shown)) {
            tracing::warn!(secret = %secret, path = %shown, error = %e, "could not mirror labels into Vault custom metadata; the state document is authoritative and the next commit tries again");
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>, StoreError> {
        let shown = format!("{}/metadata/{path}", self.session.settings.mount);
        let found = self
            .request("list", &shown, |client, mount| async move {
                vaultrs::kv2::list(&*client, mount, path)
                    .await
                    .map_err(classify)
            })
            .await;
        match found {
            Ok(keys) => Ok(keys),
            Err(Failure::Status(404, _)) => Ok(Vec::new()),
            Err(f) => Err(f.into_store_error(&shown)),
        }
    }

    /// KV path (without mount) of the record `ns/id`.
    fn record_path(&self, ns: &str, id: &str) -> String {
        format!("{}/{RECORDS_DIR}/{ns}/{id}", self.store_dir())
    }

    /// The latest KV version of a record path: its data and version, `None` if the path
    /// has no version at all.
    async fn read_record(&self, path: &str) -> Result<Option<(RecordData, u64)>, StoreError> {
        let shown = self.shown(path);
        let found = self
            .request("read", &shown, |client, mount| async move {
                let req = ReadSecretRequest::builder()
                    .mount(mount)
                    .path(path)
                    .build()
                    .map_err(|e| Failure::Other(e.to_string()))?;
                vaultrs::api::exec_with_result(&*client, req)
                    .await
                    .map_err(classify)
            })
            .await;
        let resp = match found {
            Ok(resp) => resp,
            Err(Failure::Status(404, _)) | Err(Failure::EmptyData) => return Ok(None),
            Err(f) => return Err(f.into_store_error(&shown)),
        };
        let data: RecordData = serde_json::from_value(resp.data)
            .map_err(|e| StoreError::Backend(format!("record {shown} is not rotor's: {e}")))?;
        Ok(Some((data, resp.metadata.version)))
    }

    /// A record's bytes, `None` for a tombstone.
    fn record_bytes(&self, path: &str, data: &RecordData) -> Result<Option<Vec<u8>>, StoreError> {
        match (&data.rotor_record, data.rotor_record_deleted) {
            (_, true) | (None, false) => Ok(None),
            (Some(b64), false) => B64.decode(b64).map(Some).map_err(|e| {
                StoreError::Backend(format!("record {} is not base64: {e}", self.shown(path)))
            }),
        }
    }

    /// Writes `data` as the next KV version of `path`, check-and-set on `cas`; returns the
    /// version Vault gave it.
    ///
    /// A write is sent again when an attempt got no clear answer (a timeout, a reset
    /// connection, a 5xx, a node that died or stepped down mid-request), and such an attempt
    /// may have been applied: the retry then meets a check-and-set mismatch caused by this
    /// very write. A mismatch after an earlier attempt therefore means "maybe applied", and
    /// is settled by reading: a write checked on `cas` can only have created version
    /// `cas + 1`, so if that version holds exactly the data sent, the write is this one (or
    /// one that left the same state) and succeeds; if it holds anything else or is absent,
    /// none of the attempts applied and the mismatch is a [`StoreError::Conflict`].
    async fn write_kv<T: Serialize + Sync>(
        &self,
        path: &str,
        data: &T,
        cas: u32,
        shown: &str,
    ) -> Result<u64, StoreError> {
        let attempts = AtomicU32::new(0);
        let written = self
            .request("write", shown, |client, mount| {
                attempts.fetch_add(1, Ordering::Relaxed);
                async move {
                    vaultrs::kv2::set_with_options(
                        &*client,
                        mount,
                        path,
                        data,
                        SetSecretRequestOptions { cas },
                    )
                    .await
                    .map_err(classify)
                }
            })
            .await;
        match written {
            Ok(meta) => Ok(meta.version),
            Err(f) if f.is_cas_mismatch() && attempts.load(Ordering::Relaxed) > 1 => {
                self.settle_retried_write(path, data, cas, shown).await
            }
            Err(f) => Err(f.into_store_error(shown)),
        }
    }

    /// Whether a retried check-and-set write on `cas` applied (see [`Self::write_kv`]):
    /// its version if version `cas + 1` of `path` holds exactly `data`, else a conflict.
    async fn settle_retried_write<T: Serialize + Sync>(
        &self,
        path: &str,
        data: &T,
        cas: u32,
        shown: &str,
    ) -> Result<u64, StoreError> {
        let sent = serde_json::to_value(data)
            .map_err(|e| StoreError::Backend(format!("encode the data for {shown}: {e}")))?;
        let version = u64::from(cas) + 1;
        let found = self
            .request("read", shown, |client, mount| async move {
                vaultrs::kv2::read_version::<serde_json::Value>(&*client, mount, path, version)
                    .await
                    .map_err(classify)
            })
            .await;
        match found {
            Ok(data) if data == sent => {
                tracing::debug!(path = %shown, version, "a retried vault write had landed on an earlier attempt");
                Ok(version)
            }
            Ok(_) | Err(Failure::Status(404, _)) | Err(Failure::EmptyData) => {
                Err(StoreError::Conflict {
                    path: shown.to_owned(),
                })
            }
            Err(f) => Err(f.into_store_error(shown)),
        }
    }

    /// One Vault request with the store's retries: `call` gets the current client (a
    /// renewal may have replaced it since the last attempt) and the KV mount.
    async fn request<'s, T, F, Fut>(&'s self, op: &str, shown: &str, call: F) -> Result<T, Failure>
    where
        F: Fn(Arc<VaultClient>, &'s str) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mount = self.session.settings.mount.as_str();
        self.session
            .retry(op, shown, |n| call(self.session.client(n), mount))
            .await
    }
}

#[async_trait::async_trait]
impl ReadValue for VaultStore {
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError> {
        let found = self.read_version_data(secret, version).await?;
        let no_such = || StoreError::NoSuchVersion {
            secret: secret.clone(),
            version,
        };
        let data = found.ok_or_else(no_such)?;
        // A version rotor did not write (a human's `vault kv put`) is not a rotor version.
        if data.rotor_rotation.is_none() {
            return Err(no_such());
        }
        decode_value(&data)
            .map(SecretValue::from_bytes)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "{} version {version} holds no readable value",
                    self.shown(&self.value_path(secret))
                ))
            })
    }

    async fn current_version(&self, secret: &SecretRef) -> Result<Option<VersionNo>, StoreError> {
        // The labels are in the state document; reading it moves no check-and-set fence.
        Ok(super::labels::current(
            &self.read_doc(secret).await?.0.versions,
        ))
    }
}

#[async_trait::async_trait]
impl Store for VaultStore {
    fn fingerprint(&self, value: &[u8]) -> String {
        self.key.fingerprint(value)
    }

    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (mut doc, index) = self.read_doc_for_write(secret).await?;
        if let Some(meta) = doc.versions.iter().find(|m| m.version == version) {
            return if meta.rotation == rotation {
                // A replay after a crash: the first value stays, nothing is written.
                self.set_fence(secret, index);
                Ok(())
            } else {
                Err(StoreError::VersionConflict {
                    secret: secret.clone(),
                    version,
                    existing: meta.rotation,
                    requested: rotation,
                })
            };
        }

        let path = self.value_path(secret);
        let shown = self.shown(&path);
        let data = match std::str::from_utf8(value.expose()) {
            Ok(text) => ValueData {
                value: Some(text.to_owned()),
                value_base64: None,
                rotor_rotation: Some(rotation.0.to_string()),
            },
            Err(_) => ValueData {
                value: None,
                value_base64: Some(B64.encode(value.expose())),
                rotor_rotation: Some(rotation.0.to_string()),
            },
        };
        let cas = cas_index(version.saturating_sub(1), &shown)?;
        let written = self.write_kv(&path, &data, cas, &shown).await;
        let fingerprint = match written {
            Ok(_) => self.key.fingerprint(value.expose()),
            Err(StoreError::Conflict { path }) => {
                // Version `version` may exist already: written by this rotation before a
                // crash (or by a retried request that landed), which is a replay; by another
                // rotation, which is a conflict; or not at all (Vault is at another
                // version: someone else writes this path).
                match self.read_version_data(secret, version).await? {
                    Some(found) if found.rotor_rotation == Some(rotation.0.to_string()) => {
                        let stored = decode_value(&found).ok_or_else(|| {
                            StoreError::Backend(format!(
                                "{path} version {version} holds no rotor value"
                            ))
                        })?;
                        self.key.fingerprint(&stored)
                    }
                    Some(found) => {
                        return Err(match found.rotor_rotation.and_then(|r| r.parse().ok()) {
                            Some(existing) => StoreError::VersionConflict {
                                secret: secret.clone(),
                                version,
                                existing: RotationId(existing),
                                requested: rotation,
                            },
                            None => StoreError::Conflict { path },
                        });
                    }
                    None => return Err(StoreError::Conflict { path }),
                }
            }
            Err(e) => return Err(e),
        };

        doc.format = DOC_FORMAT;
        doc.versions
            .push(new_version(version, rotation, now, fingerprint));
        doc.versions.sort_by_key(|m| m.version);
        prune_versions(&mut doc.versions);
        self.write_doc(secret, &doc, index).await
    }

    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError> {
        self.commit_at_term(secret, commit, 0).await
    }

    async fn commit_at_term(
        &self,
        secret: &SecretRef,
        commit: Commit<'_>,
        term: u64,
    ) -> Result<(), StoreError> {
        let (mut doc, index) = self.read_doc_for_write(secret).await?;
        // Store fencing, on top of the check-and-set on `index`: a leader deposed while it
        // was frozen may have re-read the document (so its CAS would pass) but never holds
        // the newer leader's term. Term 0 (no HA) neither checks nor records.
        if term > 0 {
            if doc.term > term {
                return Err(StoreError::Deposed {
                    path: self.shown(&self.doc_path(secret)),
                    term,
                    recorded: doc.term,
                });
            }
            doc.term = term;
        }
        let labels_before = label_set(&doc.versions);
        apply_labels(secret, &mut doc.versions, commit.labels, commit.now)?;
        doc.format = DOC_FORMAT;
        doc.journal = Some(B64.encode(commit.journal));
        if let Some(record) = commit.history {
            // Replaying the commit that appended this record must not append it twice.
            if doc.history.last() != Some(record) {
                doc.history.push(record.clone());
            }
            let excess = doc.history.len().saturating_sub(HISTORY_KEEP);
            doc.history.drain(..excess);
        }
        self.write_doc(secret, &doc, index).await?;
        if label_set(&doc.versions) != labels_before {
            self.mirror_labels(secret, &doc.versions).await;
        }
        Ok(())
    }

    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        let (doc, index) = self.read_doc(secret).await?;
        // Reading the journal is how a writer learns the state it continues from: its
        // writes are fenced on this index from now on.
        self.set_fence(secret, index);
        doc.journal
            .map(|j| {
                B64.decode(j).map_err(|e| {
                    StoreError::Backend(format!(
                        "journal in {} is not base64: {e}",
                        self.shown(&self.doc_path(secret))
                    ))
                })
            })
            .transpose()
    }

    async fn versions(&self, secret: &SecretRef) -> Result<Vec<VersionMeta>, StoreError> {
        Ok(self.read_doc(secret).await?.0.versions)
    }

    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let (doc, _) = self.read_doc(secret).await?;
        Ok(doc.history.into_iter().rev().take(limit).collect())
    }

    async fn secrets(&self) -> Result<Vec<SecretRef>, StoreError> {
        // LIST prefix/_rotor/ → tenants (and the `_layout` marker, not a folder); LIST
        // prefix/_rotor/tenant/ → `key` (values) and `key/` (a folder holding `_rotor`). A
        // secret with a folder may have a journal; the document says.
        let dir = self.store_dir();
        let mut out = Vec::new();
        for tenant in self.list(&format!("{dir}/")).await? {
            // `_records/` (and any other `_` folder) is the store's own, never a tenant.
            let Some(tenant) = tenant.strip_suffix('/').filter(|t| !t.starts_with('_')) else {
                continue;
            };
            for key in self.list(&format!("{dir}/{tenant}/")).await? {
                let Some(key) = key.strip_suffix('/') else {
                    continue;
                };
                let Ok(secret) = SecretRef::new(tenant, key) else {
                    continue;
                };
                if self.read_doc(&secret).await?.0.journal.is_some() {
                    out.push(secret);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn record_get(&self, ns: &str, id: &str) -> Result<Option<(Vec<u8>, Rev)>, StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let path = self.record_path(ns, id);
        let Some((data, version)) = self.read_record(&path).await? else {
            return Ok(None);
        };
        Ok(self
            .record_bytes(&path, &data)?
            .map(|bytes| (bytes, version)))
    }

    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<Rev>,
    ) -> Result<Rev, StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let path = self.record_path(ns, id);
        let shown = self.shown(&path);
        let cas = match expected {
            Some(rev) => rev,
            // Absent: no version at all (check-and-set 0), or a tombstone, whose version the
            // write must follow; a write that lands in between makes the CAS fail.
            None => match self.read_record(&path).await? {
                None => 0,
                Some((data, version)) => match self.record_bytes(&path, &data)? {
                    None => version,
                    Some(_) => return Err(StoreError::Conflict { path: shown }),
                },
            },
        };
        let data = RecordData {
            rotor_record: Some(B64.encode(bytes)),
            rotor_record_deleted: false,
        };
        // A revision from the caller is always a live record's: a tombstone's version is
        // handed to no one, so a CAS on `rev` cannot land on a deleted record.
        self.write_kv(&path, &data, cas_index(cas, &shown)?, &shown)
            .await
    }

    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let path = self.record_path(ns, id);
        let shown = self.shown(&path);
        let Some((data, version)) = self.read_record(&path).await? else {
            return Ok(());
        };
        if self.record_bytes(&path, &data)?.is_none() {
            return Ok(());
        }
        if version != expected {
            return Err(StoreError::Conflict { path: shown });
        }
        let tombstone = RecordData {
            rotor_record: None,
            rotor_record_deleted: true,
        };
        self.write_kv(&path, &tombstone, cas_index(expected, &shown)?, &shown)
            .await
            .map(|_| ())
    }

    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError> {
        check_record_name("namespace", ns)?;
        let dir = format!("{}/{RECORDS_DIR}/{ns}/", self.store_dir());
        let mut out = Vec::new();
        for id in self.list(&dir).await? {
            // A folder is no record, and a name rotor would not write is not rotor's.
            if id.ends_with('/') || check_record_name("id", &id).is_err() {
                continue;
            }
            let path = self.record_path(ns, &id);
            if let Some((data, rev)) = self.read_record(&path).await?
                && let Some(bytes) = self.record_bytes(&path, &data)?
            {
                out.push(Record { id, bytes, rev });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Drops the oldest unlabelled version metadata beyond [`VERSIONS_KEEP`].
fn prune_versions(versions: &mut Vec<VersionMeta>) {
    let mut excess = versions.len().saturating_sub(VERSIONS_KEEP);
    versions.retain(|m| {
        if excess > 0 && m.labels.is_empty() {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

fn label_set(versions: &[VersionMeta]) -> BTreeMap<Label, VersionNo> {
    versions
        .iter()
        .flat_map(|m| m.labels.iter().map(move |l| (*l, m.version)))
        .collect()
}

fn decode_value(data: &ValueData) -> Option<Vec<u8>> {
    match (&data.value, &data.value_base64) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, Some(b64)) => B64.decode(b64).ok(),
        (None, None) => None,
    }
}

/// vaultrs takes the CAS index as `u32`.
fn cas_index(index: u64, shown: &str) -> Result<u32, StoreError> {
    u32::try_from(index).map_err(|_| {
        StoreError::Backend(format!(
            "{shown}: version {index} is beyond what check-and-set can address"
        ))
    })
}

/// Authenticates per `settings.auth` on the node `node` names (moving on as requests do);
/// returns one client per node, all holding the new token, and the token's lease.
async fn login(
    settings: &VaultSettings,
    node: &AtomicUsize,
) -> Result<(Arc<[Arc<VaultClient>]>, TokenLease), StoreError> {
    let urls = settings
        .nodes()
        .map(|address| {
            let address = address.trim_end_matches('/');
            url::Url::parse(address).map_err(|e| StoreError::Open {
                path: address.to_owned(),
                source: format!("not a URL: {e}").into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // vaultrs would build its own reqwest client, which reads HTTP_PROXY and its kin from
    // the environment; rotor's client reads none and uses only the configured `proxy`. It
    // follows no redirect either: a standby's redirect is answered by trying the next
    // configured node (see `retry_with`), so the token goes to configured nodes only.
    let http = crate::http_client::client(
        settings.timeout,
        settings.ca_file.as_deref(),
        settings.proxy.as_ref(),
    )
    .map_err(|e| StoreError::Open {
        path: settings.address.clone(),
        source: format!("cannot build the Vault client: {e}").into(),
    })?;
    let new_clients = |token: &str| {
        urls.iter()
            .map(|url| {
                VaultClient::new(VaultClientSettings {
                    address: url.clone(),
                    ca_certs: settings
                        .ca_file
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                    identity: None,
                    timeout: Some(settings.timeout),
                    token: token.to_owned(),
                    verify: true,
                    version: 1,
                    wrapping: false,
                    namespace: settings.namespace.clone(),
                    proxy: None,
                })
                .map(|mut client| {
                    client.http =
                        rustify::clients::reqwest::Client::new(url.as_str(), http.clone());
                    client
                })
                .map_err(|e| StoreError::Open {
                    path: url.to_string(),
                    source: format!("cannot build the Vault client: {}", error_text(&e)).into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let read_file = |path: &PathBuf| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: format!("cannot read the Vault auth token file: {e}").into(),
            })
            .and_then(|s| {
                if s.is_empty() {
                    Err(StoreError::Open {
                        path: path.display().to_string(),
                        source: "the Vault auth token file is empty".into(),
                    })
                } else {
                    Ok(s)
                }
            })
    };
    let share = |clients: Vec<VaultClient>| -> Arc<[Arc<VaultClient>]> {
        clients.into_iter().map(Arc::new).collect()
    };
    match &settings.auth {
        VaultAuth::Kubernetes {
            role,
            token_file,
            mount,
        } => {
            let jwt = read_file(token_file)?;
            let mut clients = new_clients("")?;
            let shown = format!("auth/{mount}/login (role {role})");
            let session_less = client_retry(settings, node, "login", &shown, |n| {
                vaultrs::auth::kubernetes::login(&clients[n], mount, role, &jwt)
            })
            .await;
            let info = session_less.map_err(|f| f.into_store_error(&shown))?;
            for client in &mut clients {
                vaultrs::client::Client::set_token(client, &info.client_token);
            }
            Ok((
                share(clients),
                TokenLease {
                    ttl: Duration::from_secs(info.lease_duration),
                    renewable: info.renewable,
                },
            ))
        }
        VaultAuth::Token { token_file } => {
            let token = read_file(token_file)?;
            let clients = new_clients(&token)?;
            let shown = "auth/token/lookup-self";
            let info = client_retry(settings, node, "token lookup", shown, |n| {
                vaultrs::token::lookup_self(&clients[n])
            })
            .await
            .map_err(|f| f.into_store_error(shown))?;
            Ok((
                share(clients),
                TokenLease {
                    ttl: Duration::from_secs(info.ttl),
                    renewable: info.renewable.unwrap_or(false),
                },
            ))
        }
    }
}

/// Why a Vault request failed, classified for retries and messages.
#[derive(Debug)]
enum Failure {
    /// An HTTP status with Vault's `errors` list.
    Status(u16, Vec<String>),
    /// The request never got an answer (connect error, reset, timeout).
    Transport {
        message: String,
        timeout: bool,
    },
    /// 200 with an empty `data` (Vault's answer for a deleted version).
    EmptyData,
    Other(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Status(code, errors) => match code {
                429 | 412 | 500 | 502 | 504 => true,
                503 => !is_sealed(errors),
                _ => false,
            },
            Failure::Transport { .. } => true,
            Failure::EmptyData | Failure::Other(_) => false,
        }
    }

    /// Whether the node that answered is not (or no longer) the active node of a cluster,
    /// or gave no answer: another node may serve the request. A 4xx is Vault's answer
    /// about the request itself, which every node would give.
    fn node_down(&self) -> bool {
        match self {
            Failure::Status(code, _) => (300..400).contains(code) || *code >= 500,
            Failure::Transport { .. } => true,
            Failure::EmptyData | Failure::Other(_) => false,
        }
    }

    /// Vault's answer to a check-and-set write whose index is not the path's version.
    fn is_cas_mismatch(&self) -> bool {
        matches!(self, Failure::Status(400, errors) if errors.iter().any(|e| e.contains(CAS_MISMATCH)))
    }

    fn describe(&self) -> String {
        match self {
            Failure::Status(code, errors) if errors.is_empty() => format!("HTTP {code}"),
            Failure::Status(code, errors) => format!("HTTP {code}: {}", errors.join("; ")),
            Failure::Transport { message, .. } => message.clone(),
            Failure::EmptyData => "empty response data".to_owned(),
            Failure::Other(m) => m.clone(),
        }
    }

    fn into_store_error(self, path: &str) -> StoreError {
        let path = path.to_owned();
        match self {
            Failure::Status(403, _) => StoreError::PermissionDenied { path },
            Failure::Status(400, errors) if errors.iter().any(|e| e.contains(CAS_MISMATCH)) => {
                StoreError::Conflict { path }
            }
            Failure::Status(503, errors) if is_sealed(&errors) => StoreError::Unavailable {
                path,
                reason: "Vault is sealed (HTTP 503); unseal it".to_owned(),
            },
            Failure::Status(404, _) => StoreError::Backend(format!(
                "{path}: not found (HTTP 404; is the KV v2 mount enabled and the path right?)"
            )),
            f @ Failure::Status(..) if f.retryable() => StoreError::Unavailable {
                path,
                reason: f.describe(),
            },
            Failure::Transport { message, timeout } => StoreError::Unavailable {
                path,
                reason: if timeout {
                    format!("timed out: {message}")
                } else {
                    message
                },
            },
            f => StoreError::Backend(format!("vault {path}: {}", f.describe())),
        }
    }
}

fn is_sealed(errors: &[String]) -> bool {
    errors
        .iter()
        .any(|e| e.to_ascii_lowercase().contains("sealed"))
}

/// Classifies a vaultrs error. Never formats response bodies (a read's body holds a value).
fn classify(e: ClientError) -> Failure {
    match e {
        ClientError::APIError { code, errors } => Failure::Status(code, errors),
        ClientError::ResponseDataEmptyError => Failure::EmptyData,
        ClientError::RestClientError { source } => rest_failure(&source),
        other => Failure::Other(error_text(&other)),
    }
}

fn rest_failure(e: &rustify::errors::ClientError) -> Failure {
    use rustify::errors::ClientError as R;
    match e {
        R::ServerResponseError { code, .. } => Failure::Status(*code, Vec::new()),
        R::RequestError {
            source,
            url,
            method,
        } => {
            let chain = format!("{source:#}");
            let timeout = chain.contains("timed out") || chain.contains("timeout");
            Failure::Transport {
                message: format!("{method} {url}: {chain}"),
                timeout,
            }
        }
        R::ResponseError { source } => Failure::Transport {
            message: format!("{source:#}"),
            timeout: format!("{source:#}").contains("timed out"),
        },
        // Parse errors may quote the body; say only what kind of error it was.
        R::ResponseParseError { .. } | R::ResponseConversionError { .. } => {
            Failure::Other("unexpected response from Vault (not the expected JSON)".to_owned())
        }
        other => Failure::Other(other.to_string()),
    }
}

/// Top-level message of a vaultrs error plus its source chain, without Debug output.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn client_retry<T, F, Fut>(
    settings: &VaultSettings,
    node: &AtomicUsize,
    op: &str,
    path: &str,
    mut f: F,
) -> Result<T, Failure>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    retry_with(settings, node, op, path, |n| {
        let fut = f(n);
        async move { fut.await.map_err(classify) }
    })
    .await
}

/// Runs `f` on a node until it succeeds, fails for good, or has been tried
/// `max(max_attempts, number of nodes)` times: every node gets a chance.
///
/// `node` is the node that answered last; `f(n)` sends the request to node `n`. When the
/// node does not answer as an active node would (a connection error or timeout, a 5xx,
/// a sealed node's 503, a standby's redirect) and there are other nodes, the next node
/// takes over for this and every later request, each node once in a row without a wait,
/// then a wait of the store's backoff before the next round. A single server's transient
/// failures (the same, without a sealed 503 or a redirect, plus 429 and 412) are retried
/// on it after `retry_backoff * 2^n` plus up to 25% jitter, capped at 2 s.
///
/// A redirect is never followed: its `Location` is the active node's `api_addr`, which
/// may be an address rotor was not configured with, and the token must go to configured
/// nodes only; trying the next configured node reaches the active one as well.
///
/// Every request rotor sends may be sent twice: reads, lists and metadata writes are
/// idempotent, a login gets another token, and a check-and-set write cannot apply twice;
/// what a retried check-and-set write's mismatch means is [`VaultStore::write_kv`]'s to
/// tell.
async fn retry_with<T, F, Fut>(
    settings: &VaultSettings,
    node: &AtomicUsize,
    op: &str,
    path: &str,
    mut f: F,
) -> Result<T, Failure>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let nodes = settings.node_count();
    let attempts = settings
        .max_attempts
        .max(1)
        .max(u32::try_from(nodes).unwrap_or(u32::MAX));
    let cap = Duration::from_secs(2);
    // The minimum is clamped to the cap, so the constructor cannot refuse it.
    let backoff = ExponentialBackoff::new(settings.retry_backoff.min(cap), cap, 0.25).ok();
    let delay = |n: u32| {
        let draw = rand::thread_rng().gen_range(0.0..1.0);
        backoff.map_or(cap, |b| b.delay(n, draw))
    };
    let mut attempt = 1;
    // Nodes tried in a row since the last wait, and the waits between rounds so far.
    let mut in_row = 1;
    let mut rounds = 0;
    loop {
        let at = node.load(Ordering::Acquire) % nodes;
        match f(at).await {
            Ok(v) => return Ok(v),
            Err(e) if nodes > 1 && e.node_down() && attempt < attempts => {
                let next = (at + 1) % nodes;
                // Concurrent requests may all see the node fail: the first one moves on,
                // the others follow it rather than skipping a node.
                if node
                    .compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    tracing::warn!(
                        op,
                        path,
                        failed = %settings.node_shown(at),
                        next = %settings.node_shown(next),
                        error = %e.describe(),
                        "vault node did not answer as the active node; moving to the next node"
                    );
                }
                if in_row < nodes {
                    in_row += 1;
                } else {
                    rounds += 1;
                    in_row = 1;
                    tokio::time::sleep(delay(rounds)).await;
                }
                attempt += 1;
            }
            Err(e) if e.retryable() && attempt < attempts => {
                tracing::debug!(op, path, attempt, error = %e.describe(), "vault request failed; retrying");
                tokio::time::sleep(delay(attempt)).await;
                attempt += 1;
            }
            Err(Failure::Transport { message, timeout }) if attempts > 1 => {
                return Err(Failure::Transport {
                    message: format!("{message} (after {attempts} attempts)"),
                    timeout,
                });
            }
            Err(Failure::Status(code, mut errors)) if attempts > 1 && code >= 500 => {
                if !is_sealed(&errors) {
                    errors.push(format!("after {attempts} attempts"));
                }
                return Err(Failure::Status(code, errors));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_of_the_ttl_and_never_for_eternal_tokens() {
        let lease = TokenLease {
            ttl: Duration::from_secs(3600),
            renewable: true,
        };
        assert_eq!(lease.renew_after(), Some(Duration::from_secs(2400)));
        let eternal = TokenLease {
            ttl: Duration::ZERO,
            renewable: false,
        };
        assert_eq!(eternal.renew_after(), None);
    }

    #[test]
    fn failures_map_to_clear_errors() {
        let p = "secret/data/t/k";
        let e = Failure::Status(403, vec!["permission denied".into()]).into_store_error(p);
        assert_eq!(
            e.to_string(),
            "permission denied by Vault policy for secret/data/t/k"
        );
        let e = Failure::Status(
            400,
            vec!["check-and-set parameter did not match the current version".into()],
        )
        .into_store_error(p);
        assert_eq!(e.metric_label(), "cas_conflict");
        let e = Failure::Status(503, vec!["Vault is sealed".into()]).into_store_error(p);
        assert!(e.to_string().contains("sealed"), "{e}");
        assert!(!Failure::Status(503, vec!["Vault is sealed".into()]).retryable());
        assert!(Failure::Status(500, vec![]).retryable());
        assert!(!Failure::Status(400, vec![]).retryable());
    }

    fn three_nodes(max_attempts: u32) -> VaultSettings {
        VaultSettings {
            address: "http://127.0.0.1:8200".into(),
            other_addresses: vec![
                "http://127.0.0.1:8210".into(),
                "http://127.0.0.1:8220".into(),
            ],
            mount: "secret".into(),
            path_prefix: String::new(),
            namespace: None,
            ca_file: None,
            master_key_file: PathBuf::new(),
            timeout: Duration::from_secs(1),
            max_attempts,
            retry_backoff: Duration::from_millis(100),
            auth: VaultAuth::Token {
                token_file: PathBuf::new(),
            },
            proxy: None,
            allow_insecure_http: false,
        }
    }

    fn transport() -> Failure {
        Failure::Transport {
            message: "connection refused".into(),
            timeout: false,
        }
    }

    #[test]
    fn a_node_that_is_not_the_active_one_is_left_for_the_next() {
        assert!(transport().node_down());
        assert!(Failure::Status(503, vec!["Vault is sealed".into()]).node_down());
        assert!(Failure::Status(500, vec!["local node not active".into()]).node_down());
        assert!(Failure::Status(307, vec![]).node_down());
        // Answers about the request itself: every node would give them.
        for code in [400, 403, 404, 412, 429] {
            assert!(!Failure::Status(code, vec![]).node_down(), "{code}");
        }
        assert!(Failure::Status(400, vec![CAS_MISMATCH.into()]).is_cas_mismatch());
        assert!(!Failure::Status(500, vec![CAS_MISMATCH.into()]).is_cas_mismatch());
    }

    /// Runs `retry_with` over three nodes whose answers `answer(node, attempt)` gives;
    /// returns the outcome, the nodes asked in order, and the node in use afterwards.
    async fn over_three_nodes(
        max_attempts: u32,
        start: usize,
        answer: impl Fn(usize, usize) -> Result<usize, Failure>,
    ) -> (Result<usize, Failure>, Vec<usize>, usize) {
        let settings = three_nodes(max_attempts);
        let node = AtomicUsize::new(start);
        let asked = Mutex::new(Vec::new());
        let outcome = retry_with(&settings, &node, "read", "secret/data/x", |n| {
            let attempt = {
                let mut asked = asked.lock().expect("asked");
                asked.push(n);
                asked.len()
            };
            let result = answer(n, attempt);
            async move { result }
        })
        .await;
        let asked = asked.into_inner().expect("asked");
        (outcome, asked, node.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_move_to_the_next_node_and_stay_where_one_answered() {
        // The node in use is dead, the next a standby redirecting, the third active: the
        // request reaches it at once, and later requests start there.
        let began = tokio::time::Instant::now();
        let (outcome, asked, now) = over_three_nodes(4, 0, |n, _| match n {
            0 => Err(transport()),
            1 => Err(Failure::Status(307, vec![])),
            _ => Ok(n),
        })
        .await;
        assert_eq!(outcome.ok(), Some(2));
        assert_eq!(asked, [0, 1, 2]);
        assert_eq!(now, 2);
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "no wait before a round is over"
        );
        // A healthy node in use is the only one asked.
        let (outcome, asked, now) = over_three_nodes(4, 2, |n, _| Ok(n)).await;
        assert_eq!((outcome.ok(), asked, now), (Some(2), vec![2], 2));
    }

    #[tokio::test(start_paused = true)]
    async fn every_node_gets_a_chance_and_a_full_round_waits_the_backoff() {
        // max_attempts = 2 < 3 nodes: still every node is asked, then the last error,
        // with the attempts counted, is the request's.
        let began = tokio::time::Instant::now();
        let (outcome, asked, _) = over_three_nodes(2, 1, |_, _| {
            Err(Failure::Status(503, vec!["Vault is sealed".into()]))
        })
        .await;
        assert_eq!(asked, [1, 2, 0]);
        let err = outcome
            .expect_err("all sealed")
            .into_store_error("secret/data/x");
        assert!(err.to_string().contains("sealed"), "{err}");
        assert_eq!(began.elapsed(), Duration::ZERO);
        // During an election every node fails for a while: a round without waiting, the
        // backoff (100 ms plus up to 25%), then the next round finds the new active node.
        let began = tokio::time::Instant::now();
        let (outcome, asked, now) = over_three_nodes(5, 0, |n, attempt| {
            if attempt > 3 && n == 1 {
                Ok(n)
            } else {
                Err(Failure::Status(500, vec![]))
            }
        })
        .await;
        assert_eq!(outcome.ok(), Some(1));
        assert_eq!((asked, now), (vec![0, 1, 2, 0, 1], 1));
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited <= Duration::from_millis(125),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_about_the_request_itself_is_final_on_any_node() {
        let (outcome, asked, now) = over_three_nodes(4, 0, |_, _| {
            Err(Failure::Status(403, vec!["permission denied".into()]))
        })
        .await;
        assert!(matches!(outcome, Err(Failure::Status(403, _))));
        assert_eq!((asked, now), (vec![0], 0));
    }
}
