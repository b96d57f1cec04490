//! The AWS Secrets Manager view (`[[publish]] type = "aws"`): one secret that only ever
//! holds promoted values, staged the way AWS's own rotation protocol does it, so the CSI
//! AWS provider and the SDKs' caching clients (which read `AWSCURRENT`) work unchanged.
//!
//! [`AwsViewWriter::sync`] is one reconcile towards the store's labels. Each rotor version
//! (for `fields = {...}`: each tuple of versions) is one AWS version whose id is a
//! deterministic `ClientRequestToken` ([`request_token`]), so a retried write is the same
//! write: AWS answers a repeated `PutSecretValue` with the same token and value as a no-op.
//! The wanted state: `AWSCURRENT` on the token of rotor's `current`; `AWSPREVIOUS` on the
//! token of rotor's `previous` while it is in grace (and only if that version is in AWS),
//! nowhere otherwise; `AWSPENDING` nowhere. One `DescribeSecret` reads the stages; each
//! step towards the wanted state is one request:
//!
//! - the secret is missing: `CreateSecret` with the current value (it gets `AWSCURRENT`);
//! - `AWSCURRENT` is elsewhere and the version is not in AWS: `PutSecretValue` with
//!   `AWSPENDING` (the one stage that may hold a not-yet-current value, by AWS's
//!   convention);
//! - `AWSCURRENT` is elsewhere: `UpdateSecretVersionStage` moves it (AWS then puts
//!   `AWSPREVIOUS` on the version it left, as at an AWS rotation; after a rollback that is
//!   the revoked version, which the next step removes);
//! - `AWSPENDING` on any version: removed (it is left by the put above, or by a crash
//!   between a put and the move);
//! - `AWSPREVIOUS` where rotor has no previous in grace: removed (after an expiry or a
//!   rollback); on another version than rotor's previous: moved.
//!
//! Values are put only once promoted (at the first reconcile after the promotion), so no
//! version in AWS ever holds a pending, failed or discarded value, and a reader of any
//! stage sees only values that were current. After its writes a reconcile reads the stages
//! again and goes on until they are as wanted (bounded), so it relies on AWS's documented
//! behaviour only to plan, never to conclude.
//!
//! Requests go over rotor's own HTTP client ([`crate::http_client::client`]: no proxy from
//! the environment, the view's `proxy` key only, never for loopback), handed to the SDK as
//! its HTTP client; the SDK's default client is not compiled in. Credentials come from the
//! standard AWS chain (environment, profile, web identity, container, instance metadata),
//! which reads the process environment unless [`AwsEnv`] names another (tests). Errors name
//! the view, the operation and AWS's error code, never a value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::config::{AwsValue, AwsViewConfig, SECRET_STRING_FIELD, ViewField};
use super::view::{Synced, ViewError, document, field_text, field_versions, labelled};
use crate::domain::{SecretRef, VersionNo};
use crate::store::Store;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
pub const AWSPENDING: &str = "AWSPENDING";

/// Steps one reconcile may take (a promotion takes four: put, move, remove the pending
/// stage, fix the previous one); past it the reconcile fails and the next one goes on.
const MAX_STEPS: usize = 8;

/// The `ClientRequestToken` (and so the AWS version id) of the view's document for
/// `versions` (each secret the view shows, at one version): a UUID-shaped digest of the
/// view's label and the versions, 36 characters (AWS takes 32 to 64). The same versions
/// always give the same token, so every retry of a write is the same request.
pub fn request_token(view: &str, versions: &BTreeMap<SecretRef, VersionNo>) -> String {
    let mut h = Sha256::new();
    h.update(b"rotor aws view\n");
    h.update(view.as_bytes());
    for (secret, version) in versions {
        h.update(format!("\n{secret}={version}").as_bytes());
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
    // RFC 9562's version 8 (custom) and variant bits, so it reads as the UUID it looks like.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Where the AWS credential chain reads environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_PROFILE`, ...): the process environment, or (only
/// with the `test-util` feature) a given set, so tests give rotor credentials without
/// changing the environment of a test process other tests share.
#[derive(Clone, Default)]
pub struct AwsEnv {
    #[cfg(feature = "test-util")]
    vars: Option<Arc<Vec<(String, String)>>>,
}

impl AwsEnv {
    /// The process environment.
    pub fn process() -> AwsEnv {
        AwsEnv::default()
    }

    /// Exactly `vars`, nothing from the process (a test hook).
    #[cfg(feature = "test-util")]
    pub fn vars(vars: &[(&str, &str)]) -> AwsEnv {
        AwsEnv {
            vars: Some(Arc::new(
                vars.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )),
        }
    }

    fn apply(&self, loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
        #[cfg(feature = "test-util")]
        if let Some(vars) = &self.vars {
            let pairs: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            return loader.env(aws_types::os_shim_internal::Env::from_slice(&pairs));
        }
        loader
    }
}

impl fmt::Debug for AwsEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the values are credentials.
        #[cfg(feature = "test-util")]
        if let Some(vars) = &self.vars {
            let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
            return f.debug_tuple("AwsEnv::Vars").field(&names).finish();
        }
        f.write_str("AwsEnv::Process")
    }
}

/// The SDK's HTTP client: rotor's reqwest client (see the module documentation). Secrets
/// Manager requests are small JSON bodies, always in memory.
#[derive(Debug, Clone)]
struct RotorHttp {
    client: reqwest::Client,
}

impl HttpClient for RotorHttp {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The client's own timeout bounds each request (the view's `timeout`).
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for RotorHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let tls = request.uri().starts_with("https://");
            let method = reqwest::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let Some(body) = request.body().bytes() else {
                return Err(ConnectorError::other(
                    "a streaming request body (Secrets Manager sends none)".into(),
                    None,
                ));
            };
            let mut req = client.request(method, request.uri()).body(body.to_vec());
            for (name, value) in request.headers().iter() {
                req = req.header(name, value);
            }
            let fail = |e: reqwest::Error| {
                let what: Box<dyn std::error::Error + Send + Sync> =
                    crate::http_client::failure(&e, tls).into();
                if e.is_timeout() {
                    ConnectorError::timeout(what)
                } else {
                    ConnectorError::io(what)
                }
            };
            let resp = req.send().await.map_err(fail)?;
            let status = StatusCode::try_from(resp.status().as_u16())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let bytes = resp.bytes().await.map_err(fail)?;
            let mut out = HttpResponse::new(status, SdkBody::from(bytes));
            for (k, v) in headers {
                out.headers_mut().insert(k, v);
            }
            Ok(out)
        })
    }
}

/// The stages of each listed version of the secret: what `DescribeSecret` answers.
type Stages = BTreeMap<String, Vec<String>>;

/// One request towards the wanted stages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `PutSecretValue` of the current document with `AWSPENDING`.
    Put,
    /// `UpdateSecretVersionStage` of `stage` to `to` (none: only removed) from `from`.
    Stage {
        stage: &'static str,
        to: Option<String>,
        from: Option<String>,
    },
}

/// The version holding `stage`, if any.
fn holder<'a>(stages: &'a Stages, stage: &str) -> Option<&'a String> {
    stages
        .iter()
        .find(|(_, s)| s.iter().any(|x| x == stage))
        .map(|(id, _)| id)
}

/// The next request towards `AWSCURRENT` on `current`, `AWSPREVIOUS` on `previous` (when
/// AWS has that version) and no `AWSPENDING`; `None` when the stages are as wanted.
fn next_step(stages: &Stages, current: &str, previous: Option<&str>) -> Option<Step> {
    let has = |id: &str, stage: &str| stages.get(id).is_some_and(|s| s.iter().any(|x| x == stage));
    // AWS keeps `AWSCURRENT` on one version; moto can leave it on two (a put with that
    // stage), so a holder other than `current` is looked for even when `current` has it.
    let elsewhere = stages
        .iter()
        .find(|(id, s)| *id != current && s.iter().any(|x| x == AWSCURRENT))
        .map(|(id, _)| id.clone());
    match (has(current, AWSCURRENT), elsewhere) {
        (true, None) => {}
        (true, Some(other)) => {
            return Some(Step::Stage {
                stage: AWSCURRENT,
                to: None,
                from: Some(other),
            });
        }
        (false, _) if !stages.contains_key(current) => return Some(Step::Put),
        (false, other) => {
            return Some(Step::Stage {
                stage: AWSCURRENT,
                to: Some(current.to_owned()),
                from: other,
            });
        }
    }
    if let Some(pending) = holder(stages, AWSPENDING) {
        return Some(Step::Stage {
            stage: AWSPENDING,
            to: None,
            from: Some(pending.clone()),
        });
    }
    let on_previous = holder(stages, AWSPREVIOUS);
    let want_previous = previous.filter(|p| *p != current && stages.contains_key(*p));
    match (want_previous, on_previous) {
        (Some(want), Some(on)) if want == on => None,
        (Some(want), on) => Some(Step::Stage {
            stage: AWSPREVIOUS,
            to: Some(want.to_owned()),
            from: on.cloned(),
        }),
        (None, Some(on)) => Some(Step::Stage {
            stage: AWSPREVIOUS,
            to: None,
            from: Some(on.clone()),
        }),
        (None, None) => None,
    }
}

/// What a step does to the stages, as AWS documents it: a put adds the version with
/// `AWSPENDING`; moving `AWSCURRENT` away from a version puts `AWSPREVIOUS` on it.
fn apply_step(stages: &mut Stages, step: &Step, current: &str) {
    let take = |stages: &mut Stages, stage: &str, from: &str| {
        if let Some(s) = stages.get_mut(from) {
            s.retain(|x| x != stage);
        }
    };
    match step {
        Step::Put => {
            stages
                .entry(current.to_owned())
                .or_default()
                .push(AWSPENDING.to_owned());
        }
        Step::Stage { stage, to, from } => {
            if let Some(from) = from {
                take(stages, stage, from);
            }
            if let Some(to) = to {
                let s = stages.entry(to.clone()).or_default();
                if !s.iter().any(|x| x == stage) {
                    s.push((*stage).to_owned());
                }
            }
            if *stage == AWSCURRENT
                && let Some(from) = from
            {
                for s in stages.values_mut() {
                    s.retain(|x| x != AWSPREVIOUS);
                }
                stages
                    .entry(from.clone())
                    .or_default()
                    .push(AWSPREVIOUS.to_owned());
                if let Some(to) = to
                    && let Some(s) = stages.get_mut(to)
                {
                    s.retain(|x| x != AWSPREVIOUS);
                }
            }
        }
    }
}

/// A connection to the view's Secrets Manager: the SDK client, built at the first
/// reconcile (loading credentials may take requests of its own).
pub struct AwsViewWriter {
    config: Arc<AwsViewConfig>,
    env: AwsEnv,
    client: OnceCell<Client>,
}

impl fmt::Debug for AwsViewWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsViewWriter")
            .field("view", &self.config.label())
            .field("endpoint_url", &self.config.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl AwsViewWriter {
    pub fn new(config: Arc<AwsViewConfig>, env: AwsEnv) -> AwsViewWriter {
        AwsViewWriter {
            config,
            env,
            client: OnceCell::new(),
        }
    }

    pub fn config(&self) -> &AwsViewConfig {
        &self.config
    }

    fn err(&self, what: impl Into<String>) -> ViewError {
        ViewError::Aws {
            view: self.config.label(),
            what: what.into(),
        }
    }

    /// An SDK error as a [`ViewError`]: the operation and AWS's error code and message
    /// (which name the secret, never its value), or what kept the request from AWS.
    fn sdk_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &str,
        e: &SdkError<E, HttpResponse>,
    ) -> ViewError {
        let what = match e {
            SdkError::ServiceError(s) => {
                let err = s.err();
                format!(
                    "{op} answered {} {}: {}",
                    s.raw().status().as_u16(),
                    err.code().unwrap_or("an unnamed error"),
                    err.message().unwrap_or("")
                )
            }
            SdkError::TimeoutError(_) => format!("{op} timed out"),
            SdkError::DispatchFailure(d) => format!(
                "{op}: cannot reach {}: {}",
                self.endpoint(),
                d.as_connector_error()
                    .and_then(|c| std::error::Error::source(c).map(ToString::to_string))
                    .unwrap_or_else(|| "the request was not sent".to_owned())
            ),
            // Credential and configuration failures: the SDK's own text names the
            // provider that failed, never a credential.
            SdkError::ConstructionFailure(_) => format!(
                "{op}: the request could not be built (credentials?): {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            ),
            _ => format!("{op}: unreadable answer"),
        };
        self.err(what)
    }

    fn endpoint(&self) -> String {
        self.config
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("secretsmanager.{}.amazonaws.com", self.config.region))
    }

    async fn client(&self) -> Result<&Client, ViewError> {
        self.client
            .get_or_try_init(|| async {
                let http = crate::http_client::client(
                    self.config.timeout,
                    None,
                    self.config.proxy.as_ref(),
                )
                .map_err(|what| self.err(what))?;
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.config.region.clone()))
                    .http_client(RotorHttp { client: http });
                if let Some(url) = &self.config.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                let sdk = self.env.apply(loader).load().await;
                Ok(Client::new(&sdk))
            })
            .await
    }

    /// The stages of each version, `None` when the secret does not exist.
    async fn describe(&self, client: &Client) -> Result<Option<Stages>, ViewError> {
        match client
            .describe_secret()
            .secret_id(&self.config.name)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.version_ids_to_stages()
                    .map(|m: &HashMap<String, Vec<String>>| {
                        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                    })
                    .unwrap_or_default(),
            )),
            // moto answers this with HTTP 404, AWS with 400: the SDK goes by the error's
            // `__type`, so both land here.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.sdk_err("DescribeSecret", &e)),
        }
    }

    /// The `SecretString` of `versions`: the value, or the fields' JSON document.
    async fn secret_string(
        &self,
        store: &dyn Store,
        versions: &BTreeMap<SecretRef, VersionNo>,
    ) -> Result<String, ViewError> {
        let label = self.config.label();
        match &self.config.value {
            AwsValue::Secret(secret) => {
                let field = ViewField {
                    secret: secret.clone(),
                    json_field: None,
                };
                let Some(&version) = versions.get(secret) else {
                    return Err(self.err(format!("{secret} has no current version")));
                };
                field_text(store, &label, SECRET_STRING_FIELD, &field, version).await
            }
            AwsValue::Fields(fields) => {
                let doc = document(store, &label, fields, versions).await?;
                Ok(serde_json::Value::Object(doc).to_string())
            }
        }
    }

    async fn run(
        &self,
        client: &Client,
        store: &dyn Store,
        step: &Step,
        token: &str,
        current: &BTreeMap<SecretRef, VersionNo>,
    ) -> Result<(), ViewError> {
        let name = &self.config.name;
        match step {
            Step::Put => {
                let value = self.secret_string(store, current).await?;
                client
                    .put_secret_value()
                    .secret_id(name)
                    .client_request_token(token)
                    .secret_string(value)
                    .version_stages(AWSPENDING)
                    .send()
                    .await
                    .map_err(|e| self.sdk_err("PutSecretValue", &e))?;
            }
            Step::Stage { stage, to, from } => {
                client
                    .update_secret_version_stage()
                    .secret_id(name)
                    .version_stage(*stage)
                    .set_move_to_version_id(to.clone())
                    .set_remove_from_version_id(from.clone())
                    .send()
                    .await
                    .map_err(|e| self.sdk_err("UpdateSecretVersionStage", &e))?;
            }
        }
        Ok(())
    }

    /// Creates the secret with the current document as its first version.
    async fn create(
        &self,
        client: &Client,
        store: &dyn Store,
        token: &str,
        current: &BTreeMap<SecretRef, VersionNo>,
    ) -> Result<bool, ViewError> {
        let value = self.secret_string(store, current).await?;
        match client
            .create_secret()
            .name(&self.config.name)
            .client_request_token(token)
            .secret_string(value)
            .description("Written by rotor: holds only promoted versions.")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            // Created by someone else since the describe: reconcile that one.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.sdk_err("CreateSecret", &e)),
        }
    }

    /// One reconcile (see the module documentation).
    pub async fn sync(&self, store: &dyn Store) -> Result<Synced, ViewError> {
        let label = self.config.label();
        let fields = self.config.fields();
        let secrets: Vec<SecretRef> = fields.values().map(|f| f.secret.clone()).collect();
        let Some(labels) = labelled(store, &label, &secrets).await? else {
            return Ok(Synced::NotYetPromoted);
        };
        let current: BTreeMap<SecretRef, VersionNo> =
            labels.iter().map(|(s, l)| (s.clone(), l.current)).collect();
        // The document before the last promotion: each secret at its previous version
        // where it has one in grace. None when no secret of the view is in grace.
        let previous: Option<BTreeMap<SecretRef, VersionNo>> =
            labels.values().any(|l| l.previous.is_some()).then(|| {
                labels
                    .iter()
                    .map(|(s, l)| (s.clone(), l.previous.unwrap_or(l.current)))
                    .collect()
            });
        let want_current = request_token(&label, &current);
        let want_previous = previous.as_ref().map(|p| request_token(&label, p));
        let versions = field_versions(&fields, &current);
        let client = self.client().await?;
        let mut wrote = false;
        let mut steps = 0;
        loop {
            let Some(mut stages) = self.describe(client).await? else {
                steps += 1;
                if steps > MAX_STEPS {
                    return Err(self.err(format!(
                        "the secret was neither found nor created within {MAX_STEPS} requests"
                    )));
                }
                if self.create(client, store, &want_current, &current).await? {
                    return Ok(Synced::Written {
                        revision: format!("created, version {want_current}"),
                        versions,
                    });
                }
                continue;
            };
            let mut changed = false;
            while let Some(step) = next_step(&stages, &want_current, want_previous.as_deref()) {
                if steps == MAX_STEPS {
                    return Err(self.err(format!(
                        "the stages did not settle within {MAX_STEPS} requests (another writer?); trying again at the next reconcile"
                    )));
                }
                steps += 1;
                self.run(client, store, &step, &want_current, &current)
                    .await?;
                apply_step(&mut stages, &step, &want_current);
                changed = true;
            }
            if !changed {
                break;
            }
            // Read back: the plan above followed AWS's documented behaviour; the answer
            // is what counts.
            wrote = true;
        }
        if wrote {
            Ok(Synced::Written {
                revision: format!("version {want_current}"),
                versions,
            })
        } else {
            Ok(Synced::Unchanged { versions })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(pairs: &[(&str, &[&str])]) -> Stages {
        pairs
            .iter()
            .map(|(id, s)| {
                (
                    (*id).to_owned(),
                    s.iter().map(|x| (*x).to_owned()).collect(),
                )
            })
            .collect()
    }

    /// Runs the plan on the documented model until it settles; the requests it made.
    fn settle(mut s: Stages, current: &str, previous: Option<&str>) -> (Stages, Vec<Step>) {
        let mut steps = Vec::new();
        while let Some(step) = next_step(&s, current, previous) {
            apply_step(&mut s, &step, current);
            steps.push(step);
            assert!(steps.len() <= MAX_STEPS, "no settling: {steps:?}");
        }
        for v in s.values_mut() {
            v.sort();
        }
        s.retain(|_, v| !v.is_empty());
        (s, steps)
    }

    #[test]
    fn a_promotion_puts_moves_and_cleans_up() {
        let (s, steps) = settle(
            stages(&[("w", &[AWSCURRENT]), ("v", &[AWSPREVIOUS])]),
            "x",
            Some("w"),
        );
        assert_eq!(
            s,
            stages(&[("x", &[AWSCURRENT]), ("w", &[AWSPREVIOUS])]),
            "{steps:?}"
        );
        assert_eq!(steps.len(), 3, "put, move, remove pending: {steps:?}");
    }

    #[test]
    fn a_rollback_moves_back_and_removes_the_revoked_previous() {
        let (s, _) = settle(
            stages(&[("w", &[AWSCURRENT]), ("v", &[AWSPREVIOUS])]),
            "v",
            None,
        );
        assert_eq!(s, stages(&[("v", &[AWSCURRENT])]));
    }

    #[test]
    fn expiry_removes_previous_and_a_stale_pending_goes() {
        let (s, _) = settle(
            stages(&[
                ("w", &[AWSCURRENT]),
                ("v", &[AWSPREVIOUS]),
                ("z", &[AWSPENDING]),
            ]),
            "w",
            None,
        );
        assert_eq!(s, stages(&[("w", &[AWSCURRENT])]));
        let (_, steps) = settle(stages(&[("w", &[AWSCURRENT])]), "w", Some("gone"));
        assert!(steps.is_empty(), "a previous AWS lacks is not invented");
    }

    #[test]
    fn a_second_awscurrent_is_taken_off() {
        let (s, _) = settle(
            stages(&[
                ("w", &[AWSCURRENT]),
                ("v", &[AWSPREVIOUS]),
                ("foreign", &[AWSCURRENT]),
            ]),
            "w",
            Some("v"),
        );
        assert_eq!(s, stages(&[("w", &[AWSCURRENT]), ("v", &[AWSPREVIOUS])]));
    }

    #[test]
    fn tokens_are_deterministic_uuid_shaped_and_distinct() {
        let s = SecretRef::new("tenant1", "db").unwrap();
        let t = |v| request_token("aws:us-east-1/x", &BTreeMap::from([(s.clone(), v)]));
        assert_eq!(t(3), t(3));
        assert_ne!(t(3), t(4));
        assert_eq!(t(3).len(), 36);
        assert_ne!(
            t(3),
            request_token("aws:us-east-1/y", &BTreeMap::from([(s.clone(), 3)]))
        );
    }
}
