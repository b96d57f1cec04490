//! `[[publish]]`: the keys of a publish destination, their checks, and the validated
//! [`PublishConfig`] (`type = "directory"`, the default), [`VaultViewConfig`]
//! (`type = "vault"`) or [`AwsViewConfig`] (`type = "aws"`) a publisher runs with. The two
//! view types share their `fields` table, `interval` and checks; [`ViewConfig`] is either. Whether each named secret is managed is a
//! cross-reference, checked by the config module with the rest of the document; whether a
//! view's `#json_field` exists in the secret's value is checked by [`check_view_fields`]
//! once the secrets are known.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Field, SecretConfig, SecretMention, StoreConfig, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::generator::GeneratorSpec;
use crate::http_client::ProxyUrl;
use crate::store::vault::VaultAuth;
use crate::store::vault::config as vault_config;
use crate::target::TargetConfig;

type S<T> = Spanned<T>;

const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Timeout of one view request when the store is not Vault (else the store's).
const DEFAULT_VIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys of a `[[publish]]` entry, for the schema walk: those of both types, since
/// `type` may be left out (a directory). Which keys belong to which type is checked in
/// [`validate`], with a message saying so.
pub(crate) const FIELDS: &[Field] = &[
    f("type", Ty::Str),
    f("path", Ty::Str),
    f("secrets", Ty::StrListOrMap),
    f("interval", Ty::Duration),
    f("mount", Ty::Str),
    f("fields", Ty::StrMap),
    f("address", Ty::Str),
    f("auth", Ty::Table(vault_config::AUTH_FIELDS)),
    f("proxy", Ty::Str),
    f("allow_insecure_http", Ty::Bool),
    f("name", Ty::Str),
    f("region", Ty::Str),
    f("endpoint_url", Ty::Str),
    f("secret", Ty::Str),
];

/// `[[publish]]`: a directory rotor writes the current versions into, kubelet style.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    /// `"directory"` (the default), `"vault"` or `"aws"`.
    #[serde(rename = "type")]
    kind: Option<S<String>>,
    path: Option<S<String>>,
    /// An array of `tenant/key` (file name = key) or a table file name -> `tenant/key`.
    secrets: Option<S<RawPublishSecrets>>,
    interval: Option<S<String>>,
    /// Vault: the KV v2 mount (default: the Vault store's).
    mount: Option<S<String>>,
    /// Vault: field name -> `tenant/key` or `tenant/key#json_field`.
    fields: Option<S<BTreeMap<String, S<String>>>>,
    /// Vault: the server (default: the Vault store's, with its auth).
    address: Option<S<String>>,
    auth: Option<S<vault_config::RawVaultAuth>>,
    proxy: Option<S<String>>,
    allow_insecure_http: Option<S<bool>>,
    /// AWS: the Secrets Manager secret's name.
    name: Option<S<String>>,
    /// AWS: its region.
    region: Option<S<String>>,
    /// AWS: the service endpoint instead of the region's (tests, VPC endpoints).
    endpoint_url: Option<S<String>>,
    /// AWS: `tenant/key`, whose value is the secret's `SecretString` (instead of `fields`).
    secret: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPublishSecrets {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

/// A directory rotor writes the current version of some secrets into, the way kubelet
/// updates a secret volume (a local stand-in for the CSI driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    pub path: PathBuf,
    /// File name to secret, in file name order.
    pub files: BTreeMap<String, SecretRef>,
    /// How often the store is checked for a new current version.
    pub interval: Duration,
}

/// `[[publish]] type = "vault"`: one KV v2 document that holds only promoted values.
/// Consumers (the Vault CSI provider, Vault Agent, External Secrets, `vault kv get`) read
/// the latest KV version of a path; the store's own paths also hold pending versions, so
/// consumers read a view, never a store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultViewConfig {
    /// `https://vault.vault.svc:8200`, without a trailing `/`.
    pub address: String,
    /// The KV v2 mount (`secret`).
    pub mount: String,
    /// The document's path below the mount (`rotor/database`: a CSI object reads
    /// `secret/data/rotor/database`).
    pub path: String,
    /// Vault Enterprise namespace: the store's, when the view uses the store's Vault.
    pub namespace: Option<String>,
    /// The store's `ca_file`, when the view uses the store's Vault.
    pub ca_file: Option<PathBuf>,
    /// Bound of one request: the store's, when the store is Vault.
    pub timeout: Duration,
    pub auth: VaultAuth,
    pub proxy: Option<ProxyUrl>,
    pub allow_insecure_http: bool,
    /// Field name in the document to what it holds, in name order.
    pub fields: BTreeMap<String, ViewField>,
    /// How often the store and the document are compared.
    pub interval: Duration,
}

impl VaultViewConfig {
    /// `mount/path`: names the view in logs and in metric labels (one per `[[publish]]`
    /// entry, so bounded by the config).
    pub fn name(&self) -> String {
        format!("{}/{}", self.mount, self.path)
    }
}

/// What one field of a view holds: a secret's current value, or one string field of it
/// when the value is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewField {
    pub secret: SecretRef,
    pub json_field: Option<String>,
}

/// `[[publish]] type = "aws"`: one AWS Secrets Manager secret that holds only promoted
/// values, staged the way AWS's own rotation does it (`AWSCURRENT`, `AWSPREVIOUS`), so the
/// CSI AWS provider and the SDKs' caching clients read it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsViewConfig {
    /// The secret's name (`rotor/database`).
    pub name: String,
    pub region: String,
    /// `https://secretsmanager.REGION.amazonaws.com` is used when absent.
    pub endpoint_url: Option<String>,
    pub proxy: Option<ProxyUrl>,
    /// What the secret's `SecretString` holds.
    pub value: AwsValue,
    /// How often the store and the secret are compared.
    pub interval: Duration,
    /// Bound of one request.
    pub timeout: Duration,
}

/// What an AWS view's `SecretString` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsValue {
    /// `secret = "tenant/key"`: the value itself.
    Secret(SecretRef),
    /// `fields = {...}`: a JSON object with every field and its `NAME_version`, the same
    /// document a Vault view holds.
    Fields(BTreeMap<String, ViewField>),
}

/// The field name a `secret = ...` view reports its version under (in
/// `rotor_view_version{field}` and the logs): what AWS calls the value.
pub const SECRET_STRING_FIELD: &str = "SecretString";

impl AwsViewConfig {
    /// `aws:REGION/NAME`: names the view in logs and in metric labels.
    pub fn label(&self) -> String {
        format!("aws:{}/{}", self.region, self.name)
    }

    /// The secrets the view shows, by field name; a `secret = ...` view has the one field
    /// [`SECRET_STRING_FIELD`].
    pub fn fields(&self) -> BTreeMap<String, ViewField> {
        match &self.value {
            AwsValue::Fields(fields) => fields.clone(),
            AwsValue::Secret(secret) => BTreeMap::from([(
                SECRET_STRING_FIELD.to_owned(),
                ViewField {
                    secret: secret.clone(),
                    json_field: None,
                },
            )]),
        }
    }
}

/// A view of either type, as the view publisher and the tree take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewConfig {
    Vault(std::sync::Arc<VaultViewConfig>),
    Aws(std::sync::Arc<AwsViewConfig>),
}

impl ViewConfig {
    /// The view's name in logs, metric labels and `ViewShows` reports.
    pub fn name(&self) -> String {
        match self {
            ViewConfig::Vault(v) => v.name(),
            ViewConfig::Aws(a) => a.label(),
        }
    }

    /// Where the view lives beyond its name (the Vault address, the AWS endpoint), so two
    /// views of the same name elsewhere get distinct registry names.
    pub fn location(&self) -> String {
        match self {
            ViewConfig::Vault(v) => v.address.clone(),
            ViewConfig::Aws(a) => a.endpoint_url.clone().unwrap_or_default(),
        }
    }

    pub fn interval(&self) -> Duration {
        match self {
            ViewConfig::Vault(v) => v.interval,
            ViewConfig::Aws(a) => a.interval,
        }
    }

    /// Field name to what it shows.
    pub fn fields(&self) -> BTreeMap<String, ViewField> {
        match self {
            ViewConfig::Vault(v) => v.fields.clone(),
            ViewConfig::Aws(a) => a.fields(),
        }
    }

    /// Whether the view shows `secret`.
    pub fn shows(&self, secret: &SecretRef) -> bool {
        self.fields().values().any(|f| f.secret == *secret)
    }
}

/// A `#json_field` a view names, checked against the secret's value shape once the
/// secrets are validated.
pub(crate) struct JsonFieldMention {
    span: std::ops::Range<usize>,
    key: String,
    secret: SecretRef,
    field: String,
}

/// What `[[publish]]` validates into.
#[derive(Default)]
pub(crate) struct Publish {
    pub(crate) directories: Vec<PublishConfig>,
    pub(crate) views: Vec<VaultViewConfig>,
    pub(crate) aws_views: Vec<AwsViewConfig>,
    pub(crate) json_fields: Vec<JsonFieldMention>,
}

/// Checks every `[[publish]]` entry; each secret it names is added to `mentions`, which
/// the config module checks against the managed secrets. `store` gives a Vault view its
/// defaults (address, mount, auth) and the `path_prefix` it must stay out of.
pub(crate) fn validate(
    v: &mut Validator<'_, '_>,
    raw: &[Spanned<RawPublish>],
    mentions: &mut Vec<SecretMention>,
    store: &StoreConfig,
) -> Publish {
    let mut out = Vec::new();
    let mut views = Publish::default();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut seen_views: HashMap<(String, String, String), usize> = HashMap::new();
    let mut seen_aws: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, spanned) in raw.iter().enumerate() {
        let path = format!("publish[{i}]");
        let p = spanned.get_ref();
        let kind = match p.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None | Some(("directory", _)) => "directory",
            Some(("vault", _)) => "vault",
            Some(("aws", _)) => "aws",
            Some((_, span)) => {
                v.diag.value(
                    span,
                    &join(&path, "type"),
                    "expected \"directory\" (the default), \"vault\" or \"aws\"",
                );
                continue;
            }
        };
        foreign_keys(v, &path, p, kind);
        match kind {
            "vault" => {
                if let Some(view) =
                    validate_view(v, &path, spanned, store, mentions, &mut views.json_fields)
                {
                    let doc = (view.address.clone(), view.mount.clone(), view.path.clone());
                    match seen_views.get(&doc) {
                        Some(first) => {
                            let span = p.path.as_ref().map_or(spanned.span(), |s| s.span());
                            v.diag.value(
                                span,
                                &join(&path, "path"),
                                format!(
                                    "{} on {} is already written by publish[{first}]: two views of one document would overwrite each other",
                                    view.name(),
                                    view.address
                                ),
                            );
                        }
                        None => {
                            seen_views.insert(doc, i);
                            views.views.push(view);
                        }
                    }
                }
                continue;
            }
            "aws" => {
                if let Some(view) =
                    validate_aws_view(v, &path, spanned, mentions, &mut views.json_fields)
                {
                    let secret = (
                        view.name.clone(),
                        view.region.clone(),
                        view.endpoint_url.clone().unwrap_or_default(),
                    );
                    match seen_aws.get(&secret) {
                        Some(first) => {
                            let span = p.name.as_ref().map_or(spanned.span(), |s| s.span());
                            v.diag.value(
                                span,
                                &join(&path, "name"),
                                format!(
                                    "{} is already written by publish[{first}]: two views of one AWS secret would overwrite each other",
                                    view.label(),
                                ),
                            );
                        }
                        None => {
                            seen_aws.insert(secret, i);
                            views.aws_views.push(view);
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        let dir = match &p.path {
            None => {
                v.missing(
                    Some(spanned.span()),
                    &join(&path, "path"),
                    "missing key `path`: the directory to publish into, e.g. \"demo/mnt/secrets\"",
                );
                None
            }
            Some(d) if d.get_ref().trim().is_empty() => {
                v.diag
                    .value(d.span(), &join(&path, "path"), "must not be empty");
                None
            }
            Some(d) => {
                let dir = PathBuf::from(d.get_ref());
                if let Some(first) = seen.insert(dir.clone(), i) {
                    v.diag.value(
                        d.span(),
                        &join(&path, "path"),
                        format!("is already published by publish[{first}]"),
                    );
                }
                Some(dir)
            }
        };
        let interval = v.duration_or(
            &join(&path, "interval"),
            p.interval.as_ref(),
            DEFAULT_PUBLISH_INTERVAL,
        );
        let mut files = BTreeMap::new();
        match &p.secrets {
                None => v.missing(
                    Some(spanned.span()),
                    &join(&path, "secrets"),
                    "missing key `secrets`: [\"tenant/key\", ...] (file name = key) or { \"file\" = \"tenant/key\" }",
                ),
                Some(list) => {
                    let span = list.span();
                    let pairs: Vec<(String, String, String)> = match list.get_ref() {
                        RawPublishSecrets::List(items) => items
                            .iter()
                            .enumerate()
                            .map(|(j, s)| {
                                let name = s.split_once('/').map_or(s.as_str(), |(_, k)| k);
                                (format!("{path}.secrets[{j}]"), name.to_owned(), s.clone())
                            })
                            .collect(),
                        RawPublishSecrets::Map(map) => map
                            .iter()
                            .map(|(name, s)| {
                                (format!("{path}.secrets.{name}"), name.clone(), s.clone())
                            })
                            .collect(),
                    };
                    for (key, name, secret) in pairs {
                        let Some((name, secret)) =
                            v.file_mapping(&key, span.clone(), &name, &secret, span.clone())
                        else {
                            continue;
                        };
                        if files.contains_key(&name) {
                            v.diag.value(
                                span.clone(),
                                &key,
                                format!("file name {name:?} is used twice in this directory; use the table form to name files"),
                            );
                            continue;
                        }
                        mentions.push(SecretMention {
                            span: span.clone(),
                            key,
                            secret: secret.clone(),
                        });
                        files.insert(name, secret);
                    }
                }
            }
        if let Some(dir) = dir {
            out.push(PublishConfig {
                path: dir,
                files,
                interval,
            });
        }
    }
    views.directories = out;
    views
}

/// One `[[publish]] type = "vault"` entry. `None` when a key was bad (reported).
fn validate_view(
    v: &mut Validator<'_, '_>,
    path: &str,
    spanned: &Spanned<RawPublish>,
    store: &StoreConfig,
    mentions: &mut Vec<SecretMention>,
    json_fields: &mut Vec<JsonFieldMention>,
) -> Option<VaultViewConfig> {
    let p = spanned.get_ref();
    let errors_before = v.diag.len();
    let store = match store {
        StoreConfig::Vault(s) => Some(&**s),
        StoreConfig::Embedded { .. } => None,
    };
    let address = match (&p.address, store) {
        (Some(a), _) => vault_address(v, &join(path, "address"), a),
        (None, Some(s)) => Some(s.address.trim_end_matches('/').to_owned()),
        (None, None) => {
            v.missing(
                Some(spanned.span()),
                &join(path, "address"),
                "missing key `address`: the Vault server, e.g. \"https://vault.vault.svc:8200\" (it defaults to the store's only when [store] type = \"vault\")",
            );
            None
        }
    };
    // The store's connection settings carry over only to the store's own Vault.
    let same_vault = store.filter(|s| {
        address
            .as_deref()
            .is_some_and(|a| a == s.address.trim_end_matches('/'))
    });
    let mount = match &p.mount {
        Some(m) => kv_path(v, &join(path, "mount"), m),
        None => Some(store.map_or_else(|| "secret".to_owned(), |s| s.mount.clone())),
    };
    let doc_path = match &p.path {
        Some(d) => kv_path(v, &join(path, "path"), d),
        None => {
            v.missing(
                Some(spanned.span()),
                &join(path, "path"),
                "missing key `path`: the KV path below `mount` consumers read, e.g. \"rotor/database\"",
            );
            None
        }
    };
    if let (Some(s), Some(mount), Some(doc), Some(d)) = (same_vault, &mount, &doc_path, &p.path)
        && *mount == s.mount
        && inside_store(doc, &s.path_prefix)
    {
        v.diag.value(
            d.span(),
            &join(path, "path"),
            format!(
                "{doc:?} is inside the store's path_prefix {:?} on the same mount: the store writes pending versions there and a view must stay apart from it (choose a path outside the prefix)",
                s.path_prefix
            ),
        );
    }
    let auth = match (&p.auth, store) {
        (Some(a), _) => Some(vault_config::auth(v, &join(path, "auth"), a)),
        (None, Some(s)) => Some(s.auth.clone()),
        (None, None) => {
            v.missing(
                Some(spanned.span()),
                &join(path, "auth"),
                "missing key `auth`: { method = \"token\", token_file = \"...\" } or { method = \"kubernetes\", role = \"...\", token_file = \"...\" } (it defaults to the store's only when [store] type = \"vault\")",
            );
            None
        }
    };
    let proxy = match &p.proxy {
        Some(_) => v.proxy(&join(path, "proxy"), p.proxy.as_ref()),
        None => same_vault.and_then(|s| s.proxy.clone()),
    };
    let allow_insecure_http = match &p.allow_insecure_http {
        Some(a) => *a.get_ref(),
        None => same_vault.is_some_and(|s| s.allow_insecure_http),
    };
    // The store's rule: plain http only to loopback unless allowed explicitly, since the
    // token and every value would cross the network unencrypted.
    if let Some(a) = &address
        && !allow_insecure_http
        && url::Url::parse(a)
            .is_ok_and(|u| u.scheme() == "http" && !crate::http_client::url_is_loopback(&u))
    {
        let span = p.address.as_ref().map_or(spanned.span(), |s| s.span());
        v.diag.value(
            span,
            &join(path, "address"),
            "plain http to a host that is not loopback (127.0.0.0/8, ::1, localhost) sends the Vault token and every value unencrypted: use https://, or set allow_insecure_http = true in this [[publish]] entry to accept that",
        );
    }
    let interval = view_interval(v, path, p);
    let fields = match &p.fields {
        None => {
            v.missing(
                Some(spanned.span()),
                &join(path, "fields"),
                "missing key `fields`: field name to \"tenant/key\" or \"tenant/key#json_field\", e.g. { password = \"team/db#password\" }",
            );
            BTreeMap::new()
        }
        Some(table) => view_fields(v, path, table, mentions, json_fields),
    };
    if v.diag.len() != errors_before {
        return None;
    }
    Some(VaultViewConfig {
        address: address?,
        mount: mount?,
        path: doc_path?,
        namespace: same_vault.and_then(|s| s.namespace.clone()),
        ca_file: same_vault.and_then(|s| s.ca_file.clone()),
        timeout: store.map_or(DEFAULT_VIEW_TIMEOUT, |s| s.timeout),
        auth: auth?,
        proxy,
        allow_insecure_http,
        fields,
        interval,
    })
}

/// Refuses every key of `p` that belongs to another `type` than `kind`, naming the types it
/// applies to.
fn foreign_keys(v: &mut Validator<'_, '_>, path: &str, p: &RawPublish, kind: &str) {
    type Key<'a> = (&'a str, Option<std::ops::Range<usize>>, &'a [&'a str]);
    let keys: [Key<'_>; 12] = [
        (
            "path",
            p.path.as_ref().map(|s| s.span()),
            &["directory", "vault"],
        ),
        (
            "secrets",
            p.secrets.as_ref().map(|s| s.span()),
            &["directory"],
        ),
        ("mount", p.mount.as_ref().map(|s| s.span()), &["vault"]),
        (
            "fields",
            p.fields.as_ref().map(|s| s.span()),
            &["vault", "aws"],
        ),
        ("address", p.address.as_ref().map(|s| s.span()), &["vault"]),
        ("auth", p.auth.as_ref().map(|s| s.span()), &["vault"]),
        (
            "proxy",
            p.proxy.as_ref().map(|s| s.span()),
            &["vault", "aws"],
        ),
        (
            "allow_insecure_http",
            p.allow_insecure_http.as_ref().map(|s| s.span()),
            &["vault"],
        ),
        ("name", p.name.as_ref().map(|s| s.span()), &["aws"]),
        ("region", p.region.as_ref().map(|s| s.span()), &["aws"]),
        (
            "endpoint_url",
            p.endpoint_url.as_ref().map(|s| s.span()),
            &["aws"],
        ),
        ("secret", p.secret.as_ref().map(|s| s.span()), &["aws"]),
    ];
    for (key, present, kinds) in keys {
        if let Some(span) = present
            && !kinds.contains(&kind)
        {
            let applies = kinds
                .iter()
                .map(|k| format!("type = \"{k}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            v.diag.value(
                span,
                &join(path, key),
                format!("only applies to {applies} (this entry is type = \"{kind}\")"),
            );
        }
    }
}

/// A view's `interval`: the default of one second, never zero.
fn view_interval(v: &mut Validator<'_, '_>, path: &str, p: &RawPublish) -> Duration {
    let interval = v.duration_or(
        &join(path, "interval"),
        p.interval.as_ref(),
        DEFAULT_PUBLISH_INTERVAL,
    );
    if interval.is_zero()
        && let Some(i) = &p.interval
    {
        v.diag.value(
            i.span(),
            &join(path, "interval"),
            "must be longer than zero",
        );
    }
    interval
}

/// A view's `fields` table: field name to `tenant/key` or `tenant/key#json_field`. Each
/// secret goes into `mentions` and each `#json_field` into `json_fields`, checked once the
/// secrets are known.
fn view_fields(
    v: &mut Validator<'_, '_>,
    path: &str,
    table: &Spanned<BTreeMap<String, Spanned<String>>>,
    mentions: &mut Vec<SecretMention>,
    json_fields: &mut Vec<JsonFieldMention>,
) -> BTreeMap<String, ViewField> {
    let mut fields = BTreeMap::new();
    if table.get_ref().is_empty() {
        v.diag.value(
            table.span(),
            &join(path, "fields"),
            "must name at least one field",
        );
        return fields;
    }
    for (name, target) in table.get_ref() {
        let key = format!("{path}.fields.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            v.diag.value(
                target.span(),
                &key,
                format!("{name:?} is not a field name: letters, digits, '_', '-' and '.'"),
            );
            continue;
        }
        if let Some(base) = name.strip_suffix("_version")
            && table.get_ref().contains_key(base)
        {
            v.diag.value(
                target.span(),
                &key,
                format!("collides with the version field rotor writes beside {base:?}"),
            );
            continue;
        }
        let text = target.get_ref();
        let (secret_text, json_field) = match text.split_once('#') {
            Some((s, f)) => (s, Some(f)),
            None => (text.as_str(), None),
        };
        let Some(secret) = SecretRef::parse(secret_text) else {
            v.diag.value(
                target.span(),
                &key,
                format!("{text:?} must name a secret as \"tenant/key\" or \"tenant/key#json_field\" (lowercase identifiers)"),
            );
            continue;
        };
        if json_field.is_some_and(str::is_empty) {
            v.diag.value(
                target.span(),
                &key,
                format!("{text:?} names no field after '#'"),
            );
            continue;
        }
        mentions.push(SecretMention {
            span: target.span(),
            key: key.clone(),
            secret: secret.clone(),
        });
        if let Some(field) = json_field {
            json_fields.push(JsonFieldMention {
                span: target.span(),
                key,
                secret: secret.clone(),
                field: field.to_owned(),
            });
        }
        fields.insert(
            name.clone(),
            ViewField {
                secret,
                json_field: json_field.map(str::to_owned),
            },
        );
    }
    fields
}

/// A required string key of an AWS view, accepted when `ok` holds; `what` says what it
/// must be.
fn aws_key(
    v: &mut Validator<'_, '_>,
    spanned: &Spanned<RawPublish>,
    key: String,
    value: Option<&Spanned<String>>,
    ok: impl Fn(&str) -> bool,
    what: &str,
) -> Option<String> {
    match value {
        None => {
            v.missing(
                Some(spanned.span()),
                &key,
                format!(
                    "missing key `{}`: {what}",
                    key.rsplit('.').next().unwrap_or_default()
                ),
            );
            None
        }
        Some(s) if ok(s.get_ref()) => Some(s.get_ref().clone()),
        Some(s) => {
            v.diag.value(s.span(), &key, format!("is not {what}"));
            None
        }
    }
}

/// One `[[publish]] type = "aws"` entry. `None` when a key was bad (reported).
fn validate_aws_view(
    v: &mut Validator<'_, '_>,
    path: &str,
    spanned: &Spanned<RawPublish>,
    mentions: &mut Vec<SecretMention>,
    json_fields: &mut Vec<JsonFieldMention>,
) -> Option<AwsViewConfig> {
    let p = spanned.get_ref();
    let errors_before = v.diag.len();
    // AWS's own rule for secret names.
    let name = aws_key(
        v,
        spanned,
        join(path, "name"),
        p.name.as_ref(),
        |t| {
            (1..=512).contains(&t.len())
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
        },
        "a Secrets Manager secret name such as \"rotor/database\" (1 to 512 of letters, digits and /_+=.@-)",
    );
    let region = aws_key(
        v,
        spanned,
        join(path, "region"),
        p.region.as_ref(),
        |t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        },
        "an AWS region such as \"eu-west-1\" (lowercase letters, digits and '-')",
    );
    let endpoint_url = p.endpoint_url.as_ref().and_then(|e| {
        let key = join(path, "endpoint_url");
        let text = e.get_ref().trim();
        match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.query().is_none() =>
            {
                // The Vault rule: plain http only to loopback (a local moto or LocalStack),
                // since every value would cross the network unencrypted.
                if u.scheme() == "http" && !crate::http_client::url_is_loopback(&u) {
                    v.diag.value(
                        e.span(),
                        &key,
                        "plain http to a host that is not loopback (127.0.0.0/8, ::1, localhost) sends every value unencrypted: use https://",
                    );
                    None
                } else {
                    Some(text.trim_end_matches('/').to_owned())
                }
            }
            _ => {
                v.diag.value(
                    e.span(),
                    &key,
                    "is not an endpoint URL such as \"https://secretsmanager.eu-west-1.amazonaws.com\" (http or https, a host)",
                );
                None
            }
        }
    });
    let proxy = v.proxy(&join(path, "proxy"), p.proxy.as_ref());
    let interval = view_interval(v, path, p);
    let value = match (&p.secret, &p.fields) {
        (Some(_), Some(f)) => {
            v.diag.value(
                f.span(),
                &join(path, "fields"),
                "an AWS view holds either `secret` (the value as SecretString) or `fields` (a JSON object), not both",
            );
            None
        }
        (None, None) => {
            v.missing(
                Some(spanned.span()),
                &join(path, "secret"),
                "missing key `secret` or `fields`: secret = \"tenant/key\" (the value as SecretString) or fields = { password = \"tenant/key#password\" } (a JSON object)",
            );
            None
        }
        (None, Some(table)) => Some(AwsValue::Fields(view_fields(
            v,
            path,
            table,
            mentions,
            json_fields,
        ))),
        (Some(s), None) => {
            let key = join(path, "secret");
            match SecretRef::parse(s.get_ref()) {
                Some(secret) => {
                    mentions.push(SecretMention {
                        span: s.span(),
                        key,
                        secret: secret.clone(),
                    });
                    Some(AwsValue::Secret(secret))
                }
                None => {
                    v.diag.value(
                        s.span(),
                        &key,
                        format!(
                            "{:?} must name a secret as \"tenant/key\" (lowercase identifiers)",
                            s.get_ref()
                        ),
                    );
                    None
                }
            }
        }
    };
    if v.diag.len() != errors_before {
        return None;
    }
    Some(AwsViewConfig {
        name: name?,
        region: region?,
        endpoint_url,
        proxy,
        value: value?,
        interval,
        timeout: DEFAULT_VIEW_TIMEOUT,
    })
}

/// Whether a view at `doc` would be among the store's own paths: anything below a
/// non-empty `path_prefix`; with an empty prefix, the store's `_rotor` folder.
fn inside_store(doc: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    let within = |base: &str| doc == base || doc.starts_with(&format!("{base}/"));
    if prefix.is_empty() {
        within("_rotor")
    } else {
        within(prefix)
    }
}

/// An `http(s)://host[:port]` address, as the store takes it.
fn vault_address(v: &mut Validator<'_, '_>, key: &str, a: &Spanned<String>) -> Option<String> {
    let text = a.get_ref().trim();
    match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && matches!(u.path(), "" | "/") =>
        {
            Some(text.trim_end_matches('/').to_owned())
        }
        _ => {
            v.diag.value(
                a.span(),
                key,
                "is not a Vault address such as \"https://vault.vault.svc:8200\" (http or https, a host, no path)",
            );
            None
        }
    }
}

/// A mount or KV path: `/`-separated names of letters, digits, `-`, `_` and `.`.
fn kv_path(v: &mut Validator<'_, '_>, key: &str, value: &Spanned<String>) -> Option<String> {
    let text = value.get_ref().trim_matches('/');
    let ok_segment = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !text.is_empty() && text.split('/').all(ok_segment) {
        Some(text.to_owned())
    } else {
        v.diag.value(
            value.span(),
            key,
            "must be /-separated names of letters, digits, '-', '_' and '.' (not empty, no '.' or '..' parts)",
        );
        None
    }
}

/// The JSON fields of the values a secret stores, known from its target and generator
/// alone: every target's `shape_value` is fixed by its config. PostgreSQL stores
/// `username`, `password`, `url`; Redis `username`, `password`; the others store the
/// generated value, which is JSON only for `ed25519` (`alg`, `private_key`,
/// `public_key`). An empty list: the value is not JSON.
pub(crate) fn value_fields(
    target: &TargetConfig,
    generator: &GeneratorSpec,
) -> &'static [&'static str] {
    match target {
        TargetConfig::Postgres(_) => &["username", "password", "url"],
        TargetConfig::Redis(_) => &["username", "password"],
        TargetConfig::None(_)
        | TargetConfig::Jwks(_)
        | TargetConfig::Exec(_)
        | TargetConfig::Webhook(_) => match generator {
            GeneratorSpec::Ed25519 => &["alg", "private_key", "public_key"],
            _ => &[],
        },
    }
}

/// Checks every `#json_field` a view names against the fields its secret's value has.
/// A secret that is not managed was reported by the managed-secrets check already.
pub(crate) fn check_view_fields(
    v: &mut Validator<'_, '_>,
    json_fields: &[JsonFieldMention],
    secrets: &[SecretConfig],
) {
    for m in json_fields {
        let Some(s) = secrets.iter().find(|s| s.secret == m.secret) else {
            continue;
        };
        let known = value_fields(&s.target, &s.policy.generator);
        if known.contains(&m.field.as_str()) {
            continue;
        }
        let has = if known.is_empty() {
            "a plain value, not JSON: name the secret without '#'".to_owned()
        } else {
            format!("the fields {}", known.join(", "))
        };
        v.diag.value(
            m.span.clone(),
            &m.key,
            format!(
                "{}'s value has no field {:?}: its target and generator store {has}",
                m.secret, m.field
            ),
        );
    }
}
