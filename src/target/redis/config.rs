//! `target = { type = "redis", ... }`: the keys of a Redis ACL user target, their checks,
//! and the [`RedisTarget`] built from them.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{Persist, RedisTarget};
use crate::config::{Field, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::target::{Target, ValueReader};

/// The keys a redis target takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[
    f("admin_url_file", Ty::Str),
    f("user", Ty::Str),
    f("persist", Ty::Str),
];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    /// File holding the admin connection URL.
    admin_url_file: Option<Spanned<String>>,
    /// The ACL user.
    user: Option<Spanned<String>>,
    /// `auto`, `acl_save` or `none` (whether ACL changes are saved to the aclfile).
    persist: Option<Spanned<String>>,
}

/// A Redis ACL user; the admin connection URL is read from `admin_url_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub admin_url_file: PathBuf,
    pub user: String,
    /// Whether rotor's ACL changes are written to the server's aclfile.
    pub persist: Persist,
}

impl RedisConfig {
    /// Checks `t` (the table at `path`, spanning `span`).
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        path: &str,
        span: Range<usize>,
        t: &RawRedis,
    ) -> RedisConfig {
        let admin_url_file =
            v.required_file(path, "admin_url_file", span.clone(), &t.admin_url_file);
        let user = match &t.user {
            None => {
                v.missing(
                    Some(span.clone()),
                    &join(path, "user"),
                    "missing key `user`: the Redis ACL user whose passwords rotor rotates",
                );
                String::new()
            }
            Some(u) => {
                let name = u.get_ref();
                if name.is_empty()
                    || name.len() > 128
                    || !name.bytes().all(|b| b.is_ascii_graphic())
                {
                    v.diag.value(
                        u.span(),
                        &join(path, "user"),
                        "must be 1 to 128 printable ASCII characters without spaces",
                    );
                }
                name.clone()
            }
        };
        let persist = match t.persist.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "auto")) => Persist::Auto,
            Some((_, "acl_save")) => Persist::AclSave,
            Some((_, "none")) => Persist::None,
            Some((p, _)) => {
                v.diag.value(
                    p.span(),
                    &join(path, "persist"),
                    "expected \"auto\" (ACL SAVE after each change, warn if Redis has no \
                     aclfile), \"acl_save\" (ACL SAVE after each change, fail the step if \
                     it cannot) or \"none\" (never save)",
                );
                Persist::Auto
            }
        };
        RedisConfig {
            admin_url_file,
            user,
            persist,
        }
    }

    /// The target this configuration describes; `reader` is how it reads stored values.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        Arc::new(
            RedisTarget::new(
                secret.clone(),
                self.admin_url_file.clone(),
                self.user.clone(),
                reader.clone(),
            )
            .with_persist(self.persist),
        )
    }
}
