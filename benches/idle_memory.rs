//! What an idle (hibernating) secret costs in memory: the structures `rotor run` keeps for
//! every managed secret once its actor is gone, built for N secrets of one
//! `[[secret_sets]]` (N/100 tenants x 100 keys) as `tree::start` builds them: the
//! validated configuration (`Config::secrets`), the managed set (`ManagedSecrets`), a
//! status board entry and a scheduler deadline per secret (what the start-up fill puts
//! there from the journals).
//!
//! A counting global allocator measures the heap each structure holds (bytes asked for and
//! live allocations; malloc adds about 8 to 16 bytes of its own per allocation, which RSS
//! shows and these counts do not). Under `cargo bench` (N = 100,000) it prints the
//! breakdown per secret, the figure that carries the goal of well under 1 KB per idle
//! secret, and times one start-up fill of the board and the scheduler (group
//! `idle_secret`); in a smoke run (`cargo test --benches`) N is 1,000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rotor::actors::managed::ManagedSecrets;
use rotor::actors::rotation::status_of;
use rotor::actors::scheduler::Scheduler;
use rotor::actors::tree::TreeOptions;
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::machine::{Phase, SecretState};
use rotor::status::StatusBoard;
use rotor::store::embedded::EmbeddedStore;
use rotor::target::ValueReader;

#[path = "common/mode.rs"]
mod mode;

/// Counts the bytes and allocations live on the heap.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// only arithmetic on the sizes it was asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap live now: (bytes, allocations).
fn live() -> (isize, isize) {
    (
        BYTES.load(Ordering::Relaxed),
        ALLOCS.load(Ordering::Relaxed),
    )
}

const SECRETS: usize = 100_000;
const KEYS_PER_TENANT: usize = 100;

/// One `[[secret_sets]]` of `n` store-only secrets under an interval policy, as
/// `scripts/scale-start.sh` writes it (tenants inline instead of in a file).
fn config_text(n: usize) -> String {
    let keys = KEYS_PER_TENANT.min(n);
    let tenants = n.div_ceil(keys);
    let tenant_list: Vec<String> = (1..=tenants).map(|t| format!("\"t{t:07}\"")).collect();
    let key_list: Vec<String> = (0..keys).map(|k| format!("\"k{k:03}\"")).collect();
    format!(
        r#"
[policies.daily]
interval = "1d"
jitter = "1d"
grace = "1h"
generator = {{ type = "token", bytes = 32 }}

[[secret_sets]]
tenants = [{}]
keys = [{}]
policy = "daily"
target = {{ type = "none" }}
"#,
        tenant_list.join(", "),
        key_list.join(", ")
    )
}

/// An idle secret's journal after its first rotation: version 1 current, due `due`.
fn idle_state(now: DateTime<Utc>, due: DateTime<Utc>) -> SecretState {
    SecretState {
        current: Some(1),
        latest_version: 1,
        rotations_started: 1,
        last_rotated_at: Some(now),
        attempts: 0,
        phase: Phase::Idle {
            next_due: Some(due),
            retry: false,
        },
    }
}

/// A board with the managed secrets declared, as `tree::start` makes it.
fn declared_board(managed: &ManagedSecrets) -> StatusBoard {
    let board = StatusBoard::default();
    board.declare(managed.configs().iter().map(|c| c.secret.clone()).collect());
    board
}

/// Puts every secret on `board` and its deadline in `scheduler`, as the start-up fill
/// does for a secret whose journal says it is idle.
fn fill(managed: &ManagedSecrets, board: &StatusBoard, scheduler: &Scheduler, now: DateTime<Utc>) {
    for (i, cfg) in managed.configs().iter().enumerate() {
        let due = now + TimeDelta::seconds(60 + (i as i64 * 7_919) % 86_400);
        scheduler.arm(&cfg.secret, due);
        board.set(
            &cfg.secret,
            status_of(&cfg.policy.name, &idle_state(now, due)),
        );
    }
}

fn per_secret(label: &str, before: (isize, isize), after: (isize, isize), n: usize) -> f64 {
    let bytes = (after.0 - before.0) as f64 / n as f64;
    let allocs = (after.1 - before.1) as f64 / n as f64;
    println!("  {label:<34} {bytes:>7.1} bytes/secret in {allocs:>4.2} allocations/secret");
    bytes
}

fn idle_secret(c: &mut Criterion) {
    let n = mode::scaled(SECRETS);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("rotor.redb"), &dir.path().join("key"))
        .expect("open store");
    let reader: ValueReader = Arc::new(store);
    let options = TreeOptions::default();
    let text = config_text(n);
    let now = Utc::now();

    println!("idle secret memory, {n} secrets (heap asked for; malloc overhead not counted):");
    let base = live();
    let config = match Config::from_str_with_env(&text, "bench", &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    };
    let after_config = live();
    let managed = ManagedSecrets::new(&config, &options, reader.clone());
    let after_managed = live();
    let scheduler = rt.block_on(async { Scheduler::start(Clock::System, String::new()) });
    let before_fill = live();
    let board = declared_board(&managed);
    for (i, cfg) in managed.configs().iter().enumerate() {
        let due = now + TimeDelta::seconds(60 + (i as i64 * 7_919) % 86_400);
        board.set(
            &cfg.secret,
            status_of(&cfg.policy.name, &idle_state(now, due)),
        );
    }
    let after_board = live();
    for (i, cfg) in managed.configs().iter().enumerate() {
        let due = now + TimeDelta::seconds(60 + (i as i64 * 7_919) % 86_400);
        scheduler.arm(&cfg.secret, due);
    }
    let after_scheduler = live();
    per_secret("config (Config::secrets)", base, after_config, n);
    per_secret(
        "managed set (ManagedSecrets)",
        after_config,
        after_managed,
        n,
    );
    per_secret("status board (declared) entry", before_fill, after_board, n);
    per_secret("scheduler deadline", after_board, after_scheduler, n);
    let total = per_secret(
        "total",
        base,
        (
            after_scheduler.0 - (before_fill.0 - after_managed.0),
            after_scheduler.1 - (before_fill.1 - after_managed.1),
        ),
        n,
    );
    assert!(
        total > 0.0,
        "the structures hold no heap: the counter is not in use"
    );
    drop((board, scheduler));

    let mut group = c.benchmark_group("idle_secret");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("fill_board_and_scheduler_{n}"), |b| {
        b.iter_batched(
            || {
                (
                    declared_board(&managed),
                    rt.block_on(async { Scheduler::start(Clock::System, String::new()) }),
                )
            },
            |(board, scheduler)| {
                fill(&managed, &board, &scheduler, now);
                black_box((board, scheduler))
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    drop((managed, config, text));
}

criterion_group!(benches, idle_secret);
criterion_main!(benches);
