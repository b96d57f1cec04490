//! The managed secrets: `[[secrets]]` tables, one secret each, and `[[secret_sets]]`, many
//! secrets at once (every tenant of a list or a file times every key of a list, all under
//! one policy and one target), validated into one list with one duplicate check across
//! both forms.
//!
//! ```toml
//! [[secret_sets]]
//! tenants_file = "tenants.txt"   # or tenants = ["acme", "globex"]; exactly one of them
//! keys = ["db", "api"]
//! policy = "tenant_db"
//! target = { type = "none" }     # optional, as in [[secrets]]
//! ```
//!
//! A tenants file holds one tenant per line; blank lines and lines whose first non-blank
//! character is `#` are skipped, and whitespace around a tenant is ignored. A relative
//! `tenants_file` is read from the configuration file's directory: the file is part of the
//! configuration and travels with it (a ConfigMap mounts both side by side).
//!
//! A million secrets must load in seconds and hold little afterwards, so this path avoids
//! work per secret that a few secrets would not notice: key paths for messages are built
//! only when there is a message, one validated target is shared (`Arc`) by every secret of
//! a set, by consecutive `[[secrets]]` whose targets are equal and by the entries the
//! scanner took (`super::fast`) whose inline targets are written alike under one policy,
//! and duplicates are found through a map of 64-bit hashes to indices rather than of
//! cloned names. A taken entry is read from the text and goes through the same checks as
//! an entry of the parsed document, in document order.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::check::{Validator, join};
use super::fast::{self, Split};
use super::model::{Policy, SecretConfig};
use super::raw::{self, RawSecret};
use super::schema::{self, Field, Ty, f};
use crate::domain::{SecretRef, validate_ident};
use crate::target::TargetConfig;
use crate::target::config::RawTarget;

type S<T> = Spanned<T>;

/// The keys of a `[[secret_sets]]` entry, for the schema walk.
pub(super) const FIELDS: &[Field] = &[
    f("tenants", Ty::StrList),
    f("tenants_file", Ty::Str),
    f("keys", Ty::StrList),
    f("policy", Ty::Str),
    f(
        "target",
        Ty::Tagged {
            what: "target",
            variants: crate::target::config::TYPES,
        },
    ),
];

/// A `[[secret_sets]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecretSet {
    pub tenants: Option<S<Vec<S<String>>>>,
    pub tenants_file: Option<S<String>>,
    pub keys: Option<S<Vec<S<String>>>>,
    pub policy: Option<S<String>>,
    /// Taken out of the document and deserialized by its `type` (`raw::parse`).
    #[serde(skip)]
    pub target: Option<S<RawTarget>>,
}

/// Most problems reported for one tenants file (or one set's duplicates): past that, one
/// line says how many more there are, so a wrong file does not print a million lines.
const MAX_REPORTED: usize = 20;

/// Where one tenant of a set was written.
#[derive(Debug, Clone, Copy)]
enum TenantAt {
    /// `tenants[i]`.
    Index(u32),
    /// A line (1-based) of the tenants file.
    Line(u32),
}

/// Where a secret was declared, kept per secret until validation ends, for the message
/// about a later duplicate. Small on purpose: a million of them exist at once.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Secret(u32),
    Set {
        set: u32,
        tenant: TenantAt,
        key: u32,
    },
}

/// One set's tenants, read and checked.
struct SetTenants {
    /// `(tenant, where)`, without duplicates.
    tenants: Vec<(String, TenantAt, Range<usize>)>,
    /// The tenants file as shown in messages (resolved against the config's directory).
    file: Option<String>,
}

/// Validates `[[secrets]]` and then `[[secret_sets]]` into the managed secrets, in file
/// order within each form. `base_dir` resolves a relative `tenants_file`. With `fast`, the
/// `[[secrets]]` entries the scanner took are read from the text (`secrets` then holds
/// only the others, in order) and go through the same checks in document order.
pub(super) fn validate(
    v: &mut Validator<'_, '_>,
    secrets: &[Spanned<RawSecret>],
    sets: &[Spanned<RawSecretSet>],
    policies: &BTreeMap<String, Arc<Policy>>,
    broken: &HashSet<String>,
    base_dir: &Path,
    fast: Option<&Split<'_>>,
) -> Vec<SecretConfig> {
    let default_target = Arc::new(TargetConfig::default());
    let mut declared = Declarations {
        out: Vec::with_capacity(fast.map_or(secrets.len(), |f| f.entries.len())),
        registry: Registry::default(),
        last_target: default_target.clone(),
        default_target,
        policies,
        broken,
    };
    match fast {
        None => {
            for (i, spanned) in secrets.iter().enumerate() {
                declared.slow(v, i, spanned);
            }
        }
        Some(split) => {
            let mut slow = secrets.iter();
            let mut targets = HashMap::new();
            for (i, entry) in split.entries.iter().enumerate() {
                match entry {
                    None => {
                        if let Some(spanned) = slow.next() {
                            declared.slow(v, i, spanned);
                        }
                    }
                    Some((start, end)) => declared.fast(
                        v,
                        i,
                        split.text,
                        *start as usize..*end as usize,
                        &mut targets,
                    ),
                }
            }
        }
    }
    let Declarations {
        mut out,
        mut registry,
        default_target,
        ..
    } = declared;

    // The tenants file of each set seen so far, for messages about a duplicate.
    let mut files: Vec<Option<String>> = Vec::with_capacity(sets.len());
    for (i, spanned) in sets.iter().enumerate() {
        let set = spanned.get_ref();
        let path = format!("secret_sets[{i}]");
        let tenants = tenants(v, &path, spanned.span(), set, base_dir);
        let keys = keys(v, &path, spanned.span(), set.keys.as_ref());
        let policy = policy(
            v,
            &|| path.clone(),
            spanned.span(),
            set.policy.as_ref().map(spanned_str),
            policies,
            broken,
        );
        let target = match &set.target {
            None => Some(default_target.clone()),
            Some(raw) => {
                TargetConfig::validate(v, &path, Some(raw), policy.as_deref()).map(Arc::new)
            }
        };
        files.push(tenants.as_ref().and_then(|t| t.file.clone()));
        let (Some(tenants), Some(keys), Some(policy), Some(target)) =
            (tenants, keys, policy, target)
        else {
            continue;
        };
        out.reserve(tenants.tenants.len() * keys.len());
        let mut duplicates = 0usize;
        for (tenant, at, span) in &tenants.tenants {
            for (k, key) in keys.iter().enumerate() {
                let Ok(secret) = SecretRef::new(tenant, key) else {
                    continue;
                };
                let origin = Origin::Set {
                    set: i as u32,
                    tenant: *at,
                    key: k as u32,
                };
                if let Err(first) = registry.insert(&out, &secret, origin) {
                    duplicates += 1;
                    if duplicates <= MAX_REPORTED {
                        let here = describe_set_entry(tenants.file.as_deref(), *at, k);
                        let first = describe(first, &files);
                        v.diag.at(
                            Some(span.clone()),
                            &path,
                            format!(
                                "duplicate secret {secret} ({here}): already declared as {first}"
                            ),
                        );
                    }
                    continue;
                }
                out.push(SecretConfig {
                    secret,
                    policy: policy.clone(),
                    target: target.clone(),
                });
            }
        }
        if duplicates > MAX_REPORTED {
            v.diag.at(
                Some(spanned.span()),
                &path,
                format!(
                    "and {} more duplicate secrets in this set",
                    duplicates - MAX_REPORTED
                ),
            );
        }
    }
    out
}

/// A `[[secrets]]` entry's target, once checked.
enum Target {
    /// No `target` key (or one the schema walk removed): store only.
    Default,
    /// Validated, to be shared with the entry before when equal (boxed: the variants
    /// are large next to the other two).
    Validated(Box<TargetConfig>),
    /// Already shared.
    Shared(Arc<TargetConfig>),
}

/// The keys of one `[[secrets]]` entry, from either path: `(value, span)` each.
struct Declared<'a> {
    /// The entry's table (its `[[secrets]]` header).
    span: Range<usize>,
    tenant: Option<(&'a str, Range<usize>)>,
    key: Option<(&'a str, Range<usize>)>,
    policy: Option<(&'a str, Range<usize>)>,
}

/// The `[[secrets]]` entries validated so far.
struct Declarations<'p> {
    out: Vec<SecretConfig>,
    registry: Registry,
    default_target: Arc<TargetConfig>,
    last_target: Arc<TargetConfig>,
    policies: &'p BTreeMap<String, Arc<Policy>>,
    broken: &'p HashSet<String>,
}

/// The validated inline targets of taken entries, by their text and the entry's policy
/// (its address; the policies outlive the check): a million entries written alike are
/// parsed and checked once. Only a target that drew no message is kept.
type TargetCache<'t> = HashMap<(&'t str, usize), Arc<TargetConfig>>;

impl Declarations<'_> {
    /// An entry from the residual document.
    fn slow(&mut self, v: &mut Validator<'_, '_>, i: usize, spanned: &Spanned<RawSecret>) {
        let s = spanned.get_ref();
        let declared = Declared {
            span: spanned.span(),
            tenant: s.tenant.as_ref().map(spanned_str),
            key: s.key.as_ref().map(spanned_str),
            policy: s.policy.as_ref().map(spanned_str),
        };
        self.declare(v, i, declared, |v, path, policy| match &s.target {
            None => Some(Target::Default),
            Some(raw) => TargetConfig::validate(v, &path(), Some(raw), policy)
                .map(|t| Target::Validated(Box::new(t))),
        });
    }

    /// An entry the scanner took, read again from `text` (`section`: from its header's
    /// line to the next header).
    fn fast<'t>(
        &mut self,
        v: &mut Validator<'_, '_>,
        i: usize,
        text: &'t str,
        section: Range<usize>,
        targets: &mut TargetCache<'t>,
    ) {
        let span = fast::header_span(text, section.start);
        let body = fast::body_start(text, section.start);
        let Some(entry) = fast::parse_entry(text, body..section.end) else {
            // `fast::split` took the entry because this read it.
            debug_assert!(false, "a taken entry no longer reads");
            return;
        };
        let decode = |s: &fast::Str| (s.decode(text), s.span.clone());
        let (tenant, key, policy) = (
            entry.tenant.as_ref().map(decode),
            entry.key.as_ref().map(decode),
            entry.policy.as_ref().map(decode),
        );
        let declared = Declared {
            span,
            tenant: tenant.as_ref().map(|(s, r)| (&**s, r.clone())),
            key: key.as_ref().map(|(s, r)| (&**s, r.clone())),
            policy: policy.as_ref().map(|(s, r)| (&**s, r.clone())),
        };
        self.declare(v, i, declared, |v, path, policy| match entry.target {
            None => Some(Target::Default),
            Some(range) => fast_target(v, path, policy, text, range, targets),
        });
    }

    /// Checks one entry and adds its secret unless something was reported; `target`
    /// checks its target (given the entry's key path and its policy when that resolved).
    fn declare(
        &mut self,
        v: &mut Validator<'_, '_>,
        i: usize,
        d: Declared<'_>,
        target: impl FnOnce(
            &mut Validator<'_, '_>,
            &dyn Fn() -> String,
            Option<&Policy>,
        ) -> Option<Target>,
    ) {
        let path = || format!("secrets[{i}]");
        let tenant = ident(v, &path, d.span.clone(), "tenant", d.tenant.clone());
        let key = ident(v, &path, d.span.clone(), "key", d.key.clone());
        let policy = policy(
            v,
            &path,
            d.span.clone(),
            d.policy.clone(),
            self.policies,
            self.broken,
        );
        let target = target(v, &path, policy.as_deref()).map(|t| match t {
            Target::Default => self.default_target.clone(),
            Target::Validated(t) => share(&mut self.last_target, *t),
            Target::Shared(t) => t,
        });
        let (Some(tenant), Some(key), Some(policy), Some(target)) = (tenant, key, policy, target)
        else {
            return;
        };
        // Both parts were validated above, each with its own diagnostic.
        let Ok(secret) = SecretRef::new(tenant, key) else {
            return;
        };
        if let Err(first) = self
            .registry
            .insert(&self.out, &secret, Origin::Secret(i as u32))
        {
            let span = d.key.map_or(d.span, |(_, k)| k);
            let first = describe(first, &[]);
            v.diag.at(
                Some(span),
                &path(),
                format!("duplicate secret {secret}: already declared as {first}"),
            );
            return;
        }
        self.out.push(SecretConfig {
            secret,
            policy,
            target,
        });
    }
}

/// The target of a taken entry, written as the inline table at `range`: parsed by the
/// TOML parser, its spans moved to `range`, checked by the schema walk and validated as
/// the residual document's targets are.
fn fast_target<'t>(
    v: &mut Validator<'_, '_>,
    path: &dyn Fn() -> String,
    policy: Option<&Policy>,
    text: &'t str,
    range: Range<usize>,
    targets: &mut TargetCache<'t>,
) -> Option<Target> {
    let written = &text[range.clone()];
    let cache_key = (written, policy.map_or(0, |p| p as *const Policy as usize));
    if let Some(target) = targets.get(&cache_key) {
        return Some(Target::Shared(target.clone()));
    }
    // `fast::split` took the entry only if this parses.
    let value = DeValue::parse(written).ok()?;
    let offset = range.start;
    let mut value = fast::shift_value(value, &|r| r.start + offset..r.end + offset);
    let before = v.diag.len();
    let target_path = join(&path(), "target");
    let (kept, mut pruned) = schema::check_value(v.diag, &target_path, &mut value);
    let raw = if kept {
        match raw::typed_target(value) {
            Ok(raw) => raw,
            Err(e) => {
                // Unreachable while the schema and the raw structs agree.
                v.diag.at(e.span(), "document", e.message().to_owned());
                return None;
            }
        }
    } else {
        pruned.insert(target_path);
        None
    };
    let Some(raw) = raw else {
        return Some(Target::Default);
    };
    let mut local = Validator {
        diag: &mut *v.diag,
        pruned: &pruned,
    };
    let target = Arc::new(TargetConfig::validate(
        &mut local,
        &path(),
        Some(&raw),
        policy,
    )?);
    if v.diag.len() == before {
        targets.insert(cache_key, target.clone());
    }
    Some(Target::Shared(target))
}

fn spanned_str(s: &Spanned<String>) -> (&str, Range<usize>) {
    (s.get_ref().as_str(), s.span())
}

/// `t` itself or, when equal, the target before it: consecutive `[[secrets]]` with the
/// same target share one allocation.
fn share(last: &mut Arc<TargetConfig>, t: TargetConfig) -> Arc<TargetConfig> {
    if **last != t {
        *last = Arc::new(t);
    }
    last.clone()
}

/// A required identifier key of a `[[secrets]]` table.
fn ident<'r>(
    v: &mut Validator<'_, '_>,
    path: &dyn Fn() -> String,
    table: Range<usize>,
    key: &str,
    value: Option<(&'r str, Range<usize>)>,
) -> Option<&'r str> {
    match value {
        None => {
            v.missing(
                Some(table),
                &join(&path(), key),
                format!("missing key `{key}`"),
            );
            None
        }
        Some((text, span)) => match validate_ident(text) {
            Ok(()) => Some(text),
            Err(e) => {
                v.diag.value(span, &join(&path(), key), e.to_string());
                None
            }
        },
    }
}

/// The policy a secret or set names, `None` when missing, unknown or itself broken.
fn policy(
    v: &mut Validator<'_, '_>,
    path: &dyn Fn() -> String,
    table: Range<usize>,
    value: Option<(&str, Range<usize>)>,
    policies: &BTreeMap<String, Arc<Policy>>,
    broken: &HashSet<String>,
) -> Option<Arc<Policy>> {
    match value {
        None => {
            v.missing(
                Some(table),
                &join(&path(), "policy"),
                "missing key `policy`: the name of the policy that rotates this secret",
            );
            None
        }
        Some((name, span)) => match policies.get(name) {
            Some(p) => Some(p.clone()),
            None if broken.contains(name) => None,
            None => {
                let known = policies.keys().cloned().collect::<Vec<_>>().join(", ");
                v.diag.value(
                    span,
                    &join(&path(), "policy"),
                    format!("no policy has this name; known policies: {known}"),
                );
                None
            }
        },
    }
}

/// A set's `keys`: required, not empty, identifiers, no duplicates.
fn keys<'r>(
    v: &mut Validator<'_, '_>,
    path: &str,
    table: Range<usize>,
    value: Option<&'r Spanned<Vec<Spanned<String>>>>,
) -> Option<Vec<&'r str>> {
    let key_path = join(path, "keys");
    let Some(list) = value else {
        v.missing(
            Some(table),
            &key_path,
            "missing key `keys`: the keys every tenant of the set has, e.g. [\"db\", \"api\"]",
        );
        return None;
    };
    if list.get_ref().is_empty() {
        v.diag.value(
            list.span(),
            &key_path,
            "must name at least one key, e.g. [\"db\", \"api\"]",
        );
        return None;
    }
    let before = v.diag.len();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut keys = Vec::with_capacity(list.get_ref().len());
    for (j, key) in list.get_ref().iter().enumerate() {
        let item_path = format!("{key_path}[{j}]");
        if let Err(e) = validate_ident(key.get_ref()) {
            v.diag.value(key.span(), &item_path, e.to_string());
        } else if let Some(first) = seen.insert(key.get_ref().as_str(), j) {
            v.diag.value(
                key.span(),
                &item_path,
                format!("duplicate key: already listed as keys[{first}]"),
            );
        } else {
            keys.push(key.get_ref().as_str());
        }
    }
    (v.diag.len() == before).then_some(keys)
}

/// A set's tenants, from exactly one of `tenants` and `tenants_file`.
fn tenants(
    v: &mut Validator<'_, '_>,
    path: &str,
    table: Range<usize>,
    set: &RawSecretSet,
    base_dir: &Path,
) -> Option<SetTenants> {
    match (&set.tenants, &set.tenants_file) {
        (Some(_), Some(file)) => {
            v.diag.at(
                Some(file.span()),
                &join(path, "tenants_file"),
                "give exactly one of `tenants` and `tenants_file`, not both",
            );
            None
        }
        (None, None) => {
            let (list, file) = (join(path, "tenants"), join(path, "tenants_file"));
            // Either may have been removed by the schema walk, which reported it.
            if !v.pruned.contains(&list) && !v.pruned.contains(&file) {
                v.diag.at(
                    Some(table),
                    path,
                    "missing key `tenants` or `tenants_file`: the tenants of the set, as a \
                     list or a file with one tenant per line",
                );
            }
            None
        }
        (Some(list), None) => tenants_list(v, path, list),
        (None, Some(file)) => tenants_file(v, path, file, base_dir),
    }
}

fn tenants_list(
    v: &mut Validator<'_, '_>,
    path: &str,
    list: &Spanned<Vec<Spanned<String>>>,
) -> Option<SetTenants> {
    let key_path = join(path, "tenants");
    if list.get_ref().is_empty() {
        v.diag
            .value(list.span(), &key_path, "must name at least one tenant");
        return None;
    }
    let before = v.diag.len();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut tenants = Vec::with_capacity(list.get_ref().len());
    for (j, tenant) in list.get_ref().iter().enumerate() {
        let item_path = format!("{key_path}[{j}]");
        if let Err(e) = validate_ident(tenant.get_ref()) {
            v.diag.value(tenant.span(), &item_path, e.to_string());
        } else if let Some(first) = seen.insert(tenant.get_ref().as_str(), j) {
            v.diag.value(
                tenant.span(),
                &item_path,
                format!("duplicate tenant: already listed as tenants[{first}]"),
            );
        } else {
            tenants.push((
                tenant.get_ref().clone(),
                TenantAt::Index(j as u32),
                tenant.span(),
            ));
        }
    }
    (v.diag.len() == before).then_some(SetTenants {
        tenants,
        file: None,
    })
}

fn tenants_file(
    v: &mut Validator<'_, '_>,
    path: &str,
    file: &Spanned<String>,
    base_dir: &Path,
) -> Option<SetTenants> {
    let key_path = join(path, "tenants_file");
    if file.get_ref().trim().is_empty() {
        v.diag.value(file.span(), &key_path, "must not be empty");
        return None;
    }
    let resolved: PathBuf = base_dir.join(file.get_ref());
    let shown = resolved.display().to_string();
    let text = match std::fs::read_to_string(&resolved) {
        Ok(text) => text,
        Err(e) => {
            v.diag.value(
                file.span(),
                &key_path,
                format!("cannot read the tenants file {shown}: {e}"),
            );
            return None;
        }
    };
    let mut problems = 0usize;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut tenants = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u32 + 1;
        let tenant = line.trim();
        if tenant.is_empty() || tenant.starts_with('#') {
            continue;
        }
        let problem = match validate_ident(tenant) {
            Err(e) => Some(format!("{shown}:{line_no}: tenant {}: {e}", quote(tenant))),
            Ok(()) => seen.insert(tenant, line_no).map(|first| {
                format!("{shown}:{line_no}: duplicate tenant {tenant:?}: already on line {first}")
            }),
        };
        match problem {
            Some(message) => {
                problems += 1;
                if problems <= MAX_REPORTED {
                    v.diag.at(Some(file.span()), &key_path, message);
                }
            }
            None => tenants.push((tenant.to_owned(), TenantAt::Line(line_no), file.span())),
        }
    }
    if problems > MAX_REPORTED {
        v.diag.at(
            Some(file.span()),
            &key_path,
            format!("{shown}: and {} more bad lines", problems - MAX_REPORTED),
        );
    }
    if problems > 0 {
        return None;
    }
    if tenants.is_empty() {
        v.diag.value(
            file.span(),
            &key_path,
            format!("{shown} names no tenant (blank lines and # comments are skipped)"),
        );
        return None;
    }
    Some(SetTenants {
        tenants,
        file: Some(shown),
    })
}

/// A line of a tenants file, quoted and shortened for a message.
fn quote(text: &str) -> String {
    const MAX: usize = 60;
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

/// `tenants.txt:17, keys[2]` or `tenants[4], keys[2]`.
fn describe_set_entry(file: Option<&str>, at: TenantAt, key: usize) -> String {
    match (at, file) {
        (TenantAt::Line(line), Some(file)) => format!("{file}:{line}, keys[{key}]"),
        (TenantAt::Line(line), None) => format!("tenants file line {line}, keys[{key}]"),
        (TenantAt::Index(j), _) => format!("tenants[{j}], keys[{key}]"),
    }
}

/// The secrets declared so far: a 64-bit hash of each name to its index in the output,
/// with the rare name whose hash another name already holds kept whole beside it.
#[derive(Default)]
struct Registry {
    by_hash: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    collided: HashMap<SecretRef, u32>,
    origins: Vec<Origin>,
}

impl Registry {
    /// Records `secret` as the next entry of `out`, or returns where it was declared first.
    fn insert(
        &mut self,
        out: &[SecretConfig],
        secret: &SecretRef,
        origin: Origin,
    ) -> Result<(), Origin> {
        let index = self.origins.len() as u32;
        debug_assert_eq!(index as usize, out.len());
        match self.by_hash.entry(name_hash(secret)) {
            Entry::Vacant(e) => {
                e.insert(index);
            }
            Entry::Occupied(e) => {
                let first = *e.get() as usize;
                if out.get(first).is_some_and(|s| &s.secret == secret) {
                    return Err(self.origins[first]);
                }
                match self.collided.entry(secret.clone()) {
                    Entry::Occupied(e) => return Err(self.origins[*e.get() as usize]),
                    Entry::Vacant(e) => {
                        e.insert(index);
                    }
                }
            }
        }
        self.origins.push(origin);
        Ok(())
    }
}

/// Where `origin` is, for a message; `files` holds each set's tenants file.
fn describe(origin: Origin, files: &[Option<String>]) -> String {
    match origin {
        Origin::Secret(i) => format!("secrets[{i}]"),
        Origin::Set { set, tenant, key } => {
            let file = files.get(set as usize).and_then(|f| f.as_deref());
            format!(
                "secret_sets[{set}] ({})",
                describe_set_entry(file, tenant, key as usize)
            )
        }
    }
}

/// The standard library's SipHash, unkeyed (`DefaultHasher::new`), of `tenant`, a
/// separator no identifier contains, and `key`. A collision is handled by [`Registry`].
fn name_hash(secret: &SecretRef) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    secret.tenant().hash(&mut h);
    0xffu8.hash(&mut h);
    secret.key().hash(&mut h);
    h.finish()
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
