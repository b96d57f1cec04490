//! Property-based fuzzing of rotor's input decoders, on stable Rust (proptest): the
//! configuration checker (random TOML trees and byte mutations of the shipped files), the
//! admin API (random methods, paths, headers and bodies through the real router), and the
//! mount scanner (random trees of files, directories, links, FIFOs and sparse huge files).
//! The embedded store's record decoding is fuzzed beside the store, in
//! `src/store/embedded.rs` (`mod fuzz`), because its table layout is private.
//!
//! Each target runs `ROTOR_FUZZ_CASES` cases (a bounded default per target here, so this
//! file stays within about a minute on a loaded 2-core machine) and prints one line,
//! `fuzz target=NAME cases=N failures=F`, which `scripts/fuzz.sh` collects for long runs.
//! A failing case is shrunk by proptest and saved in `fuzz.proptest-regressions` beside
//! this file, so it is replayed first by every later run.

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};
use rotor::api::server::{self, AdminToken};
use rotor::api::{Admin, AdminError, ScheduleEntry};
use rotor::config::Config;
use rotor::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};
use rotor::watch::scan;
use tower::ServiceExt as _;

// -------------------------------------------------------------------------------------------
// Runner

/// Cases per target: `ROTOR_FUZZ_CASES` when set (the long run of `scripts/fuzz.sh`), else
/// `default`, chosen per target so the bounded run stays quick.
fn cases(default: u32) -> u32 {
    match std::env::var("ROTOR_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ROTOR_FUZZ_CASES must be a whole number, got {v:?}")),
        Err(_) => default,
    }
}

/// Runs `test` on `cases(default)` values of `strategy`, replaying saved regressions first,
/// and prints the line `scripts/fuzz.sh` reads. Panics (with proptest's minimized input)
/// when a case fails.
fn fuzz<S>(
    name: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut config = ProptestConfig::with_cases(cases(default));
    // Failing cases are saved beside this file (`fuzz.proptest-regressions`), as
    // `machine.rs` keeps its own, and replayed first by every run.
    config.source_file = Some(file!());
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    let mut runner = TestRunner::new(config);
    let ran = AtomicU64::new(0);
    let result = runner.run(&strategy, |value| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!(
        "fuzz target={name} cases={} failures={}",
        ran.load(Ordering::Relaxed),
        u32::from(result.is_err())
    );
    if let Err(e) = result {
        panic!("fuzz target {name}: {e}");
    }
}

// -------------------------------------------------------------------------------------------
// Configuration

/// Key names rotor reads, so random trees reach past "unknown key" into the validators.
const CONFIG_KEYS: &[&str] = &[
    "server",
    "store",
    "runtime",
    "policies",
    "secrets",
    "mounts",
    "publish",
    "watch",
    "notify",
    "metrics",
    "cache",
    "target",
    "reload",
    "generator",
    "type",
    "listen",
    "admin_token_file",
    "master_key_file",
    "path",
    "tenant",
    "key",
    "policy",
    "interval",
    "cron",
    "timezone",
    "window",
    "jitter",
    "grace",
    "expire_after",
    "max_attempts",
    "retry_backoff",
    "retry_backoff_max",
    "max_grace_extension",
    "max_concurrent_rotations",
    "shutdown_timeout",
    "health_check_interval",
    "critical",
    "debounce",
    "files",
    "file",
    "max_reloads_per_minute",
    "enabled",
    "poll_interval",
    "url",
    "url_file",
    "method",
    "signal",
    "command",
    "pid_file",
    "timeout",
    "ttl",
    "max_entries",
    "per_secret",
    "length",
    "symbols",
    "algorithm",
    "address",
    "roles",
    "user",
    "strategy",
    "persist",
    "ca_file",
    "hmac_key_file",
    "secret_file",
    "token_file",
    "prefix",
    "mount",
    "auth",
    "role",
    "events",
    "min_severity",
    "queue_capacity",
    "manual",
    "name",
    "namespace",
];

/// Keys that name a secret-looking value: whatever string such a key holds must never be
/// quoted back in an error message.
const SECRET_KEYS: &[&str] = &["password", "token", "secret", "api_key", "private_key"];

/// A string value that marks itself as secret, so a leak is recognised in any message.
const SECRET_MARK: &str = "SECRETVALUE";

fn config_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(CONFIG_KEYS).prop_map(str::to_owned),
        1 => proptest::sample::select(SECRET_KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
        1 => "\\PC{0,6}",
    ]
}

fn config_string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "90d",
                "1h30m",
                "0s",
                "-1s",
                "99999999999999999999d",
                "tenant1",
                "db",
                "api_keys",
                "none",
                "postgres",
                "redis",
                "jwks",
                "exec",
                "webhook",
                "embedded",
                "vault",
                "log",
                "slack",
                "grace_and_consumers",
                "../etc/passwd",
                "/tmp/rotor-fuzz",
                "",
                "127.0.0.1:8080",
                "http://user:pw@localhost/x?token=abc",
                "*/5 * * * *",
                "0 0 31 2 *",
                "Europe/Paris",
                "Mars/Olympus",
                "tenant1/db",
                "mon-fri 09:00-17:00",
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,16}",
    ]
}

fn toml_datetime() -> impl Strategy<Value = toml::Value> {
    proptest::sample::select(
        &[
            "1979-05-27T07:32:00Z",
            "1979-05-27T00:32:00.999999-07:00",
            "1979-05-27T07:32:00",
            "1979-05-27",
            "07:32:00",
        ][..],
    )
    .prop_filter_map("datetime", |s| s.parse().ok().map(toml::Value::Datetime))
}

fn toml_leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        3 => config_string().prop_map(toml::Value::String),
        2 => any::<i64>().prop_map(toml::Value::Integer),
        1 => (-2i64..100_000).prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => toml_datetime(),
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    toml_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map(config_key(), inner, 0..6)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A document: a top-level table of rotor's sections (mostly), with secret-named keys
/// holding marked values sprinkled in at any depth the tree puts them.
fn toml_document() -> impl Strategy<Value = (toml::Table, Vec<String>)> {
    (
        proptest::collection::btree_map(config_key(), toml_value(), 0..8),
        proptest::collection::vec(
            (
                proptest::sample::select(SECRET_KEYS),
                proptest::sample::select(CONFIG_KEYS),
                "[A-Za-z0-9]{8,12}",
            ),
            0..3,
        ),
    )
        .prop_map(|(top, planted)| {
            let mut table: toml::Table = top.into_iter().collect();
            let mut secrets = Vec::new();
            for (key, section, tail) in planted {
                let value = format!("{SECRET_MARK}{tail}");
                secrets.push(value.clone());
                // Planted at the top level and inside a section, where typed checks run.
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = entry {
                    t.insert(key.to_owned(), toml::Value::String(value.clone()));
                } else {
                    table.insert(key.to_owned(), toml::Value::String(value));
                }
            }
            (table, secrets)
        })
}

/// The checks every `rotor check` error must pass: it says where (a `line:column` inside
/// the text) or names a key, says what is wrong, and quotes no secret-marked value.
fn check_errors<T>(
    text: &str,
    result: Result<T, rotor::config::ConfigErrors>,
) -> Result<(), TestCaseError> {
    let Err(errors) = result else {
        return Ok(());
    };
    prop_assert!(!errors.errors.is_empty(), "an Err with no error in it");
    let lines = text.split('\n').count();
    for e in &errors.errors {
        let rendered = e.to_string();
        prop_assert!(
            !e.key.trim().is_empty() || e.location.is_some(),
            "error names neither a key nor a position: {rendered}"
        );
        prop_assert!(
            !e.message.trim().is_empty(),
            "error says nothing: {rendered}"
        );
        if let Some(loc) = e.location {
            prop_assert!(
                loc.line >= 1 && loc.line <= lines && loc.column >= 1,
                "position {}:{} outside the {lines}-line text: {rendered}",
                loc.line,
                loc.column
            );
            let at = format!("{}:{}", loc.line, loc.column);
            prop_assert!(rendered.contains(&at), "{rendered} does not show {at}");
        }
        prop_assert!(
            !rendered.contains(SECRET_MARK),
            "error quotes a secret-named value: {rendered}"
        );
    }
    Ok(())
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn config_random_trees_never_panic_and_every_error_locates_itself() {
    fuzz("config_trees", 256, toml_document(), |(table, _secrets)| {
        // Some trees cannot be written as TOML (e.g. a table after plain keys in an array);
        // those are not inputs a user could give either.
        let Ok(text) = toml::to_string(&table) else {
            return Ok(());
        };
        let result = Config::from_str_with_env(&text, "fuzz.toml", &no_env);
        check_errors(&text, result)
    });
}

/// The case the tree fuzzer first found: a value under a secret-named key was quoted back.
#[test]
fn config_never_quotes_a_value_under_a_secret_named_key() {
    let text = "[policies]\npassword = \"SECRETVALUE0AaA0aaa\"\n";
    let result = Config::from_str_with_env(text, "fuzz.toml", &no_env);
    assert!(
        result.is_err(),
        "a string where a policy table belongs was accepted"
    );
    check_errors(text, result).unwrap_or_else(|e| panic!("{e}"));
}

/// One edit of a shipped configuration file.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Copies `len` bytes from one place of the file over another place.
    Splice(Index, Index, usize),
}

/// What mutations insert besides random bytes: TOML's syntax, a BOM, NUL, broken UTF-8.
const INSERT_TOKENS: &[&[u8]] = &[
    b"[",
    b"[[",
    b"]]",
    b"=",
    b"\"",
    b"'''",
    b"\n",
    b"#",
    b".",
    b"{",
    b"}",
    b"\\u{",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\r",
    b"\t",
    b"1979-05-27T07:32:00Z",
    b"-0x1",
    b"inf",
    b"nan",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        proptest::sample::select(INSERT_TOKENS).prop_map(<[u8]>::to_vec),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<Index>(), token).prop_map(|(i, t)| Mutation::Insert(i, t)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), any::<Index>(), 1usize..200)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for m in edits {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(at, bit) => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Insert(at, t) => {
                let i = at.index(bytes.len() + 1);
                bytes.splice(i..i, t.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let i = at.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Truncate(at) => {
                let i = at.index(bytes.len());
                bytes.truncate(i);
            }
            Mutation::Splice(from, to, n) => {
                let f = from.index(bytes.len());
                let chunk: Vec<u8> = bytes[f..(f + n).min(bytes.len())].to_vec();
                let t = to.index(bytes.len());
                let end = (t + chunk.len()).min(bytes.len());
                bytes.splice(t..end, chunk);
            }
        }
    }
    bytes
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every configuration the repo ships, which `rotor check` must accept unmodified.
const SHIPPED_CONFIGS: &[&str] = &[
    "config/example.toml",
    "config/production.toml",
    "deploy/config/rotor.toml",
    // `rotor agent`'s kind, through its own loader.
    "config/agent.toml",
];

#[test]
fn config_byte_mutations_of_shipped_files_never_panic_and_every_error_locates_itself() {
    let originals: Vec<Vec<u8>> = SHIPPED_CONFIGS
        .iter()
        .map(|f| std::fs::read(repo_file(f)).expect("shipped config"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mutated.toml");
    let strategy = (
        0..originals.len(),
        proptest::collection::vec(mutation(), 1..6),
    );
    fuzz("config_mutations", 256, strategy, |(file, edits)| {
        let bytes = mutate(originals[file].clone(), &edits);
        // Through the file, as `rotor check` reads it: non-UTF-8 bytes included.
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        if SHIPPED_CONFIGS[file] == "config/agent.toml" {
            check_errors(&text, rotor::config::AgentConfig::load(&path))
        } else {
            check_errors(&text, Config::load_with_env(&path, &no_env))
        }
    });
}

// -------------------------------------------------------------------------------------------
// Admin API

const TOKEN: &str = "fuzz-token-c2VjcmV0LXRva2Vu";

/// A backend that knows one secret, `tenant1/db`, and answers everything about it.
struct Fake;

fn known(s: &SecretRef) -> Result<(), AdminError> {
    if s.tenant() == "tenant1" && s.key() == "db" {
        Ok(())
    } else {
        Err(AdminError::UnknownSecret(s.to_string()))
    }
}

impl Admin for Fake {
    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        async move { known(&secret).map(|()| RotationId(1)) }.boxed()
    }
    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        async move {
            known(&secret)?;
            Err(AdminError::Conflict(format!(
                "{secret}: nothing is in grace"
            )))
        }
        .boxed()
    }
    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        async move { known(&secret).map(|()| Vec::new()) }.boxed()
    }
    fn history(
        &self,
        secret: SecretRef,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        async move { known(&secret).map(|()| Vec::new()) }.boxed()
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        async move { Ok(Vec::new()) }.boxed()
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        async move { Ok("rotor_up 1\n".to_owned()) }.boxed()
    }
    fn ready(&self) -> bool {
        true
    }
}

/// Path segments: the routes' own words, the one known secret, traversal in its encodings,
/// NUL, non-UTF-8 percent escapes, and random text (percent-encoded so it forms a URI).
fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&[
            "admin", "secrets", "rotate", "rollback", "versions", "history", "schedule",
            "jwks", "healthz", "readyz", "metrics", "tenant1", "db", "", ".", "..",
            "%2e%2e", "%2E%2E", "..%2f..", "%2F", "%00", "a%00b", "%ff%fe", "%c3%28", "%",
            "%zz", "TENANT1", "-db", "_x", "tenant1;db", "*",
        ][..]).prop_map(str::to_owned),
        1 => "[a-z0-9_-]{1,70}",
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| {
            percent_encoding::percent_encode(&b, percent_encoding::NON_ALPHANUMERIC).to_string()
        }),
        1 => Just(TOKEN.to_owned()),
    ]
}

fn path_and_query() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(path_segment(), 0..6),
        proptest::option::of(prop_oneof![
            Just("limit=7".to_owned()),
            Just("limit=0".to_owned()),
            Just("limit=-1".to_owned()),
            Just("limit=99999999999999999999999".to_owned()),
            Just("limit=%00".to_owned()),
            Just("limit=1&limit=2".to_owned()),
            Just("limit".to_owned()),
            "[a-z=&%0-9]{0,20}",
        ]),
    )
        .prop_map(|(segs, query)| {
            let mut s = format!("/{}", segs.join("/"));
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q);
            }
            s
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        4 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::PATCH),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::TRACE),
        1 => "[A-Z]{1,10}".prop_filter_map("method", |m| Method::from_bytes(m.as_bytes()).ok()),
    ]
}

/// `Authorization` values: the right one in its accepted spellings, near misses, and junk.
fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    let near = prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just(format!("bearer {TOKEN}")),
        Just(format!("BEARER   {TOKEN}  ")),
        Just(format!("Bearer {TOKEN}x")),
        Just(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Just(format!("Bearer {}", TOKEN.to_uppercase())),
        Just(format!("Bearer\t{TOKEN}")),
        Just(format!("Basic {TOKEN}")),
        Just(TOKEN.to_owned()),
        Just(format!("Bearer {TOKEN} {TOKEN}")),
        Just("Bearer ".to_owned()),
        Just("Bearer".to_owned()),
        Just(format!("Bearer %{TOKEN}")),
    ]
    .prop_map(String::into_bytes);
    prop_oneof![
        2 => Just(None),
        4 => near.prop_map(Some),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut b| {
            b.splice(0..0, b"Bearer ".iter().copied());
            Some(b)
        }),
    ]
}

fn extra_header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let name = prop_oneof![
        proptest::sample::select(
            &[
                "content-type",
                "content-length",
                "transfer-encoding",
                "if-none-match",
                "accept",
                "authorization",
                "host",
                "x-forwarded-for",
                "expect",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        "[a-z-]{1,20}".prop_map(String::into_bytes),
    ];
    let value = prop_oneof![
        proptest::sample::select(
            &[
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "*",
                "\"etag\"",
                "chunked",
                "100-continue",
                "0",
                "18446744073709551616",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    (name, value)
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let ident = prop_oneof![
        proptest::sample::select(
            &[
                "tenant1", "db", "..", "../etc", "%2e%2e", "a\0b", "TENANT1", "", "-x", "a/b",
            ][..]
        )
        .prop_map(|s| serde_json::Value::String(s.to_owned())),
        "\\PC{0,80}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"a": 1})),
    ];
    (
        proptest::option::of(ident.clone()),
        proptest::option::of(ident),
        any::<bool>(),
    )
        .prop_map(|(t, k, extra)| {
            let mut o = serde_json::Map::new();
            if let Some(t) = t {
                o.insert("tenantId".into(), t);
            }
            if let Some(k) = k {
                o.insert("secretKey".into(), k);
            }
            if extra {
                o.insert("value".into(), serde_json::Value::String("x".into()));
            }
            serde_json::to_vec(&o).unwrap_or_default()
        })
}

/// Bodies that are almost JSON, or not UTF-8.
const BAD_BODIES: &[&[u8]] = &[
    b"{",
    b"null",
    b"[]",
    b"{\"tenantId\":",
    b"\xff\xfe{}",
    b"{}{}",
    b"{\"tenantId\":\"tenant1\",\"secretKey\":\"db\"",
    b"1e999999",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        4 => json_body(),
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => proptest::sample::select(BAD_BODIES).prop_map(<[u8]>::to_vec),
        1 => (1usize..200).prop_map(|n| {
            // Deep nesting, past serde_json's recursion limit.
            let mut b = vec![b'['; n * 2];
            b.extend(vec![b']'; n * 2]);
            b
        }),
        1 => (16 * 1024 - 8..40 * 1024usize).prop_map(|n| {
            // Around and over the 16 KiB body limit.
            let mut b = b"{\"tenantId\":\"tenant1\",\"secretKey\":\"db\",\"pad\":\"".to_vec();
            b.resize(n, b'a');
            b.extend_from_slice(b"\"}");
            b
        }),
    ]
}

#[derive(Debug)]
struct ApiCase {
    method: Method,
    path: String,
    authorization: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

fn api_case() -> impl Strategy<Value = ApiCase> {
    (
        method(),
        path_and_query(),
        authorization(),
        proptest::collection::vec(extra_header(), 0..4),
        body(),
    )
        .prop_map(|(method, path, authorization, headers, body)| ApiCase {
            method,
            path,
            authorization,
            headers,
            body,
        })
}

/// Whether `request` presents the admin token the way the server accepts it: the first
/// `Authorization` value, scheme `Bearer` (any case), then the token, trimmed of blanks.
fn presents_token(request: &Request<Body>) -> bool {
    let Some(v) = request.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    v.len() >= 7
        && v[..7].eq_ignore_ascii_case(b"bearer ")
        && v[7..].trim_ascii() == TOKEN.as_bytes()
}

#[test]
fn api_random_requests_get_no_5xx_json_4xx_and_no_token_accepted_but_the_token() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = AdminToken::new(TOKEN).expect("token");
    let router = server::router(Arc::new(Fake), token, Duration::from_secs(60));
    fuzz("api", 256, api_case(), |case| {
        let mut builder = Request::builder()
            .method(case.method.clone())
            .uri(case.path.as_str());
        if let Some(auth) = &case.authorization {
            let Ok(v) = HeaderValue::from_bytes(auth) else {
                // Not sendable over HTTP (CR, LF, NUL...): hyper would refuse it first.
                return Ok(());
            };
            builder = builder.header(header::AUTHORIZATION, v);
        }
        for (n, v) in &case.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                builder = builder.header(n, v);
            }
        }
        let Ok(request) = builder.body(Body::from(case.body.clone())) else {
            return Ok(());
        };
        let authorized = presents_token(&request);
        let is_head = request.method() == Method::HEAD;
        let path = request.uri().path().to_owned();
        let (status, headers, bytes) = runtime.block_on(async {
            let resp = router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|e| match e {});
            let (parts, body) = resp.into_parts();
            let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
            (parts.status, parts.headers, bytes)
        });
        prop_assert!(
            !status.is_server_error(),
            "{status} for {} {path}: {}",
            case.method,
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() && !is_head {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            prop_assert!(
                ct.starts_with("application/json"),
                "{status} with content type {ct:?}"
            );
            let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!("{status} body is not JSON ({e}): {bytes:?}"))
            })?;
            prop_assert!(
                json.get("error")
                    .and_then(|e| e.as_str())
                    .is_some_and(|e| !e.is_empty()),
                "{status} body has no error message: {json}"
            );
        }
        if path.starts_with("/admin") && status.is_success() {
            prop_assert!(authorized, "{status} for {path} without the token");
        }
        if status == StatusCode::UNAUTHORIZED {
            prop_assert!(!authorized, "the token was refused on {path}");
        }
        // The token comes back only where the client itself put it into the path.
        let text = String::from_utf8_lossy(&bytes);
        if !path.contains(TOKEN) {
            prop_assert!(!text.contains(TOKEN), "token in the body: {text}");
            for (name, value) in &headers {
                prop_assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(TOKEN),
                    "token in header {name}"
                );
            }
        }
        Ok(())
    });
}

/// Raw request bytes for the wire-level property: what no HTTP library would send.
#[derive(Debug)]
struct RawCase {
    method: Vec<u8>,
    path: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

fn raw_case() -> impl Strategy<Value = RawCase> {
    let raw_path = prop_oneof![
        // A real route with raw bytes appended: non-UTF-8, NUL, traversal, controls.
        (
            proptest::sample::select(
                &[
                    "/admin/secrets/versions/",
                    "/admin/secrets/history/tenant1/",
                    "/jwks/",
                    "/",
                    "/admin/secrets/rotate",
                ][..]
            ),
            prop_oneof![
                2 => "[!-~]{0,24}".prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..24),
            ],
        )
            .prop_map(|(p, tail)| {
                let mut b = p.as_bytes().to_vec();
                b.extend(
                    tail.into_iter()
                        .filter(|c| !matches!(c, b' ' | b'\r' | b'\n')),
                );
                b
            }),
        path_and_query().prop_map(String::into_bytes),
    ];
    (
        prop_oneof![
            5 => proptest::sample::select(&["GET", "POST", "HEAD", "PUT", "get", "G\0T"][..])
                .prop_map(|m| m.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 1..8)
                .prop_map(|m| m.into_iter().filter(|c| !matches!(c, b' ' | b'\r' | b'\n')).collect()),
        ],
        raw_path,
        proptest::collection::vec(
            (
                prop_oneof![
                    3 => "[A-Za-z-]{1,12}".prop_map(String::into_bytes),
                    1 => proptest::collection::vec(any::<u8>(), 1..12),
                ],
                prop_oneof![
                    3 => "[ -~]{0,24}".prop_map(String::into_bytes),
                    1 => proptest::collection::vec(any::<u8>(), 0..24),
                ],
            ),
            0..3,
        ),
        body(),
    )
        .prop_map(|(method, path, headers, body)| RawCase {
            method,
            path,
            headers: headers
                .into_iter()
                .map(|(n, v)| {
                    let keep = |c: &u8| !matches!(c, b'\r' | b'\n' | b':');
                    (n.into_iter().filter(keep).collect(), v.into_iter().filter(keep).collect())
                })
                .collect(),
            body,
        })
}

impl RawCase {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.path);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        out.extend_from_slice(format!("Authorization: Bearer {TOKEN}\r\n").as_bytes());
        for (n, v) in &self.headers {
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// Longest one raw request may wait for its answer: generous, for a loaded machine.
const RAW_DEADLINE: Duration = Duration::from_secs(30);

/// The same properties on the wire, through hyper and a real loopback listener, with bytes
/// `http::Request` cannot hold. One exception is counted and allowed: hyper answers a
/// request it cannot parse (non-UTF-8 or NUL in the target, bad header bytes, a bad
/// `Content-Length`) with its own empty-bodied 400 before the router ever sees it, so that
/// 400 cannot carry rotor's JSON error body.
#[test]
fn api_raw_wire_requests_get_no_5xx_and_an_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let token = AdminToken::new(TOKEN).expect("token");
    let router = server::router(Arc::new(Fake), token, Duration::from_secs(60));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = runtime.spawn(async move { axum::serve(listener, router).await });
    let hyper_400 = AtomicU64::new(0);
    fuzz("api_raw", 128, raw_case(), |case| {
        let raw = case.bytes();
        let buf = runtime.block_on(async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(&raw).await?;
            let mut buf = Vec::new();
            // The server may close with request bytes unread (a refused body), which can
            // end the read with a reset after the answer arrived; what was read counts.
            match tokio::time::timeout(RAW_DEADLINE, stream.read_to_end(&mut buf)).await {
                Ok(_) => Ok(buf),
                Err(_) => Err(std::io::Error::other("no answer within the deadline")),
            }
        });
        let buf = buf.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        let Some(head_end) = head_end else {
            return Err(TestCaseError::fail(format!(
                "no HTTP answer: {:?}",
                String::from_utf8_lossy(&buf)
            )));
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body = &buf[head_end + 4..];
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no status in {head:?}")))?;
        prop_assert!(
            status < 500,
            "{status}: {head} {:?}",
            String::from_utf8_lossy(body)
        );
        if (400..500).contains(&status) && case.method != b"HEAD" {
            if status == 400 && body.is_empty() && !head.contains("content-type") {
                hyper_400.fetch_add(1, Ordering::Relaxed);
            } else {
                prop_assert!(
                    head.contains("content-type: application/json"),
                    "{status} is not JSON: {head}"
                );
                let json: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| TestCaseError::fail(format!("{status} body not JSON: {e}")))?;
                prop_assert!(json.get("error").is_some_and(|e| e.is_string()));
            }
        }
        Ok(())
    });
    eprintln!(
        "fuzz api_raw: {} empty 400s from hyper's parser",
        hyper_400.load(Ordering::Relaxed)
    );
    served.abort();
}

// -------------------------------------------------------------------------------------------
// Mount scanner

/// What a random tree entry is.
#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Dir,
    Fifo,
    /// A sparse file of this many bytes (`set_len`, no data written).
    Sparse(u64),
    Link(LinkTo),
}

/// Where a symlink points.
#[derive(Debug, Clone)]
enum LinkTo {
    /// Another entry of the tree, by index.
    Sibling(Index),
    /// `..data/<sibling name>`, the kubelet form.
    ThroughData(Index),
    /// A file outside the mount (absolute path).
    OutsideFile,
    /// A directory outside the mount.
    OutsideDir,
    /// A FIFO outside the mount.
    OutsideFifo,
    /// The link itself.
    SelfLoop,
    /// The mount's parent.
    Parent,
    /// Nothing.
    Dangling,
    /// A device that never ends.
    DevZero,
}

fn node() -> impl Strategy<Value = Node> {
    let link = prop_oneof![
        3 => any::<Index>().prop_map(LinkTo::Sibling),
        3 => any::<Index>().prop_map(LinkTo::ThroughData),
        1 => Just(LinkTo::OutsideFile),
        1 => Just(LinkTo::OutsideDir),
        1 => Just(LinkTo::OutsideFifo),
        1 => Just(LinkTo::SelfLoop),
        1 => Just(LinkTo::Parent),
        1 => Just(LinkTo::Dangling),
        1 => Just(LinkTo::DevZero),
    ];
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Node::File),
        1 => Just(Node::Dir),
        1 => Just(Node::Fifo),
        // A terabyte (no buffer that size can be had, so the read fails at once) and 8 MiB,
        // small enough to read whole.
        1 => prop_oneof![Just(1u64 << 40), Just(8u64 << 20)].prop_map(Node::Sparse),
        4 => link.prop_map(Node::Link),
    ]
}

fn entry_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "a",
                "b",
                "password",
                "tls.crt",
                ".hidden",
                "..data",
                "..data_tmp",
                "..2026_12_01_00_00_00.1",
                "..",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z.]{1,8}",
    ]
}

/// A random mount: top-level entries, plus what `..<timestamp>` holds when the tree has a
/// `..data` link into it.
#[derive(Debug, Clone)]
struct Tree {
    top: Vec<(String, Node)>,
    generation: Vec<(String, Node)>,
    /// Where `..data` points: the generation directory, or one of the odd places.
    data: Option<DataTo>,
}

#[derive(Debug, Clone)]
enum DataTo {
    Generation,
    Outside,
    ItSelf,
    File,
    Parent,
    Missing,
}

fn tree() -> impl Strategy<Value = Tree> {
    (
        proptest::collection::vec((entry_name(), node()), 0..8),
        proptest::collection::vec((entry_name(), node()), 0..5),
        proptest::option::of(prop_oneof![
            4 => Just(DataTo::Generation),
            1 => Just(DataTo::Outside),
            1 => Just(DataTo::ItSelf),
            1 => Just(DataTo::File),
            1 => Just(DataTo::Parent),
            1 => Just(DataTo::Missing),
        ]),
    )
        .prop_map(|(top, generation, data)| Tree {
            top,
            generation,
            data,
        })
}

/// Content of every file outside the mount starts with this: a scan that fingerprints such
/// bytes read outside the mount.
const OUTSIDE_MARK: &[u8] = b"OUTSIDE-THE-MOUNT";

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates `entries` in `dir`. Names that clash, or that the file system refuses, are
/// skipped: the tree is whatever could be made.
fn build(dir: &Path, entries: &[(String, Node)], outside: &Path) {
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for (name, node) in entries {
        if name == ".." || name == "." {
            continue;
        }
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let _ = match node {
            Node::File(content) => {
                let mut c = b"INSIDE-".to_vec();
                c.extend_from_slice(content);
                std::fs::write(&path, c)
            }
            Node::Dir => std::fs::create_dir(&path),
            Node::Fifo => mkfifo(&path),
            Node::Sparse(len) => std::fs::File::create(&path).and_then(|f| f.set_len(*len)),
            Node::Link(to) => {
                let target: PathBuf = match to {
                    LinkTo::Sibling(i) => PathBuf::from(names[i.index(names.len())]),
                    LinkTo::ThroughData(i) => Path::new("..data").join(names[i.index(names.len())]),
                    LinkTo::OutsideFile => outside.join("file"),
                    LinkTo::OutsideDir => outside.to_owned(),
                    LinkTo::OutsideFifo => outside.join("fifo"),
                    LinkTo::SelfLoop => PathBuf::from(name),
                    LinkTo::Parent => PathBuf::from(".."),
                    LinkTo::Dangling => PathBuf::from("nowhere"),
                    LinkTo::DevZero => PathBuf::from("/dev/zero"),
                };
                std::os::unix::fs::symlink(target, &path)
            }
        };
    }
}

/// The outside world a tree's links may point at: a file with marked content, a directory
/// holding files named like the ones a mount would have, and a FIFO.
fn make_outside(outside: &Path) {
    let marked = |name: &str| {
        let mut f = std::fs::File::create(outside.join(name)).expect("outside file");
        f.write_all(OUTSIDE_MARK).expect("write");
        f.write_all(name.as_bytes()).expect("write");
    };
    for name in ["file", "a", "b", "password", "tls.crt"] {
        marked(name);
    }
    mkfifo(&outside.join("fifo")).expect("mkfifo");
}

fn build_tree(root: &Path, tree: &Tree) -> (PathBuf, PathBuf) {
    let outside = root.join("outside");
    let mount = root.join("mount");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::create_dir(&mount).expect("mount");
    make_outside(&outside);
    let gen_name = "..2026_12_01_00_00_00.1";
    if let Some(data) = &tree.data {
        let target: PathBuf = match data {
            DataTo::Generation => {
                let generation = mount.join(gen_name);
                let _ = std::fs::create_dir(&generation);
                build(&generation, &tree.generation, &outside);
                PathBuf::from(gen_name)
            }
            DataTo::Outside => outside.clone(),
            DataTo::ItSelf => PathBuf::from("..data"),
            DataTo::File => {
                let _ = std::fs::write(mount.join("..plainfile"), b"INSIDE-");
                PathBuf::from("..plainfile")
            }
            DataTo::Parent => PathBuf::from(".."),
            DataTo::Missing => PathBuf::from("..gone"),
        };
        let _ = std::os::unix::fs::symlink(target, mount.join("..data"));
    }
    build(&mount, &tree.top, &outside);
    (mount, outside)
}

/// Longest a scan of a small tree may take before it counts as hung: generous, for a
/// loaded machine.
const SCAN_DEADLINE: Duration = Duration::from_secs(30);

/// Scans `mount` on a thread of its own and waits at most [`SCAN_DEADLINE`]. Returns
/// whether the scan finished, and whether it ever fingerprinted bytes from outside.
fn scan_with_deadline(mount: &Path) -> Result<(bool, bool), TestCaseError> {
    let read_outside = Arc::new(AtomicBool::new(false));
    let seen = read_outside.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = mount.to_owned();
    std::thread::spawn(move || {
        let fingerprint = move |bytes: &[u8]| {
            if bytes.starts_with(OUTSIDE_MARK) {
                seen.store(true, Ordering::SeqCst);
            }
            format!("{}", bytes.len())
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scan::scan(&dir, &fingerprint, scan::DEFAULT_MAX_FILE_SIZE).map(|_| ())
        }));
        let _ = tx.send(result.is_ok());
    });
    match rx.recv_timeout(SCAN_DEADLINE) {
        Ok(true) => Ok((true, read_outside.load(Ordering::SeqCst))),
        Ok(false) => Err(TestCaseError::fail("the scan panicked")),
        // The scan thread is left blocked; the test fails, so the process ends soon.
        Err(_) => Ok((false, read_outside.load(Ordering::SeqCst))),
    }
}

#[test]
fn scan_random_trees_never_panics_and_never_hangs() {
    fuzz("scan", 48, tree(), |tree| {
        let root = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (mount, _outside) = build_tree(root.path(), &tree);
        let (finished, _) = scan_with_deadline(&mount)?;
        prop_assert!(finished, "the scan did not finish within {SCAN_DEADLINE:?}");
        Ok(())
    });
}

#[test]
fn scan_never_reads_outside_the_mount() {
    fuzz("scan_outside", 48, tree(), |tree| {
        let root = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (mount, _outside) = build_tree(root.path(), &tree);
        let (finished, read_outside) = scan_with_deadline(&mount)?;
        prop_assert!(finished, "the scan did not finish within {SCAN_DEADLINE:?}");
        prop_assert!(!read_outside, "the scan read a file outside the mount");
        Ok(())
    });
}
