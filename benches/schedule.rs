//! Schedule and config costs at fleet size: `next_due` for 100,000 secrets (an interval
//! policy with jitter and a window, and a cron policy), and loading plus validating a
//! generated config with 10,000 secrets, and 100,000 declared both as `[[secrets]]` tables
//! and as one `[[secret_sets]]`. These bound what a restart of a large deployment spends
//! before its first rotation. Under `cargo bench` it also prints what the process holds
//! after loading 1,000,000 secrets each way (`rss_after_load`), which is what `rotor run`
//! keeps; `scripts/config-scale.sh` measures the peak.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotor::config::Config;
use rotor::domain::SecretRef;
use rotor::schedule::{Occurrences, Schedule, ScheduleKind, Window, validate_cron};

#[path = "common/mode.rs"]
mod mode;

const SECRETS: usize = 100_000;
const CONFIG_SECRETS: usize = 10_000;
/// Secrets per tenant in the fleet-sized configs: 1,000 tenants x 100 keys = 100,000.
const KEYS_PER_TENANT: usize = 100;
const FLEET_SECRETS: usize = 100_000;

fn secrets() -> Vec<SecretRef> {
    (0..mode::scaled(SECRETS))
        .map(|i| SecretRef::new(&format!("tenant{}", i / 10), &format!("key{}", i % 10)).unwrap())
        .collect()
}

/// Last rotation times spread over the past 40 days, so that some secrets are overdue and
/// most are not.
fn last_rotations(now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    (0..mode::scaled(SECRETS))
        .map(|i| now - TimeDelta::seconds((i as i64 * 7_919) % (40 * 86_400)))
        .collect()
}

fn cron(expr: &str) -> croner::Cron {
    match validate_cron(expr) {
        Ok(cron) => cron,
        Err(e) => panic!("bench cron {expr:?}: {e}"),
    }
}

fn bench_next_due(c: &mut Criterion) {
    let now = match Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).single() {
        Some(t) => t,
        None => panic!("fixed bench time"),
    };
    let secrets = secrets();
    let last = last_rotations(now);
    let interval = Schedule {
        kind: ScheduleKind::Interval(Duration::from_secs(30 * 86_400)),
        jitter: Some(Duration::from_secs(600)),
        window: Some(Window {
            cron: cron("0 1 * * *"),
            expr: "0 1 * * *".into(),
            duration: Duration::from_secs(3 * 3_600),
            tz: chrono_tz::Europe::Berlin,
            occurrences: Occurrences::default(),
        }),
    };
    let weekly = Schedule {
        kind: ScheduleKind::Cron {
            cron: cron("0 2 * * 0"),
            expr: "0 2 * * 0".into(),
            tz: chrono_tz::Europe::Berlin,
            occurrences: Occurrences::default(),
        },
        jitter: Some(Duration::from_secs(600)),
        window: None,
    };

    let mut group = c.benchmark_group("next_due_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(mode::scaled(SECRETS) as u64));
    for (name, schedule) in [
        ("interval_jitter_window", &interval),
        ("cron_weekly", &weekly),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut latest = now;
                for (secret, last) in secrets.iter().zip(&last) {
                    if let Some(due) = schedule.next_due(secret, Some(*last), now) {
                        latest = latest.max(due);
                    }
                }
                black_box(latest)
            })
        });
    }
    // Each pass starts with empty occurrence caches, as after a restart: 100,000 secrets
    // whose last rotations fall into a few weeks fill them with a few spans.
    group.bench_function("cron_weekly_cold_cache", |b| {
        b.iter(|| {
            let schedule = weekly.clone();
            let mut latest = now;
            for (secret, last) in secrets.iter().zip(&last) {
                if let Some(due) = schedule.next_due(secret, Some(*last), now) {
                    latest = latest.max(due);
                }
            }
            black_box(latest)
        })
    });
    group.finish();
}

/// A config with a few policies and `CONFIG_SECRETS` secrets spread over tenants.
fn generated_config() -> String {
    let mut text = String::from(
        r#"[server]
listen = "0.0.0.0:8080"
[[mounts]]
path = "/mnt/secrets"
critical = ["database-*"]
[policies.api_keys]
interval = "30d"
grace = "2h"
jitter = "10m"
window = { cron = "0 1 * * *", duration = "3h" }
[policies.weekly]
cron = "0 2 * * 0"
timezone = "Europe/Berlin"
grace = "6h"
generator = { type = "token", bytes = 32, prefix = "whsec_" }
"#,
    );
    let policies = ["api_keys", "weekly", "database_credentials", "jwt_secrets"];
    for i in 0..mode::scaled(CONFIG_SECRETS) {
        text.push_str(&format!(
            "[[secrets]]\ntenant = \"tenant{}\"\nkey = \"{}\"\npolicy = \"{}\"\ntarget = {{ type = \"none\" }}\n",
            i / 4,
            policies[i % 4],
            policies[i % 4],
        ));
    }
    text
}

fn bench_config(c: &mut Criterion) {
    let text = generated_config();
    let mut group = c.benchmark_group("config_load");
    group.sample_size(10);
    group.throughput(Throughput::Elements(mode::scaled(CONFIG_SECRETS) as u64));
    group.bench_function("10k_secrets", |b| {
        b.iter(
            || match Config::from_str_with_env(black_box(&text), "bench.toml", &|_| None) {
                Ok(config) => black_box(config.secrets.len()),
                Err(e) => panic!("generated config is invalid:\n{e}"),
            },
        )
    });
    group.finish();
}

const FLEET_POLICY: &str = r#"[policies.tenant_db]
interval = "30d"
grace = "2h"
jitter = "1d"
generator = { type = "password", length = 32 }
"#;

/// `n` secrets as `[[secrets]]` tables.
fn fleet_tables(n: usize) -> String {
    let mut text = String::from(FLEET_POLICY);
    for i in 0..n {
        text.push_str(&format!(
            "[[secrets]]\ntenant = \"tenant{:05}\"\nkey = \"key{:02}\"\npolicy = \"tenant_db\"\ntarget = {{ type = \"none\" }}\n",
            i / KEYS_PER_TENANT,
            i % KEYS_PER_TENANT
        ));
    }
    text
}

/// The same `n` secrets as one `[[secret_sets]]` over `tenants.txt` in `dir`.
fn fleet_set(n: usize, dir: &Path) -> String {
    let tenants: String = (0..n.div_ceil(KEYS_PER_TENANT))
        .map(|t| format!("tenant{t:05}\n"))
        .collect();
    if let Err(e) = std::fs::write(dir.join("tenants.txt"), tenants) {
        panic!("write tenants file: {e}");
    }
    let keys: Vec<String> = (0..KEYS_PER_TENANT.min(n))
        .map(|k| format!("\"key{k:02}\""))
        .collect();
    format!(
        "{FLEET_POLICY}[[secret_sets]]\ntenants_file = \"tenants.txt\"\nkeys = [{}]\npolicy = \"tenant_db\"\ntarget = {{ type = \"none\" }}\n",
        keys.join(", ")
    )
}

fn load_file(path: &Path) -> Config {
    match Config::load_with_env(path, &|_| None) {
        Ok(config) => config,
        Err(e) => panic!("generated config is invalid:\n{e}"),
    }
}

fn bench_fleet_config(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let n = mode::scaled(FLEET_SECRETS);
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        if let Err(e) = std::fs::write(&path, text) {
            panic!("write {name}: {e}");
        }
        path
    };
    let tables = write("tables.toml", fleet_tables(n));
    let set = write("set.toml", fleet_set(n, dir.path()));
    let mut group = c.benchmark_group("config_load_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    for (name, path) in [("secrets_tables", &tables), ("secret_set", &set)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let config = load_file(black_box(path));
                assert_eq!(config.secrets.len(), n);
                config.secrets.len()
            })
        });
    }
    group.finish();
    if mode::full() {
        rss_after_load(dir.path());
    }
}

/// Loads 1,000,000 secrets each way and prints the resident memory before and while the
/// config is held: what `rotor run` keeps of loading.
fn rss_after_load(dir: &Path) {
    const MILLION: usize = 1_000_000;
    let tables = dir.join("tables-1m.toml");
    let set = dir.join("set-1m.toml");
    for (path, text) in [
        (&tables, fleet_tables(MILLION)),
        (&set, fleet_set(MILLION, dir)),
    ] {
        if let Err(e) = std::fs::write(path, text) {
            panic!("write {}: {e}", path.display());
        }
    }
    for (name, path) in [("secrets_tables", &tables), ("secret_set", &set)] {
        let before = rss_mib();
        let started = std::time::Instant::now();
        let config = load_file(path);
        let took = started.elapsed();
        println!(
            "rss_after_load form={name} secrets={} load={took:.2?} rss_before={before} MiB rss_after={} MiB",
            config.secrets.len(),
            rss_mib()
        );
        drop(config);
    }
}

/// This process's resident set size in MiB (Linux).
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

criterion_group!(benches, bench_next_due, bench_config, bench_fleet_config);
criterion_main!(benches);
