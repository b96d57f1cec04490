//! The Vault KV view (`[[publish]] type = "vault"`): one KV v2 document that only ever
//! holds promoted values.
//!
//! Consumers (the Vault CSI provider, Vault Agent, External Secrets, `vault kv get`) read
//! the latest KV version of a path. The store writes a version before it is applied,
//! tested and promoted, so a consumer pointed at a store path would see pending and failed
//! versions; a view is written only from the versions labelled `current`, which the store
//! moves only at promotion and rollback.
//!
//! [`sync`] is one reconcile: work out the document the current versions produce (each
//! field's value, and `NAME_version` beside it), read the document, and if it differs write
//! the whole document in one check-and-set write on the KV version read. So a document
//! never mixes versions or shows half an update, and a second writer between the read and
//! the write makes the write fail instead of being overwritten blindly (the next reconcile
//! reads again). The same reconcile at start-up repairs a view left stale.
//!
//! It talks to Vault over rotor's own HTTP client ([`crate::http_client::client`]: no
//! proxy from the environment, no redirects) with plain KV v2 requests. Errors name the
//! view and the HTTP status, never a value or the token.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use super::config::VaultViewConfig;
pub use super::view::{Synced, ViewError};
use super::view::{document, field_versions, labelled};
use crate::domain::{SecretRef, VersionNo};
use crate::store::Store;
use crate::store::vault::VaultAuth;

/// Vault's error text for a check-and-set mismatch.
const CAS_MISMATCH: &str = "check-and-set parameter did not match";

/// A connection to the view's Vault: the HTTP client and the token, cached until Vault
/// refuses it.
pub struct ViewWriter {
    config: Arc<VaultViewConfig>,
    http: reqwest::Client,
    // A tokio Mutex: held across the login request so two reconciles never log in twice.
    token: Mutex<Option<String>>,
    /// The KV version of the document as last written or checked against the store's
    /// values: a read showing this version and the wanted version numbers needs no value
    /// reads.
    verified: Mutex<Option<(u64, BTreeMap<String, VersionNo>)>>,
}

impl std::fmt::Debug for ViewWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewWriter")
            .field("view", &self.config.name())
            .field("address", &self.config.address)
            .finish_non_exhaustive()
    }
}

/// The document as read: its KV version (0 when it never existed) and its data.
struct ReadDoc {
    version: u64,
    data: Option<Map<String, Value>>,
}

impl ViewWriter {
    pub fn new(config: Arc<VaultViewConfig>) -> Result<ViewWriter, ViewError> {
        let http = crate::http_client::client(
            config.timeout,
            config.ca_file.as_deref(),
            config.proxy.as_ref(),
        )
        .map_err(|what| ViewError::Vault {
            view: config.name(),
            what,
        })?;
        Ok(ViewWriter {
            config,
            http,
            token: Mutex::new(None),
            verified: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &VaultViewConfig {
        &self.config
    }

    fn err(&self, what: impl Into<String>) -> ViewError {
        ViewError::Vault {
            view: self.config.name(),
            what: what.into(),
        }
    }

    fn data_url(&self) -> String {
        format!(
            "{}/v1/{}/data/{}",
            self.config.address, self.config.mount, self.config.path
        )
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url);
        if let Some(ns) = &self.config.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        r
    }

    fn transport(&self, e: &reqwest::Error) -> ViewError {
        let tls = self.config.address.starts_with("https://");
        self.err(format!(
            "{} {}",
            self.config.address,
            crate::http_client::failure(e, tls)
        ))
    }

    async fn token(&self) -> Result<String, ViewError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = &*cached {
            return Ok(t.clone());
        }
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    self.err(format!(
                        "cannot read a token from {} (missing or empty)",
                        path.display()
                    ))
                })
        };
        let token = match &self.config.auth {
            VaultAuth::Token { token_file } => read(token_file)?,
            VaultAuth::Kubernetes {
                role,
                token_file,
                mount,
            } => {
                let jwt = read(token_file)?;
                let url = format!("{}/v1/auth/{mount}/login", self.config.address);
                let resp = self
                    .request(reqwest::Method::POST, &url)
                    .header("Content-Type", "application/json")
                    .body(json!({ "role": role, "jwt": jwt }).to_string())
                    .send()
                    .await
                    .map_err(|e| self.transport(&e))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(self.err(format!(
                        "kubernetes login at auth/{mount} (role {role}) answered {status}"
                    )));
                }
                let body = json_body(resp).await;
                body.pointer("/auth/client_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| self.err("kubernetes login answered no client token"))?
            }
        };
        *cached = Some(token.clone());
        Ok(token)
    }

    /// A 403 may be an expired token: forget it, so the next request reads or logs in
    /// again.
    async fn denied(&self) -> ViewError {
        *self.token.lock().await = None;
        ViewError::Denied {
            view: self.config.name(),
            path: format!("{}/data/{}", self.config.mount, self.config.path),
        }
    }

    async fn read(&self) -> Result<ReadDoc, ViewError> {
        let token = self.token().await?;
        let resp = self
            .request(reqwest::Method::GET, &self.data_url())
            .header("X-Vault-Token", token)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = resp.status().as_u16();
        if status == 403 {
            return Err(self.denied().await);
        }
        if status != 200 && status != 404 {
            return Err(self.err(format!("reading the document answered {status}")));
        }
        let body = json_body(resp).await;
        // A 404 may still carry the metadata of a deleted latest version: its number is
        // what the next check-and-set must name.
        let version = body
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data = match status {
            200 => body
                .pointer("/data/data")
                .and_then(Value::as_object)
                .cloned(),
            _ => None,
        };
        Ok(ReadDoc { version, data })
    }

    /// Writes `data` as the next version if the document is still at `cas`.
    async fn write(&self, cas: u64, data: &Map<String, Value>) -> Result<u64, ViewError> {
        let token = self.token().await?;
        let resp = self
            .request(reqwest::Method::POST, &self.data_url())
            .header("X-Vault-Token", token)
            .header("Content-Type", "application/json")
            .body(json!({ "options": { "cas": cas }, "data": data }).to_string())
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = resp.status().as_u16();
        if status == 403 {
            return Err(self.denied().await);
        }
        let body = json_body(resp).await;
        if status == 400
            && body
                .pointer("/errors")
                .and_then(Value::as_array)
                .is_some_and(|errs| {
                    errs.iter()
                        .any(|e| e.as_str().is_some_and(|s| s.contains(CAS_MISMATCH)))
                })
        {
            return Err(ViewError::Conflict {
                view: self.config.name(),
            });
        }
        if !(200..300).contains(&status) {
            return Err(self.err(format!("writing the document answered {status}")));
        }
        Ok(body
            .pointer("/data/version")
            .and_then(Value::as_u64)
            .unwrap_or(cas + 1))
    }

    /// One reconcile (see the module documentation).
    pub async fn sync(&self, store: &dyn Store) -> Result<Synced, ViewError> {
        let view = self.config.name();
        let secrets: Vec<SecretRef> = self
            .config
            .fields
            .values()
            .map(|f| f.secret.clone())
            .collect();
        let Some(labels) = labelled(store, &view, &secrets).await? else {
            return Ok(Synced::NotYetPromoted);
        };
        let current: BTreeMap<SecretRef, VersionNo> =
            labels.iter().map(|(s, l)| (s.clone(), l.current)).collect();
        let versions = field_versions(&self.config.fields, &current);
        let read = self.read().await?;
        // Unchanged since this process wrote or checked it, and still the same versions:
        // no value needs reading.
        if self
            .verified
            .lock()
            .await
            .as_ref()
            .is_some_and(|(kv, v)| *kv == read.version && *v == versions)
        {
            return Ok(Synced::Unchanged { versions });
        }
        let want = document(store, &view, &self.config.fields, &current).await?;
        if read.data.as_ref() == Some(&want) {
            *self.verified.lock().await = Some((read.version, versions.clone()));
            return Ok(Synced::Unchanged { versions });
        }
        let kv_version = self.write(read.version, &want).await?;
        *self.verified.lock().await = Some((kv_version, versions.clone()));
        Ok(Synced::Written {
            revision: format!("KV version {kv_version}"),
            versions,
        })
    }
}

/// The answer's JSON, or `Null` when it has none (a 204, or a proxy's page).
async fn json_body(resp: reqwest::Response) -> Value {
    match resp.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}
