//! Consumer reports one rotor process absorbs, printed as plain text (not criterion: a
//! whole-server figure). Run with `cargo bench --bench consumers`; under `cargo test` it is
//! a smoke run with a few reporters for a moment.
//!
//! The tree runs in this process on the embedded store, with the real admin router and
//! listener on loopback; `REPORTERS` tasks, each an agent with its own keep-alive HTTP
//! client and consumer id, post `POST /consumers/report` in a loop (the first report of
//! each is a change and is stored; the rest are heartbeats, which are not). Five rounds;
//! the median rate is printed with the spread. Client and server share the machine's
//! cores, so the figure is a floor for a server with cores of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rotor::actors::admin::ActorAdmin;
use rotor::actors::tree::{self, TreeOptions};
use rotor::api::server::{self, AdminToken};
use rotor::config::Config;
use rotor::metrics::Metrics;
use rotor::store::embedded::EmbeddedStore;

#[path = "common/mode.rs"]
mod mode;

fn main() {
    let full = mode::full();
    let reporters = mode::scaled(200);
    let (round, rounds) = if full {
        (Duration::from_secs(3), 5)
    } else {
        (Duration::from_millis(200), 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(reporters, round, rounds));
}

async fn run(reporters: usize, round: Duration, rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
[server]
consumer_token_file = "{dir}/consumer.token"
[store]
type = "embedded"
path = "{dir}/rotor.redb"
master_key_file = "{dir}/master.key"
[consumers]
ttl = "1m"
[policies.slow]
interval = "30d"
grace = "1h"
generator = {{ type = "token", bytes = 32 }}
[[secrets]]
tenant = "tenant1"
key = "db"
policy = "slow"
"#,
        dir = dir.path().display()
    );
    let cfg = Config::from_str_with_env(&text, "bench.toml", &|_| None).expect("config");
    let store = Arc::new(
        EmbeddedStore::open(
            &dir.path().join("rotor.redb"),
            &dir.path().join("master.key"),
        )
        .expect("store"),
    );
    let tree = tree::start(&cfg, store, Metrics::new(), TreeOptions::default())
        .await
        .expect("tree");
    let backend = Arc::new(ActorAdmin {
        context: tree.context.clone(),
        secrets: tree.secrets.clone(),
        ready: tree.ready_flag(),
    });
    let router = server::router_with_consumers(
        backend,
        AdminToken::new("admin").expect("token"),
        Some(AdminToken::new("consumer").expect("token")),
        Duration::from_secs(10),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(listener, router, std::future::pending()));
    let url = format!("http://{addr}/consumers/report");
    let mut rates = Vec::new();
    for r in 0..rounds {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + round;
        let tasks: Vec<_> = (0..reporters)
            .map(|i| {
                let (url, done, failed) = (url.clone(), done.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .build()
                        .expect("client");
                    let body = format!(
                        r#"{{"consumerId":"web-{r}-{i}","workload":"web","secrets":[{{"tenantId":"tenant1","secretKey":"db","version":1,"reloaded":true}}]}}"#
                    );
                    while Instant::now() < deadline {
                        let ok = client
                            .post(&url)
                            .bearer_auth("consumer")
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .is_ok_and(|resp| resp.status().is_success());
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let secs = started.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        let rate = n as f64 / secs;
        println!(
            "round {r}: {n} reports from {reporters} reporters in {secs:.2} s = {rate:.0}/s, {} failed",
            failed.load(Ordering::Relaxed)
        );
        assert_eq!(failed.load(Ordering::Relaxed), 0, "reports failed");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "consumer reports: median {:.0}/s over {rounds} rounds (min {:.0}, max {:.0}), {reporters} concurrent reporters, one rotor process, embedded store",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
