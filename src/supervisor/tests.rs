//! Supervision semantics: restart types, dynamic children, backoff, intensity and escalation,
//! the observer, ordered shutdown, and timers that die with their actor.
//!
//! One topic per test. Time is paused (`start_paused`): ractor actors are real tokio tasks on the
//! test's runtime, and paused time only auto-advances when every task is idle, so backoff delays
//! elapse instantly but in order. Eventually-true facts are polled with [`eventually`] rather than
//! asserted after a sleep. The test child and helpers are shared with the root's tests
//! ([`crate::actors::root`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::*;
use crate::actors::panic_hook::install_quiet_panic_hook;
use crate::testing::eventually;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Quiet panics (children panic on purpose) but keep them visible in a failing test's output.
pub(crate) fn init() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("rotor=debug")
        .try_init();
    install_quiet_panic_hook();
}

pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Collects observer events.
pub(crate) fn recorder() -> (Observer, Arc<Mutex<Vec<SupervisorEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let observer: Observer = Arc::new(move |event| sink.lock().unwrap().push(event));
    (observer, events)
}

fn restart_delays(events: &Mutex<Vec<SupervisorEvent>>) -> Vec<u128> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::Restarting { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A test child
// ---------------------------------------------------------------------------------------------

pub(crate) enum ChildMsg {
    /// Replies with the incarnation number (1 for the first start).
    Ping(RpcReplyPort<u32>),
    Panic,
    /// Returns `Err` from the handler: a failure without a panic.
    Fail,
    /// Stops normally.
    Stop,
    /// Never sent by tests; the payload of the long timer each incarnation arms.
    Tick,
}

/// Shared between all incarnations of one child, so tests can see across restarts.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    pub(crate) starts: Arc<AtomicU32>,
    /// When set, `pre_start` fails: the restart's start function returns `Err`.
    pub(crate) fail_start: Arc<AtomicBool>,
    /// Each incarnation's pending timer holds a clone; its strong count counts live timers.
    timer_token: Arc<()>,
    /// Child ids in the order their `post_stop` ran.
    pub(crate) stopped: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    pub(crate) fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    pub(crate) fn stopped(&self) -> Vec<String> {
        self.stopped.lock().unwrap().clone()
    }
}

struct TestChild;

struct TestChildState {
    id: String,
    incarnation: u32,
    probe: Probe,
    /// Armed in `pre_start`, an hour out: only a crash (state drop) ends it.
    _tick: TimerGuard,
}

impl Actor for TestChild {
    type Msg = ChildMsg;
    type State = TestChildState;
    type Arguments = (String, Probe);

    async fn pre_start(
        &self,
        myself: ActorRef<ChildMsg>,
        (id, probe): (String, Probe),
    ) -> Result<TestChildState, ActorProcessingErr> {
        if probe.fail_start.load(Ordering::SeqCst) {
            return Err("refusing to start".into());
        }
        let incarnation = probe.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let mut tick = TimerGuard::new();
        let token = probe.timer_token.clone();
        tick.arm(Duration::from_secs(3600), myself, move || {
            drop(token);
            ChildMsg::Tick
        });
        Ok(TestChildState {
            id,
            incarnation,
            probe,
            _tick: tick,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ChildMsg>,
        message: ChildMsg,
        state: &mut TestChildState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChildMsg::Ping(reply) => {
                let _ = reply.send(state.incarnation);
            }
            ChildMsg::Panic => panic!("test child {} panics on request", state.id),
            ChildMsg::Fail => return Err("test child fails on request".into()),
            ChildMsg::Stop => myself.stop(Some("done".into())),
            ChildMsg::Tick => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ChildMsg>,
        state: &mut TestChildState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.stopped.lock().unwrap().push(state.id.clone());
        Ok(())
    }
}

pub(crate) fn child(id: &str, restart: Restart, probe: &Probe) -> ChildSpec {
    let (id_owned, probe) = (id.to_owned(), probe.clone());
    ChildSpec::actor(id, "worker", restart, None, move || {
        (TestChild, (id_owned.clone(), probe.clone()))
    })
}

async fn spawn_sup(args: SupervisorArgs) -> ActorRef<SupervisorMsg> {
    let (sup, _join) = Actor::spawn(None, Supervisor, args).await.unwrap();
    sup
}

/// A supervisor without backoff over one child `id`, and the child's probe.
async fn supervise_one(id: &str, restart: Restart) -> (ActorRef<SupervisorMsg>, Probe) {
    let probe = Probe::default();
    let sup = spawn_sup(no_backoff(vec![child(id, restart, &probe)])).await;
    (sup, probe)
}

pub(crate) async fn lookup(sup: &ActorRef<SupervisorMsg>, id: &str) -> Option<ActorRef<ChildMsg>> {
    lookup_child_as::<ChildMsg>(sup, id).await.unwrap()
}

/// Sends `msg` to the running incarnation of child `id`.
pub(crate) async fn send(sup: &ActorRef<SupervisorMsg>, id: &str, msg: ChildMsg) {
    let child = lookup(sup, id).await.expect("child is running");
    child.send_message(msg).unwrap();
}

pub(crate) async fn ping(child: &ActorRef<ChildMsg>) -> u32 {
    ractor::call!(child, ChildMsg::Ping).unwrap()
}

/// Sends `msg` to the child's current incarnation, then waits for the next one to answer.
async fn crash_and_wait_restart(
    sup: &ActorRef<SupervisorMsg>,
    id: &str,
    msg: fn() -> ChildMsg,
) -> ActorRef<ChildMsg> {
    let old = lookup(sup, id).await.expect("child is running");
    let old_incarnation = ping(&old).await;
    old.send_message(msg()).unwrap();
    eventually(WAIT, "child restarted", || async {
        lookup(sup, id)
            .await
            .is_some_and(|new| new.get_id() != old.get_id())
    })
    .await;
    let new = lookup(sup, id).await.unwrap();
    assert_eq!(ping(&new).await, old_incarnation + 1);
    new
}

/// Waits until child `id` is gone from the table or waits for a restart.
async fn wait_until_not_running(sup: &ActorRef<SupervisorMsg>, id: &str) {
    eventually(WAIT, "child is not running", || async {
        lookup_child(sup, id).await.unwrap().is_none()
    })
    .await;
}

pub(crate) fn no_backoff(children: Vec<ChildSpec>) -> SupervisorArgs {
    SupervisorArgs::new(children).with_backoff(Backoff::NONE)
}

fn backoff(initial_ms: u64, max_ms: u64, reset_after: Duration) -> Backoff {
    Backoff::new(
        Duration::from_millis(initial_ms),
        Duration::from_millis(max_ms),
        reset_after,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Restart types
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn permanent_child_is_restarted_after_panic_and_keeps_answering() {
    init();
    let (sup, _) = supervise_one("a", Restart::Permanent).await;

    let first = lookup(&sup, "a").await.unwrap();
    let second = crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    assert_ne!(first.get_id(), second.get_id());
    let third = crash_and_wait_restart(&sup, "a", || ChildMsg::Fail).await;
    assert_eq!(ping(&third).await, 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_child_is_restarted_after_normal_stop() {
    init();
    let (sup, _) = supervise_one("a", Restart::Permanent).await;
    crash_and_wait_restart(&sup, "a", || ChildMsg::Stop).await;
}

#[tokio::test(start_paused = true)]
async fn transient_child_is_not_restarted_after_normal_stop() {
    init();
    let (observer, events) = recorder();
    let probe = Probe::default();
    let sup =
        spawn_sup(no_backoff(vec![child("t", Restart::Transient, &probe)]).with_observer(observer))
            .await;

    send(&sup, "t", ChildMsg::Stop).await;
    eventually(WAIT, "child removed", || async {
        which_children(&sup).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(probe.starts(), 1);
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [SupervisorEvent::Removed { child_id, reason, .. }] if child_id == "t" && reason == "done"
    ));
}

#[tokio::test(start_paused = true)]
async fn transient_child_is_restarted_after_panic() {
    init();
    let (sup, _) = supervise_one("t", Restart::Transient).await;
    crash_and_wait_restart(&sup, "t", || ChildMsg::Panic).await;
}

#[tokio::test(start_paused = true)]
async fn transient_child_is_restarted_after_kill() {
    init();
    let (sup, _) = supervise_one("t", Restart::Transient).await;
    let old = lookup(&sup, "t").await.unwrap();
    old.kill();
    eventually(WAIT, "killed child restarted", || async {
        lookup(&sup, "t")
            .await
            .is_some_and(|new| new.get_id() != old.get_id())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn temporary_child_is_never_restarted() {
    init();
    let (sup, probe) = supervise_one("tmp", Restart::Temporary).await;

    send(&sup, "tmp", ChildMsg::Panic).await;
    wait_until_not_running(&sup, "tmp").await;
    assert!(which_children(&sup).await.unwrap().is_empty());
    assert_eq!(probe.starts(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_for_one_leaves_siblings_running() {
    init();
    let (pa, pb) = (Probe::default(), Probe::default());
    let sup = spawn_sup(no_backoff(vec![
        child("a", Restart::Permanent, &pa),
        child("b", Restart::Permanent, &pb),
    ]))
    .await;
    let b = lookup(&sup, "b").await.unwrap();
    crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    assert_eq!(lookup(&sup, "b").await.unwrap().get_id(), b.get_id());
    assert_eq!(pb.starts(), 1);
}

// ---------------------------------------------------------------------------------------------
// Dynamic children
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn children_can_be_started_listed_and_terminated() {
    init();
    let probe = Probe::default();
    let sup = spawn_sup(no_backoff(vec![])).await;

    let cell: ActorCell = start_child(&sup, child("x", Restart::Permanent, &probe))
        .await
        .unwrap();
    assert_eq!(
        lookup_child(&sup, "x").await.unwrap().unwrap().get_id(),
        cell.get_id()
    );
    let duplicate = start_child(&sup, child("x", Restart::Permanent, &probe)).await;
    assert!(matches!(
        duplicate,
        Err(SupervisorError::DuplicateChild { .. })
    ));

    let listed = which_children(&sup).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].kind, listed[0].alive),
        ("x", "worker", true)
    );

    terminate_child(&sup, "x").await.unwrap();
    assert!(lookup_child(&sup, "x").await.unwrap().is_none());
    assert_eq!(probe.stopped(), ["x"]);
    // Terminated on purpose: the exit event must not bring it back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.starts(), 1);
    assert!(matches!(
        terminate_child(&sup, "x").await,
        Err(SupervisorError::UnknownChild { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn lookup_with_the_wrong_message_type_is_an_error() {
    init();
    let (sup, _) = supervise_one("a", Restart::Permanent).await;
    let wrong = lookup_child_as::<SupervisorMsg>(&sup, "a").await;
    assert!(matches!(wrong, Err(SupervisorError::WrongType { .. })));
}

#[tokio::test(start_paused = true)]
async fn initial_start_failure_fails_the_supervisor_and_stops_started_children() {
    init();
    let (good, bad) = (Probe::default(), Probe::default());
    bad.fail_start.store(true, Ordering::SeqCst);
    let spawned = Actor::spawn(
        None,
        Supervisor,
        no_backoff(vec![
            child("good", Restart::Permanent, &good),
            child("bad", Restart::Permanent, &bad),
        ]),
    )
    .await;
    assert!(spawned.is_err());
    assert_eq!(good.stopped(), ["good"]);
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

#[test]
fn backoff_delay_doubles_up_to_the_cap() {
    let b = backoff(100, 1_000, Duration::from_secs(60));
    let delays: Vec<_> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    assert_eq!(Backoff::NONE.delay(7), Duration::ZERO);
    assert_eq!(b.total_delay(3), Duration::from_millis(700));
    assert!(
        Backoff::new(
            Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::ZERO
        )
        .is_err()
    );
}

fn slow_backoff() -> Backoff {
    backoff(100, 1_000, Duration::from_secs(3600))
}

#[tokio::test(start_paused = true)]
async fn successive_restarts_wait_longer() {
    init();
    let (observer, events) = recorder();
    let probe = Probe::default();
    let args = SupervisorArgs::new(vec![child("a", Restart::Permanent, &probe)])
        .with_backoff(slow_backoff())
        .with_intensity(at_most(100))
        .with_observer(observer);
    let sup = spawn_sup(args).await;

    for _ in 0..5 {
        crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    }
    assert_eq!(restart_delays(&events), [100, 200, 400, 800, 1000]);
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_after_a_healthy_run() {
    init();
    let (observer, events) = recorder();
    let probe = Probe::default();
    let args = SupervisorArgs::new(vec![child("a", Restart::Permanent, &probe)])
        .with_backoff(backoff(100, 1_000, Duration::from_secs(60)))
        .with_observer(observer);
    let sup = spawn_sup(args).await;

    crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    assert_eq!(restart_delays(&events), [100, 200, 100]);
}

#[tokio::test(start_paused = true)]
async fn supervisor_keeps_answering_while_a_restart_waits() {
    init();
    let probe = Probe::default();
    let sup =
        spawn_sup(
            SupervisorArgs::new(vec![child("a", Restart::Permanent, &probe)])
                .with_backoff(backoff(600_000, 600_000, Duration::from_secs(3600))),
        )
        .await;

    send(&sup, "a", ChildMsg::Panic).await;
    eventually(WAIT, "child waits for its restart", || async {
        which_children(&sup).await.unwrap()[0].alive.eq(&false)
    })
    .await;
    // Still inside the 600 s backoff, and the supervisor answers.
    assert!(lookup_child(&sup, "a").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(601)).await;
    eventually(WAIT, "child restarted after the backoff", || async {
        lookup_child(&sup, "a").await.unwrap().is_some()
    })
    .await;
    assert_eq!(probe.starts(), 2);
}

#[tokio::test(start_paused = true)]
async fn terminating_a_child_cancels_its_pending_restart() {
    init();
    let probe = Probe::default();
    let sup = spawn_sup(
        SupervisorArgs::new(vec![child("a", Restart::Permanent, &probe)])
            .with_backoff(slow_backoff()),
    )
    .await;
    send(&sup, "a", ChildMsg::Panic).await;
    wait_until_not_running(&sup, "a").await;
    terminate_child(&sup, "a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.starts(), 1);
    assert!(which_children(&sup).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Intensity and escalation
// ---------------------------------------------------------------------------------------------

pub(crate) fn at_most(max_restarts: u32) -> Intensity {
    Intensity {
        max_restarts,
        within: Duration::from_secs(60),
    }
}

/// A nested supervisor spec ("inner", kind "rotations") with one permanent child "w".
pub(crate) fn inner_supervisor(
    probe: &Probe,
    intensity: Intensity,
    observer: Observer,
) -> ChildSpec {
    let probe = probe.clone();
    ChildSpec::supervisor("inner", "rotations", None, move || {
        no_backoff(vec![child("w", Restart::Permanent, &probe)])
            .with_intensity(intensity)
            .with_observer(observer.clone())
    })
}

pub(crate) async fn inner_of(parent: &ActorRef<SupervisorMsg>) -> ActorRef<SupervisorMsg> {
    lookup_child_as::<SupervisorMsg>(parent, "inner")
        .await
        .unwrap()
        .expect("inner supervisor is running")
}

#[tokio::test(start_paused = true)]
async fn exceeding_intensity_fails_the_supervisor_and_its_parent_restarts_it() {
    init();
    let (inner_observer, inner_events) = recorder();
    let (parent_observer, parent_events) = recorder();
    let probe = Probe::default();
    let parent = spawn_sup(
        no_backoff(vec![inner_supervisor(&probe, at_most(1), inner_observer)])
            .with_observer(parent_observer),
    )
    .await;

    let inner = inner_of(&parent).await;
    crash_and_wait_restart(&inner, "w", || ChildMsg::Panic).await; // restart 1: allowed
    send(&inner, "w", ChildMsg::Panic).await; // 2 > 1

    eventually(WAIT, "parent restarted the inner supervisor", || async {
        lookup_child(&parent, "inner")
            .await
            .unwrap()
            .is_some_and(|c| c.get_id() != inner.get_id())
    })
    .await;
    // The inner supervisor stopped its child on the way out; its new incarnation started a
    // new one.
    let new_inner = inner_of(&parent).await;
    let w = lookup(&new_inner, "w").await.unwrap();
    assert_eq!(ping(&w).await, 3);

    assert!(inner_events.lock().unwrap().iter().any(
        |e| matches!(e, SupervisorEvent::GaveUp(g) if g.child_id == "w" && g.max_restarts == 1)
    ));
    let parent_events = parent_events.lock().unwrap();
    assert!(parent_events.iter().any(|e| matches!(
        e,
        SupervisorEvent::Restarting { child_id, kind: "rotations", reason, .. }
            if child_id == "inner" && reason.contains("gave up")
    )));
    assert!(parent_events.iter().any(|e| matches!(
        e,
        SupervisorEvent::Restarted { child_id, kind: "rotations", .. } if child_id == "inner"
    )));
}

#[tokio::test(start_paused = true)]
async fn restart_start_failures_count_towards_intensity() {
    init();
    let (observer, events) = recorder();
    let probe = Probe::default();
    let parent = spawn_sup(no_backoff(vec![inner_supervisor(
        &probe,
        at_most(3),
        observer,
    )]))
    .await;
    let inner = inner_of(&parent).await;

    probe.fail_start.store(true, Ordering::SeqCst);
    send(&inner, "w", ChildMsg::Panic).await;
    eventually(WAIT, "inner supervisor gave up", || async {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, SupervisorEvent::GaveUp(_)))
    })
    .await;
    let failed = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, SupervisorEvent::RestartFailed { .. }))
        .count();
    assert_eq!(failed, 3);
}

// ---------------------------------------------------------------------------------------------
// Observer, shutdown, timers
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn observer_hears_each_restart_with_the_child_kind() {
    init();
    let (observer, events) = recorder();
    let probe = Probe::default();
    let sup =
        spawn_sup(no_backoff(vec![child("a", Restart::Permanent, &probe)]).with_observer(observer))
            .await;
    crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;

    let events = events.lock().unwrap();
    match events.as_slice() {
        [
            SupervisorEvent::Restarting {
                child_id,
                kind: "worker",
                reason,
                attempt: 1,
                ..
            },
            SupervisorEvent::Restarted {
                kind: "worker",
                attempt: 1,
                ..
            },
        ] => {
            assert_eq!(child_id, "a");
            assert!(reason.contains("panics on request"), "{reason}");
        }
        other => panic!("unexpected events: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_in_reverse_start_order() {
    init();
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let probe = || Probe {
        stopped: stopped.clone(),
        ..Probe::default()
    };
    let sup = spawn_sup(no_backoff(vec![
        child("first", Restart::Permanent, &probe()),
        child("second", Restart::Permanent, &probe()),
    ]))
    .await;
    start_child(&sup, child("third", Restart::Permanent, &probe()))
        .await
        .unwrap();
    // A restarted child keeps its place in the order.
    crash_and_wait_restart(&sup, "first", || ChildMsg::Panic).await;
    stopped.lock().unwrap().clear();

    shutdown(&sup, Duration::from_secs(5)).await;
    assert_eq!(
        stopped.lock().unwrap().as_slice(),
        ["third", "second", "first"]
    );
}

#[tokio::test(start_paused = true)]
async fn timers_of_crashed_children_do_not_leak() {
    init();
    let probe = Probe::default();
    let sup = spawn_sup(
        no_backoff(vec![child("a", Restart::Permanent, &probe)]).with_intensity(at_most(1000)),
    )
    .await;
    // Held by the test, the spec's closure, the running incarnation's state and its pending
    // timer task.
    let baseline = Arc::strong_count(&probe.timer_token);
    for _ in 0..200 {
        crash_and_wait_restart(&sup, "a", || ChildMsg::Panic).await;
    }
    // Without the guard every crashed incarnation's timer task would still hold a clone.
    eventually(WAIT, "old timers were aborted", || async {
        Arc::strong_count(&probe.timer_token) == baseline
    })
    .await;
}

/// Receives `u32`s and counts them.
struct Counter;

impl Actor for Counter {
    type Msg = u32;
    type State = Arc<AtomicU32>;
    type Arguments = Arc<AtomicU32>;

    async fn pre_start(
        &self,
        _myself: ActorRef<u32>,
        count: Arc<AtomicU32>,
    ) -> Result<Arc<AtomicU32>, ActorProcessingErr> {
        Ok(count)
    }

    async fn handle(
        &self,
        _myself: ActorRef<u32>,
        message: u32,
        count: &mut Arc<AtomicU32>,
    ) -> Result<(), ActorProcessingErr> {
        count.fetch_add(message, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn timer_guard_delivers_when_kept_and_cancels_when_dropped_or_rearmed() {
    let received = Arc::new(AtomicU32::new(0));
    let (counter, _join) = Actor::spawn(None, Counter, received.clone()).await.unwrap();

    let mut kept = TimerGuard::new();
    kept.arm(Duration::from_secs(10), counter.clone(), || 1);
    assert!(kept.is_armed());

    let mut dropped = TimerGuard::new();
    dropped.arm(Duration::from_secs(10), counter.clone(), || 100);
    drop(dropped); // what a crashing actor does to its state

    let mut rearmed = TimerGuard::new();
    rearmed.arm(Duration::from_secs(10), counter.clone(), || 1000);
    rearmed.arm(Duration::from_secs(20), counter.clone(), || 10);

    let mut cancelled = TimerGuard::new();
    cancelled.arm(Duration::from_secs(10), counter.clone(), || 10_000);
    cancelled.cancel();
    assert!(!cancelled.is_armed());

    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(received.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    eventually(WAIT, "kept and re-armed timers fired", || async {
        received.load(Ordering::SeqCst) == 11
    })
    .await;
    assert!(!kept.is_armed());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(received.load(Ordering::SeqCst), 11);
}

/// By the time a guard's message exists (it is built just before the send), the guard no
/// longer says it is armed. An actor that re-arms only when nothing is armed relies on it:
/// the sending task ends a moment after the send, and a handler on another worker thread
/// that ran first took the firing timer for a pending one and never re-armed (a jobs
/// actor stopped ticking for good that way).
#[tokio::test(start_paused = true)]
async fn a_guard_is_not_armed_once_its_message_is_on_its_way() {
    let received = Arc::new(AtomicU32::new(0));
    let (counter, _join) = Actor::spawn(None, Counter, received.clone()).await.unwrap();
    let guard = Arc::new(Mutex::new(TimerGuard::new()));
    let seen = Arc::new(Mutex::new(None));
    let (g, s) = (guard.clone(), seen.clone());
    guard
        .lock()
        .unwrap()
        .arm(Duration::from_secs(1), counter.clone(), move || {
            *s.lock().unwrap() = Some(g.lock().unwrap().is_armed());
            1
        });
    assert!(guard.lock().unwrap().is_armed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually(WAIT, "the timer fired", || async {
        received.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "armed while its message was built"
    );
    counter.stop(None);
}

#[tokio::test(start_paused = true)]
async fn abort_on_drop_ends_the_task_with_its_holder() {
    let token = Arc::new(());
    let held = token.clone();
    let task = AbortOnDrop::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(held);
    });
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    assert_eq!(Arc::strong_count(&token), 2);
    drop(task);
    eventually(WAIT, "the aborted task dropped what it held", || async {
        Arc::strong_count(&token) == 1
    })
    .await;
}
