//! Target and cache figures (a plain `main`, not criterion: the target cycles are
//! milliseconds against real servers and the interesting numbers are percentiles).
//!
//! - Full rotation cycles (generate + store, apply, test, label, promote, expire the
//!   previous) against the machine's PostgreSQL (`alternating`) and Redis: rotations/s,
//!   p50, p99.
//! - The secret cache: hit read latency, and the hit rate under a Zipf(1.1) read load
//!   over 10,000 versions with room for 1,000.
//!
//! `cargo bench --bench targets`. A service that is unreachable is reported and skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng as _;
use rotor::domain::{Label, RotationId, SecretRef};
use rotor::generator::{self, CharClasses, GeneratorSpec, SecretValue};
use rotor::metrics::Metrics;
use rotor::store::cache::{CacheOptions, CachedStore};
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{Commit, Store};
use rotor::target::Target;
use rotor::target::postgres::{PostgresTarget, Strategy};
use rotor::target::redis::RedisTarget;

#[path = "common/mode.rs"]
mod mode;
#[path = "../tests/common/postgres.rs"]
mod postgres_setup;

use postgres_setup::{psql, setup};

/// [`mode::scaled`] for counts of versions.
fn scaled(n: u64) -> u64 {
    mode::scaled(n as usize) as u64
}

fn store(dir: &std::path::Path, options: CacheOptions, metrics: Metrics) -> Arc<dyn Store> {
    let inner =
        Arc::new(EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap());
    Arc::new(CachedStore::new(inner, options, metrics))
}

fn spec() -> GeneratorSpec {
    GeneratorSpec::Password {
        length: 32,
        classes: CharClasses {
            lower: true,
            upper: true,
            digits: true,
            symbols: true,
        },
    }
}

/// The secret a benchmark named `name` rotates.
fn bench_secret(name: &str) -> SecretRef {
    SecretRef::new("bench", name).unwrap()
}

async fn cycles(name: &str, store: &Arc<dyn Store>, t: &dyn Target) {
    let s = bench_secret(name);
    let cycles = scaled(200);
    let mut durations = Vec::with_capacity(cycles as usize);
    let started = Instant::now();
    for v in 1..=cycles {
        let t0 = Instant::now();
        let value: SecretValue = t
            .shape_value(v, generator::generate(&spec()))
            .await
            .unwrap();
        store
            .put_version(&s, v, RotationId(v), &value, Utc::now())
            .await
            .unwrap();
        let value = store.read_value(&s, v).await.unwrap();
        t.apply(v, &value).await.unwrap();
        t.test(v, &value).await.unwrap();
        // The labels move before the promote step, as the rotation actor commits them:
        // `alternating` picks each new version's role from the current one.
        let mut labels = vec![(v, Label::Current)];
        labels.extend((v > 1).then(|| (v - 1, Label::Previous)));
        let commit = Commit {
            journal: b"bench",
            labels: &labels,
            history: None,
            now: Utc::now(),
        };
        store.commit(&s, commit).await.unwrap();
        t.promote(v, (v > 1).then(|| v - 1)).await.unwrap();
        if v > 1 {
            t.revoke(v - 1).await.unwrap();
        }
        durations.push(t0.elapsed());
    }
    let total = started.elapsed();
    durations.sort();
    let pct = |p: f64| durations[((durations.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: {cycles} full cycles, {:.1} rotations/s, p50 {:.2} ms, p99 {:.2} ms",
        cycles as f64 / total.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}

async fn postgres(dir: &std::path::Path) {
    if let Err(e) = setup() {
        println!("postgres: skipped ({e})");
        return;
    }
    let base = format!("rotor_bench_{:08x}", rand::thread_rng().r#gen::<u32>());
    let roles = vec![format!("{base}_a"), format!("{base}_b")];
    for r in &roles {
        psql(&format!(
            "CREATE ROLE \"{r}\" NOLOGIN IN ROLE rotor_managed"
        ));
    }
    let url = dir.join("pg-admin-url");
    std::fs::write(&url, "postgres://postgres@127.0.0.1:5432/test").unwrap();
    let store = store(&dir.join("pg"), CacheOptions::default(), Metrics::new());
    let t = PostgresTarget::new(
        bench_secret("postgres"),
        url,
        Strategy::Alternating,
        roles.clone(),
        store.clone(),
    );
    let _drop_roles = postgres_setup::Roles(roles.clone());
    cycles("postgres", &store, &t).await;
}

async fn redis(dir: &std::path::Path) {
    if tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_err()
    {
        println!("redis: skipped (unreachable)");
        return;
    }
    let user = format!("rotor_bench_{:08x}", rand::thread_rng().r#gen::<u32>());
    let url = dir.join("redis-admin-url");
    std::fs::write(&url, "redis://127.0.0.1:6379").unwrap();
    let store = store(&dir.join("redis"), CacheOptions::default(), Metrics::new());
    let t = RedisTarget::new(bench_secret("redis"), url, user.clone(), store.clone());
    cycles("redis", &store, &t).await;
    let _ = std::process::Command::new("redis-cli")
        .args(["ACL", "DELUSER", &user])
        .output();
}

async fn cache(dir: &std::path::Path) {
    let metrics = Metrics::new();
    let store = store(
        &dir.join("cache"),
        CacheOptions {
            ttl: Duration::from_secs(600),
            capacity: 1_000,
        },
        metrics.clone(),
    );
    let s = SecretRef::new("bench", "cache").unwrap();
    let n = scaled(10_000);
    let value = SecretValue::from_bytes(vec![b'x'; 32]);
    for v in 1..=n {
        store
            .put_version(&s, v, RotationId(v), &value, Utc::now())
            .await
            .unwrap();
    }
    // Hit latency: one hot version read over and over.
    store.read_value(&s, 1).await.unwrap();
    let hits_n = scaled(1_000_000) as u32;
    let t0 = Instant::now();
    for _ in 0..hits_n {
        std::hint::black_box(store.read_value(&s, 1).await.unwrap());
    }
    let hit_ns = t0.elapsed().as_nanos() as f64 / f64::from(hits_n);

    // Zipf(1.1) over N versions, cache for a tenth of them.
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n as usize);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let (h0, m0) = (
        metrics.cache_hits_total.get(),
        metrics.cache_misses_total.get(),
    );
    let mut rng = rand::thread_rng();
    let reads = scaled(200_000) as u32;
    let t0 = Instant::now();
    for _ in 0..reads {
        let u: f64 = rng.r#gen();
        let k = cdf.partition_point(|c| *c < u) as u64 + 1;
        std::hint::black_box(store.read_value(&s, k.min(n)).await.unwrap());
    }
    let per_read = t0.elapsed().as_nanos() as f64 / f64::from(reads);
    let hits = metrics.cache_hits_total.get() - h0;
    let misses = metrics.cache_misses_total.get() - m0;
    println!(
        "cache: hit read {hit_ns:.0} ns; Zipf(1.1) over {n} versions, capacity 1000: hit rate {:.1}%, mean read {per_read:.0} ns",
        100.0 * hits as f64 / (hits + misses) as f64
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["pg", "redis", "cache"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        postgres(dir.path()).await;
        redis(dir.path()).await;
        cache(dir.path()).await;
    });
}
