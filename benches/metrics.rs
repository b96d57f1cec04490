//! Metrics and notification benchmarks.
//!
//! - `metrics/scrape_100k_default`: one `/metrics` scrape's work with 100,000 managed
//!   secrets at default labels: refresh the fleet gauges from the status board, then
//!   encode. Prints the body size once.
//! - `metrics/scrape_100k_per_secret`: the same with `[metrics] per_secret = true` and
//!   every secret rotated once (a per-secret counter, histogram and gauge each).
//! - `metrics/update_per_rotation{,_per_secret}`: the metric updates a successful rotation
//!   makes (outcome counter, duration histogram, per-secret series when on).
//! - `notify/webhook_delivery`: events delivered per second to a local HTTP receiver (axum
//!   on loopback), one signed webhook POST each, over a kept-alive connection.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotor::actors::metrics::refresh;
use rotor::domain::SecretRef;
use rotor::metrics::{Metrics, PolicyLabels};
use rotor::notify::Notification;
use rotor::notify::channel::{Delivery, RetryPolicy, Sink};
use rotor::notify::http::Poster;
use rotor::status::{SecretStatus, StatusBoard};
use zeroize::Zeroizing;

#[path = "common/mode.rs"]
mod mode;

const SECRETS: usize = 100_000;
const POLICIES: usize = 10;

fn board() -> Arc<StatusBoard> {
    let board = Arc::new(StatusBoard::default());
    let now = Utc::now();
    for i in 0..mode::scaled(SECRETS) {
        let secret = SecretRef::new(&format!("tenant{}", i / 100), &format!("key{}", i % 100))
            .expect("valid");
        board.set(
            &secret,
            SecretStatus {
                policy: format!("policy{}", i % POLICIES).into(),
                phase: if i % 7 == 0 { "grace" } else { "idle" },
                current: Some(3),
                rotation: None,
                next_due: Some(now + TimeDelta::seconds(i as i64)),
                grace_expires_at: (i % 7 == 0).then(|| now + TimeDelta::minutes(5)),
                last_rotated_at: Some(now - TimeDelta::seconds(i as i64)),
                attempts: 0,
            },
        );
    }
    board
}

fn scrape(c: &mut Criterion) {
    let board = board();
    let mut group = c.benchmark_group("metrics");

    let m = Metrics::new();
    for p in 0..POLICIES {
        m.init_policy(&format!("policy{p}"));
    }
    refresh(&m, &board, Utc::now());
    eprintln!(
        "metrics/scrape_100k_default: body {} bytes",
        m.encode().unwrap().len()
    );
    group.bench_function("scrape_100k_default", |b| {
        b.iter(|| {
            refresh(&m, &board, Utc::now());
            black_box(m.encode().unwrap().len())
        })
    });

    let per = Metrics::with_options(true);
    for p in 0..POLICIES {
        per.init_policy(&format!("policy{p}"));
    }
    board.for_each(|s, _| {
        per.secret_rotation(
            s.tenant(),
            s.key(),
            "succeeded",
            Some(3.0),
            Some(1_800_000_000),
        )
    });
    eprintln!(
        "metrics/scrape_100k_per_secret: body {} bytes",
        per.encode().unwrap().len()
    );
    group.sample_size(10);
    group.bench_function("scrape_100k_per_secret", |b| {
        b.iter(|| {
            refresh(&per, &board, Utc::now());
            black_box(per.encode().unwrap().len())
        })
    });
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    for (name, m) in [
        ("update_per_rotation", Metrics::new()),
        (
            "update_per_rotation_per_secret",
            Metrics::with_options(true),
        ),
    ] {
        m.init_policy("api_keys");
        let policy = "api_keys".to_owned();
        group.bench_function(name, |b| {
            b.iter(|| {
                m.rotation(&policy, "succeeded");
                m.rotation_duration_seconds
                    .get_or_create(&PolicyLabels {
                        policy: policy.clone(),
                    })
                    .observe(black_box(2.5));
                m.secret_rotation("tenant1", "api_keys", "succeeded", Some(2.5), Some(1));
            })
        });
    }
    group.finish();
}

fn notify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let metrics = Metrics::new();
    let delivery = Delivery {
        name: "bench".into(),
        sink: Sink::Webhook {
            uri: format!("http://{addr}/hook").parse().unwrap(),
            key: Zeroizing::new(b"bench-key".to_vec()),
        },
        poster: Poster::new(Duration::from_secs(5), None, None).expect("client"),
        retry: RetryPolicy::new(1, Duration::from_millis(10), Duration::from_millis(10))
            .expect("valid retry policy"),
        metrics,
    };
    let n = Notification::watcher_health("/mnt/secrets", false, Utc::now());
    let mut group = c.benchmark_group("notify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("webhook_delivery", |b| {
        b.iter(|| {
            // From a worker task, not the block_on thread (ARCHITECTURE.md, "Measured facts").
            let ok = rt.block_on(async {
                let d = &delivery;
                let n = &n;
                d.deliver(n).await
            });
            assert!(ok);
        })
    });
    group.finish();
}

criterion_group!(benches, scrape, update, notify);
criterion_main!(benches);
