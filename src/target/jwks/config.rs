//! `target = { type = "jwks", ... }`: the keys of a JWKS file target, their checks, and
//! the [`JwksTarget`] built from them.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{Algorithm, JwksTarget};
use crate::config::{Field, Policy, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::generator::GeneratorSpec;
use crate::target::{Target, ValueReader};

/// The keys a jwks target takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[f("path", Ty::Str), f("algorithm", Ty::Str)];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwks {
    /// The JWKS file.
    path: Option<Spanned<String>>,
    /// `ed25519` or `hs256`.
    algorithm: Option<Spanned<String>>,
}

/// A JWKS file holding the current and, during grace, the previous key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub path: PathBuf,
    pub algorithm: Algorithm,
}

impl JwksConfig {
    /// Checks `t` (the table at `path`, spanning `span`); `policy` is the secret's policy when it
    /// resolved, whose generator must make the keys `algorithm` publishes.
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        path: &str,
        span: Range<usize>,
        t: &RawJwks,
        policy: Option<&Policy>,
    ) -> JwksConfig {
        let file = v.required_file(path, "path", span.clone(), &t.path);
        let algorithm = match t.algorithm.as_ref().map(|a| (a, a.get_ref().as_str())) {
            None | Some((_, "ed25519")) => Algorithm::Ed25519,
            Some((_, "hs256")) => Algorithm::Hs256,
            Some((a, _)) => {
                v.diag.value(
                    a.span(),
                    &join(path, "algorithm"),
                    "expected \"ed25519\" or \"hs256\"",
                );
                Algorithm::Ed25519
            }
        };
        if let Some(p) = policy {
            let (fits, want) = match algorithm {
                Algorithm::Ed25519 => (matches!(p.generator, GeneratorSpec::Ed25519), "ed25519"),
                Algorithm::Hs256 => (matches!(p.generator, GeneratorSpec::Hmac { .. }), "hmac"),
            };
            if !fits {
                let span = t.algorithm.as_ref().map_or(span.clone(), |a| a.span());
                v.diag.value(
                    span,
                    &join(path, "algorithm"),
                    format!("needs a policy whose generator type is \"{want}\"; policy `{}` generates something else", p.name),
                );
            }
        }
        JwksConfig {
            path: file,
            algorithm,
        }
    }

    /// The target this configuration describes; `reader` is how it reads stored values.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        Arc::new(JwksTarget::new(
            secret.clone(),
            self.path.clone(),
            self.algorithm,
            reader.clone(),
        ))
    }
}
