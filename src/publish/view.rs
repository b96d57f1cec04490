//! What every view type shares: the error a reconcile ends with ([`ViewError`]), what a
//! reconcile did ([`Synced`]), the versions a view is built from ([`labelled`]: only the
//! versions the store labels `current`, and `previous` while in grace), and the document a
//! `fields` table makes of them ([`document`]: each field's text and `NAME_version` beside
//! it). The Vault view ([`super::vault`]) and the AWS view ([`super::aws`]) build on these,
//! so both hold the same document for the same versions.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::config::ViewField;
use crate::domain::{Label, SecretRef, VersionNo};
use crate::store::Store;

/// Why a reconcile did not land. The text names the view and what failed, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(
        "view {view}: another writer changed the document since it was read (check-and-set); nothing was overwritten"
    )]
    Conflict { view: String },
    #[error("view {view}: Vault refused the request (403): check the token's policy for {path}")]
    Denied { view: String, path: String },
    #[error("view {view}: {what}")]
    Vault { view: String, what: String },
    /// AWS Secrets Manager answered with an error or could not be reached. `what` is the
    /// operation and the service's error code or the transport failure.
    #[error("view {view}: {what}")]
    Aws { view: String, what: String },
    #[error("view {view}: reading the store: {what}")]
    Store { view: String, what: String },
    #[error("view {view}: field {field}: {what}")]
    Value {
        view: String,
        field: String,
        what: String,
    },
}

impl ViewError {
    /// A bounded label for `rotor_view_writes_total{outcome}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ViewError::Conflict { .. } => "conflict",
            ViewError::Denied { .. } => "denied",
            ViewError::Vault { .. } => "vault_error",
            ViewError::Aws { .. } => "aws_error",
            ViewError::Store { .. } => "store_error",
            ViewError::Value { .. } => "value_error",
        }
    }
}

/// What a reconcile did. `versions` maps each field of the view to the version it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The view already showed the current versions.
    Unchanged {
        versions: BTreeMap<String, VersionNo>,
    },
    /// The view was changed to show them; `revision` says what was written (a KV version,
    /// an AWS version id), for the log.
    Written {
        revision: String,
        versions: BTreeMap<String, VersionNo>,
    },
    /// A named secret has no current version yet: nothing written (never a partial
    /// document).
    NotYetPromoted,
}

/// The labelled versions of one secret a view is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labelled {
    pub current: VersionNo,
    /// The version labelled `previous`: the one before `current`, still valid in grace.
    pub previous: Option<VersionNo>,
}

/// The `current` (and `previous`) version of every secret in `secrets`; `None` if one has
/// no current version yet.
pub(crate) async fn labelled(
    store: &dyn Store,
    view: &str,
    secrets: &[SecretRef],
) -> Result<Option<BTreeMap<SecretRef, Labelled>>, ViewError> {
    let mut out = BTreeMap::new();
    for secret in secrets {
        if out.contains_key(secret) {
            continue;
        }
        let versions = store.versions(secret).await.map_err(|e| ViewError::Store {
            view: view.to_owned(),
            what: e.to_string(),
        })?;
        // Only `current` and `previous`: the store moves them at promotion, rollback and
        // expiry, never to a pending, failed or expired version.
        let find = |label: Label| {
            versions
                .iter()
                .find(|v| v.labels.contains(&label))
                .map(|v| v.version)
        };
        match find(Label::Current) {
            Some(current) => out.insert(
                secret.clone(),
                Labelled {
                    current,
                    previous: find(Label::Previous),
                },
            ),
            None => return Ok(None),
        };
    }
    Ok(Some(out))
}

/// Each field's version in `versions` (field name order).
pub(crate) fn field_versions(
    fields: &BTreeMap<String, ViewField>,
    versions: &BTreeMap<SecretRef, VersionNo>,
) -> BTreeMap<String, VersionNo> {
    fields
        .iter()
        .filter_map(|(name, f)| versions.get(&f.secret).map(|v| (name.clone(), *v)))
        .collect()
}

/// The text of one field: the version's value, or one field of it when it is JSON.
pub(crate) async fn field_text(
    store: &dyn Store,
    view: &str,
    name: &str,
    field: &ViewField,
    version: VersionNo,
) -> Result<String, ViewError> {
    let fail = |what: String| ViewError::Value {
        view: view.to_owned(),
        field: name.to_owned(),
        what,
    };
    let value = store
        .read_value(&field.secret, version)
        .await
        .map_err(|e| ViewError::Store {
            view: view.to_owned(),
            what: e.to_string(),
        })?;
    match &field.json_field {
        None => std::str::from_utf8(value.expose())
            .map(str::to_owned)
            .map_err(|_| {
                fail(format!(
                    "{} version {version} is not UTF-8 text, which a view cannot hold",
                    field.secret
                ))
            }),
        Some(key) => {
            let json: Value = serde_json::from_slice(value.expose())
                .map_err(|_| fail(format!("{} version {version} is not JSON", field.secret)))?;
            match json.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
                _ => Err(fail(format!(
                    "{} version {version} has no text field {key:?}",
                    field.secret
                ))),
            }
        }
    }
}

/// The document `versions` produce: every field's text, and `NAME_version` beside it.
pub(crate) async fn document(
    store: &dyn Store,
    view: &str,
    fields: &BTreeMap<String, ViewField>,
    versions: &BTreeMap<SecretRef, VersionNo>,
) -> Result<Map<String, Value>, ViewError> {
    let mut doc = Map::new();
    for (name, field) in fields {
        let Some(&version) = versions.get(&field.secret) else {
            return Err(ViewError::Value {
                view: view.to_owned(),
                field: name.clone(),
                what: format!("{} has no current version", field.secret),
            });
        };
        let text = field_text(store, view, name, field, version).await?;
        doc.insert(name.clone(), Value::String(text));
        doc.insert(
            format!("{name}_version"),
            Value::String(version.to_string()),
        );
    }
    Ok(doc)
}
