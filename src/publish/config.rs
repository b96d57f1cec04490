//! `[[publish]]`: the keys of a publish destination, their checks, and the validated
//! [`PublishConfig`] a publisher runs with. Whether each named secret is managed is a
//! cross-reference, checked by the config module with the rest of the document.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Field, SecretMention, Ty, Validator, f, join};
use crate::domain::SecretRef;

type S<T> = Spanned<T>;

const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The keys of a `[[publish]]` entry, for the schema walk.
pub(crate) const FIELDS: &[Field] = &[
    f("path", Ty::Str),
    f("secrets", Ty::StrListOrMap),
    f("interval", Ty::Duration),
];

/// `[[publish]]`: a directory rotor writes the current versions into, kubelet style.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    path: Option<S<String>>,
    /// An array of `tenant/key` (file name = key) or a table file name -> `tenant/key`.
    secrets: Option<S<RawPublishSecrets>>,
    interval: Option<S<String>>,
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

/// Checks every `[[publish]]` entry; each secret it names is added to `mentions`, which
/// the config module checks against the managed secrets.
pub(crate) fn validate(
    v: &mut Validator<'_, '_>,
    raw: &[Spanned<RawPublish>],
    mentions: &mut Vec<SecretMention>,
) -> Vec<PublishConfig> {
    let mut out = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for (i, spanned) in raw.iter().enumerate() {
        let path = format!("publish[{i}]");
        let p = spanned.get_ref();
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
    out
}
