//! Restart latency of a panicking child under a [`Supervisor`]: the time from sending the panic
//! message to the restarted child answering a call.
//!
//! Runs twice: first with a panic hook that captures and renders a backtrace (what the default
//! hook does with `RUST_BACKTRACE=1`, set on these machines), then with rotor's quiet hook.
//! Before each criterion run it prints p50/p99/p99.9 over [`SAMPLES`] restarts, because criterion
//! reports means and medians but not tails.
//!
//! `cargo bench --bench supervisor`

use std::backtrace::Backtrace;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rotor::actors::panic_hook::install_quiet_panic_hook;
use rotor::supervisor::{
    Backoff, ChildSpec, Intensity, Restart, Supervisor, SupervisorArgs, SupervisorMsg,
};
use tokio::runtime::Runtime;

#[path = "common/mode.rs"]
mod mode;

/// Restarts measured for the percentile report of each variant.
const SAMPLES: usize = 5_000;

enum BenchMsg {
    Panic,
    Ping(RpcReplyPort<()>),
}

struct BenchChild;

impl Actor for BenchChild {
    type Msg = BenchMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BenchMsg::Panic => panic!("bench child panics on request"),
            BenchMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// A supervisor that restarts `name` immediately, forever.
async fn start(name: &str) -> ActorRef<SupervisorMsg> {
    let registered = name.to_owned();
    let spec = ChildSpec::actor(
        "child",
        "bench",
        Restart::Permanent,
        Some(registered),
        || (BenchChild, ()),
    );
    let args = SupervisorArgs::new(vec![spec])
        .with_backoff(Backoff::NONE)
        .with_intensity(Intensity {
            // Never reached. Not u32::MAX: the supervisor's start-up check sums the backoff
            // over max_restarts + 1 restarts, which takes minutes in a debug build.
            max_restarts: 1_000_000,
            within: Duration::from_secs(1),
        });
    let (sup, _join) = Actor::spawn(None, Supervisor, args)
        .await
        .expect("supervisor starts");
    sup
}

/// Panics the child registered as `name` and waits for its successor to answer a call.
async fn one_restart(name: &str) -> Duration {
    let old = ActorRef::<BenchMsg>::where_is(name).expect("child is registered");
    let began = Instant::now();
    old.send_message(BenchMsg::Panic).expect("child is alive");
    loop {
        if let Some(new) = ActorRef::<BenchMsg>::where_is(name)
            && new.get_id() != old.get_id()
            && ractor::call!(new, BenchMsg::Ping).is_ok()
        {
            return began.elapsed();
        }
        tokio::task::yield_now().await;
    }
}

/// Runs `n` restarts on a worker task: calls from the `block_on` thread are about ten times
/// slower than from a worker task and would measure the wrong thing.
fn restarts(rt: &Runtime, name: &'static str, n: usize) -> Vec<Duration> {
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                samples.push(one_restart(name).await);
            }
            samples
        })
        .await
        .expect("bench task")
    })
}

fn report(variant: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "restart latency ({variant}, {} restarts): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        samples.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0),
    );
}

fn bench_variant(c: &mut Criterion, rt: &Runtime, variant: &'static str) {
    rt.block_on(start(variant));
    // Warm up allocations and the registry before measuring tails.
    restarts(rt, variant, mode::scaled(200));
    // A smoke run measures three restarts: in a debug build each backtrace is expensive.
    let samples = if mode::full() { SAMPLES } else { 3 };
    report(variant, restarts(rt, variant, samples));
    c.bench_function(&format!("restart_latency/{variant}"), |b| {
        b.iter_custom(|iters| restarts(rt, variant, iters as usize).into_iter().sum())
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut c = Criterion::default().configure_from_args();

    // What the default hook costs with RUST_BACKTRACE=1: capture and symbolize, then print.
    // Printing is left out so the terminal is not flooded; capture and rendering dominate.
    std::panic::set_hook(Box::new(|_| {
        black_box(Backtrace::force_capture().to_string());
    }));
    bench_variant(&mut c, &rt, "backtrace_hook");

    install_quiet_panic_hook();
    bench_variant(&mut c, &rt, "quiet_hook");

    c.final_summary();
}
