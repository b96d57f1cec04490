//! The store's layout, and moving a store of the first layout into the current one, once,
//! when it is opened.
//!
//! Layout 1 kept a secret's values at `{path_prefix}/{tenant}/{key}` and its state
//! document at `{path_prefix}/{tenant}/{key}/_rotor`. Consumers (the Vault CSI provider,
//! Vault Agent, External Secrets, `vault kv get`) read the latest KV version of a path, so
//! one pointed there saw pending and failed versions. Layout 2 is the same tree moved
//! below `{path_prefix}/_rotor`, with the marker `{path_prefix}/_rotor/_layout`
//! (`{"layout": 2, "migrated_secrets": N}`) saying that the move is done.
//!
//! On open, without the marker: every secret found in layout 1 (a folder `{tenant}/{key}`
//! holding a state document, or a value path holding versions rotor wrote) is copied:
//!
//! 1. the value path's metadata (`max_versions`, `cas_required`, the label mirror), so a
//!    long history is not pruned below what layout 1 kept while the versions are copied;
//! 2. every KV version, in order, check-and-set on the previous one, so KV version N stays
//!    rotor version N (what [`VaultStore::read_value`] and `put_version`'s replay rely
//!    on). A version rotor did not write, or one Vault no longer holds, becomes a
//!    placeholder without a value, which reads as no such version, as before;
//! 3. the state document (journal, version metadata, labels, history), as it is;
//!
//! then every copy is read back and compared with its original, and only then is the
//! marker written. Each step first looks at what the new layout already holds and writes
//! only what is missing or differs, so a migration cut short anywhere (a crash, a lost
//! connection) is finished by the next open; until the marker exists, layout 1 is the
//! source of truth and the copy is refreshed from it. Two processes migrating at once
//! meet on check-and-set: the loser finds the same data and carries on.
//!
//! The layout 1 paths are left in place: a migration must not lose data on a bug of its
//! own, and an operator deletes them (`vault kv metadata delete`) after checking the
//! copy. The store never writes them again. Values are compared, never logged.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretMetadataRequest};
use vaultrs::api::kv2::responses::ReadSecretMetadataResponse;

use super::{Failure, STATE_DOC, STORE_DIR, StateDoc, VaultStore, cas_index, classify, label_set};
use crate::domain::SecretRef;
use crate::store::StoreError;

/// The layout this build writes.
const LAYOUT: u64 = 2;

/// Name of the layout marker in the store's folder. Not a tenant: identifiers never start
/// with `_`.
const LAYOUT_DOC: &str = "_layout";

/// The data of a KV version that holds no rotor value: the copy of a version rotor did not
/// write, or of one Vault had already deleted or pruned.
fn placeholder() -> Value {
    json!({ "rotor_placeholder": "no rotor value in this version of the layout 1 path" })
}

/// How many more writes a migration may make; a test stops one midway with it, as a crash
/// would.
pub(super) struct Budget(Option<usize>);

impl Budget {
    pub(super) fn unlimited() -> Budget {
        Budget(None)
    }

    #[cfg(feature = "test-util")]
    pub(super) fn at_most(writes: usize) -> Budget {
        Budget(Some(writes))
    }

    fn spend(&mut self) -> Result<(), StoreError> {
        match &mut self.0 {
            None => Ok(()),
            Some(0) => Err(StoreError::Backend(
                "layout migration stopped before its next write (the test's write budget is spent); opening again resumes it".to_owned(),
            )),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}

impl VaultStore {
    /// Makes sure the store is in layout [`LAYOUT`], migrating layout 1 if the marker is
    /// missing. See the module documentation.
    pub(super) async fn ensure_layout(&self, budget: &mut Budget) -> Result<(), StoreError> {
        if self.layout().await?.is_some() {
            return Ok(());
        }
        let secrets = self.layout1_secrets().await?;
        for secret in &secrets {
            self.copy_secret(secret, budget).await?;
        }
        for secret in &secrets {
            if let Err(e) = self.check_copy(secret).await {
                // Another process may have finished the migration and written since.
                return match self.layout().await? {
                    Some(_) => Ok(()),
                    None => Err(e),
                };
            }
        }
        budget.spend()?;
        let marker = json!({ "layout": LAYOUT, "migrated_secrets": secrets.len() });
        let path = self.layout_path();
        let shown = self.shown(&path);
        match self.write_kv(&path, &marker, 0, &shown).await {
            Ok(_) => {
                if !secrets.is_empty() {
                    tracing::info!(
                        secrets = secrets.len(),
                        marker = %shown,
                        "copied the Vault store into its layout below _rotor; the old paths are left in place for an operator to delete after checking"
                    );
                }
                Ok(())
            }
            // Another process wrote it first.
            Err(StoreError::Conflict { .. }) if self.layout().await?.is_some() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn layout_path(&self) -> String {
        format!("{}/{LAYOUT_DOC}", self.store_dir())
    }

    /// The layout the marker names, `None` without a marker; a newer layout is refused,
    /// not misread.
    async fn layout(&self) -> Result<Option<u64>, StoreError> {
        let path = self.layout_path();
        let shown = self.shown(&path);
        let Some((data, _)) = self.read_raw(&path, None).await? else {
            return Ok(None);
        };
        match data.get("layout").and_then(Value::as_u64) {
            Some(layout) if layout <= LAYOUT => Ok(Some(layout)),
            Some(layout) => Err(StoreError::Backend(format!(
                "{shown} says the store is in layout {layout}, newer than this rotor's {LAYOUT}; use a matching rotor release"
            ))),
            None => Err(StoreError::Backend(format!(
                "{shown} is not rotor's layout marker (no numeric `layout`)"
            ))),
        }
    }

    fn layout1_value_path(&self, secret: &SecretRef) -> String {
        self.under_prefix(&format!("{}/{}", secret.tenant(), secret.key()))
    }

    /// Every `tenant/key` that layout 1 may hold: a value path or a folder under a tenant
    /// folder directly below the prefix. Which of them hold rotor's data is found out when
    /// copying.
    async fn layout1_secrets(&self) -> Result<Vec<SecretRef>, StoreError> {
        let mut out = BTreeSet::new();
        for tenant in self.list(&self.under_prefix("")).await? {
            // `_rotor/` is the store's own folder; any other name that is not an
            // identifier is not rotor's.
            let Some(tenant) = tenant.strip_suffix('/') else {
                continue;
            };
            if tenant == STORE_DIR {
                continue;
            }
            for key in self.list(&self.under_prefix(&format!("{tenant}/"))).await? {
                let key = key.strip_suffix('/').unwrap_or(&key);
                if let Ok(secret) = SecretRef::new(tenant, key) {
                    out.insert(secret);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Copies one secret's metadata, versions and state document into the current layout,
    /// writing only what is missing or differs.
    async fn copy_secret(&self, secret: &SecretRef, budget: &mut Budget) -> Result<(), StoreError> {
        let old_path = self.layout1_value_path(secret);
        let new_path = self.value_path(secret);
        let old_doc_path = format!("{old_path}/{STATE_DOC}");
        let old_doc = self.read_raw(&old_doc_path, None).await?;
        if let Some(old_meta) = self.read_metadata(&old_path).await? {
            let rotor_versions = self.rotor_versions(&old_path, &old_meta).await?;
            if old_doc.is_some() || !rotor_versions.is_empty() {
                self.copy_values(&old_path, &new_path, &old_meta, old_doc.as_ref(), budget)
                    .await?;
            }
        }
        if let Some((doc, _)) = old_doc {
            let new_doc_path = format!("{new_path}/{STATE_DOC}");
            let shown = self.shown(&new_doc_path);
            let cas = match self.read_raw(&new_doc_path, None).await? {
                Some((found, _)) if found == doc => return Ok(()),
                Some((_, index)) => index,
                None => 0,
            };
            budget.spend()?;
            self.write_kv(&new_doc_path, &doc, cas_index(cas, &shown)?, &shown)
                .await?;
        }
        Ok(())
    }

    /// The versions of a layout 1 value path that rotor wrote (that carry `rotor_rotation`).
    async fn rotor_versions(
        &self,
        path: &str,
        meta: &ReadSecretMetadataResponse,
    ) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for version in 1..=meta.current_version {
            if let Some(data) = self.read_raw(path, Some(version)).await?
                && data.0.get("rotor_rotation").is_some()
            {
                out.push(version);
            }
        }
        Ok(out)
    }

    async fn copy_values(
        &self,
        old_path: &str,
        new_path: &str,
        old_meta: &ReadSecretMetadataResponse,
        old_doc: Option<&(Value, u64)>,
        budget: &mut Budget,
    ) -> Result<(), StoreError> {
        let shown = self.shown(new_path);
        // The label mirror as the state document has it (the document is authoritative;
        // layout 1's mirror is written best effort).
        let custom: HashMap<String, String> = old_doc
            .and_then(|(doc, _)| serde_json::from_value::<StateDoc>(doc.clone()).ok())
            .map(|doc| {
                label_set(&doc.versions)
                    .into_iter()
                    .map(|(label, version)| {
                        (format!("rotor_{}", label.as_str()), version.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let new_meta = self.read_metadata(new_path).await?;
        let settled = new_meta.as_ref().is_some_and(|m| {
            m.max_versions == old_meta.max_versions
                && m.cas_required
                && m.custom_metadata.clone().unwrap_or_default() == custom
        });
        if !settled {
            budget.spend()?;
            let shown_meta = format!("{}/metadata/{new_path}", self.session.settings.mount);
            self.request("write metadata", &shown_meta, |client, mount| {
                let mut req = SetSecretMetadataRequest::builder();
                req.cas_required(true)
                    .max_versions(old_meta.max_versions)
                    .custom_metadata(custom.clone());
                async move {
                    vaultrs::kv2::set_metadata(&*client, mount, new_path, Some(&mut req))
                        .await
                        .map_err(classify)
                }
            })
            .await
            .map_err(|f| f.into_store_error(&shown_meta))?;
        }
        let have = new_meta.map_or(0, |m| m.current_version);
        if have > old_meta.current_version {
            return Err(StoreError::Backend(format!(
                "{shown} holds {have} versions, more than the {} of {} it is being copied from, and the store has no layout marker; check both paths",
                old_meta.current_version,
                self.shown(old_path)
            )));
        }
        for version in have + 1..=old_meta.current_version {
            let data = match self.read_raw(old_path, Some(version)).await? {
                Some((data, _)) if data.get("rotor_rotation").is_some() => data,
                _ => placeholder(),
            };
            budget.spend()?;
            let cas = cas_index(version - 1, &shown)?;
            match self.write_kv(new_path, &data, cas, &shown).await {
                Ok(_) => {}
                // Another process copied this version first: fine if it is the same.
                Err(StoreError::Conflict { path }) => {
                    if self.read_raw(new_path, Some(version)).await?.map(|f| f.0) != Some(data) {
                        return Err(StoreError::Conflict { path });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads every copy back and compares it with its layout 1 original.
    async fn check_copy(&self, secret: &SecretRef) -> Result<(), StoreError> {
        let old_path = self.layout1_value_path(secret);
        let new_path = self.value_path(secret);
        let mismatch = |what: String| {
            StoreError::Backend(format!(
                "layout migration check failed: {what} differs from its original under {}; the migration runs again on the next open",
                self.shown(&old_path)
            ))
        };
        let old_doc_path = format!("{old_path}/{STATE_DOC}");
        let new_doc_path = format!("{new_path}/{STATE_DOC}");
        let old_doc = self.read_raw(&old_doc_path, None).await?;
        if let Some((doc, _)) = &old_doc
            && self
                .read_raw(&new_doc_path, None)
                .await?
                .map(|d| d.0)
                .as_ref()
                != Some(doc)
        {
            return Err(mismatch(self.shown(&new_doc_path)));
        }
        let Some(old_meta) = self.read_metadata(&old_path).await? else {
            return Ok(());
        };
        let rotor_versions = self.rotor_versions(&old_path, &old_meta).await?;
        if old_doc.is_none() && rotor_versions.is_empty() {
            return Ok(());
        }
        for version in rotor_versions {
            let old = self.read_raw(&old_path, Some(version)).await?;
            let new = self.read_raw(&new_path, Some(version)).await?;
            if old.map(|d| d.0) != new.map(|d| d.0) {
                return Err(mismatch(format!(
                    "{} version {version}",
                    self.shown(&new_path)
                )));
            }
        }
        Ok(())
    }

    /// The data of a KV path (its latest version, or `version`) and its version number;
    /// `None` if Vault holds no such live version.
    async fn read_raw(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<(Value, u64)>, StoreError> {
        let shown = match version {
            Some(v) => format!("{}?version={v}", self.shown(path)),
            None => self.shown(path),
        };
        let found = self
            .request("read", &shown, |client, mount| async move {
                let req = ReadSecretRequest::builder()
                    .mount(mount)
                    .path(path)
                    .version(version)
                    .build()
                    .map_err(|e| Failure::Other(e.to_string()))?;
                vaultrs::api::exec_with_result(&*client, req)
                    .await
                    .map_err(classify)
            })
            .await;
        match found {
            Ok(resp) if resp.data.is_object() => Ok(Some((resp.data, resp.metadata.version))),
            Ok(_) | Err(Failure::Status(404, _)) | Err(Failure::EmptyData) => Ok(None),
            Err(f) => Err(f.into_store_error(&shown)),
        }
    }

    /// The KV metadata of a path; `None` if it does not exist.
    async fn read_metadata(
        &self,
        path: &str,
    ) -> Result<Option<ReadSecretMetadataResponse>, StoreError> {
        let shown = format!("{}/metadata/{path}", self.session.settings.mount);
        let found = self
            .request("read metadata", &shown, |client, mount| async move {
                vaultrs::kv2::read_metadata(&*client, mount, path)
                    .await
                    .map_err(classify)
            })
            .await;
        match found {
            Ok(meta) => Ok(Some(meta)),
            Err(Failure::Status(404, _)) => Ok(None),
            Err(f) => Err(f.into_store_error(&shown)),
        }
    }
}
