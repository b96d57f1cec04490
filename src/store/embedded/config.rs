//! `[store] type = "embedded"` (the default): the keys of the local redb store and their
//! checks.

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Field, StoreConfig, Ty, Validator, f};

pub(crate) const DEFAULT_STORE_PATH: &str = "data/rotor.redb";
/// Also the default of the Vault store's fingerprint key.
pub(crate) const DEFAULT_MASTER_KEY_FILE: &str = "data/master.key";

/// The keys an embedded store takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[f("path", Ty::Str), f("master_key_file", Ty::Str)];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmbedded {
    path: Option<Spanned<String>>,
    master_key_file: Option<Spanned<String>>,
}

/// Checks `raw` (absent: no `[store]` table, every default).
pub(crate) fn validate(v: &mut Validator<'_, '_>, raw: Option<&RawEmbedded>) -> StoreConfig {
    StoreConfig::Embedded {
        path: v.non_empty_path(
            "store.path",
            raw.and_then(|r| r.path.as_ref()),
            DEFAULT_STORE_PATH,
        ),
        master_key_file: v.non_empty_path(
            "store.master_key_file",
            raw.and_then(|r| r.master_key_file.as_ref()),
            DEFAULT_MASTER_KEY_FILE,
        ),
    }
}
