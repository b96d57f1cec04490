//! Schedule and config costs at fleet size: `next_due` for 100,000 secrets (an interval
//! policy with jitter and a window, and a cron policy), and loading plus validating a
//! generated config with 10,000 secrets. These bound what a restart of a large
//! deployment spends before its first rotation.

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotor::config::Config;
use rotor::domain::SecretRef;
use rotor::schedule::{Schedule, ScheduleKind, Window, validate_cron};

#[path = "common/mode.rs"]
mod mode;

const SECRETS: usize = 100_000;
const CONFIG_SECRETS: usize = 10_000;

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
        }),
    };
    let weekly = Schedule {
        kind: ScheduleKind::Cron {
            cron: cron("0 2 * * 0"),
            expr: "0 2 * * 0".into(),
            tz: chrono_tz::Europe::Berlin,
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

criterion_group!(benches, bench_next_due, bench_config);
criterion_main!(benches);
