//! The supervision tree and rotation actors in-process, on paused tokio time: scheduled
//! rotations, API rotations, grace and expiry, rollback, failures and retries, restarts
//! after injected panics with state intact, and escalation; hibernation (idle secrets
//! without an actor, woken by their deadline, the API or a second start).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rotor::actors::admin::ActorAdmin;
use rotor::actors::rotation::{self, RotationMsg, WakeError};
use rotor::actors::scheduler::TimerKind;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::{Admin, AdminError};
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::{ErrorKind, Label, Outcome, RotationId, SecretRef};
use rotor::machine::SecretState;
use rotor::metrics::Metrics;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store};
use rotor::supervisor::{Backoff, Intensity, which_children};
use rotor::target::Target;
use rotor::target::none::NoneTarget;

use crate::common::embedded::{FAST_API_KEYS, admin, open_store, tree_config};
use crate::common::wait::eventually;

fn config(dir: &Path, extra: &str) -> Config {
    tree_config(
        dir,
        &format!(
            r#"
[runtime]
retry_backoff = "10s"
retry_backoff_max = "1m"
{FAST_API_KEYS}
[[secrets]]
tenant = "tenant2"
key = "api_keys"
policy = "fast"
{extra}
"#
        ),
    )
}

struct Harness {
    tree: Tree,
    admin: ActorAdmin,
    store: Arc<EmbeddedStore>,
    target: Arc<NoneTarget>,
    _dir: tempfile::TempDir,
}

async fn start_with(
    dir: tempfile::TempDir,
    intensity: Intensity,
    target: Arc<NoneTarget>,
) -> Harness {
    let cfg = config(dir.path(), "");
    let store = open_store(dir.path());
    let options = TreeOptions {
        clock: Clock::tokio(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()),
        rotations_intensity: intensity,
        backoff: Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .unwrap(),
        // Every secret gets its own target; they fail and heal together with `target`.
        target_override: Some(Arc::new({
            let target = target.clone();
            move |s: &SecretRef| Arc::new(target.sharing_failures(s.clone())) as Arc<dyn Target>
        })),
        namespace: format!("{}/", dir.path().display()),
        ..TreeOptions::default()
    };
    let tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .expect("tree starts");
    let admin = admin(&tree);
    Harness {
        tree,
        admin,
        store,
        target,
        _dir: dir,
    }
}

async fn start() -> Harness {
    start_with(
        tempfile::tempdir().unwrap(),
        Intensity {
            max_restarts: 5,
            within: Duration::from_secs(10),
        },
        Arc::new(NoneTarget::new(t1())),
    )
    .await
}

fn t1() -> SecretRef {
    SecretRef::new("tenant1", "api_keys").unwrap()
}

async fn labels_of(store: &EmbeddedStore, s: &SecretRef) -> Vec<(u64, Vec<Label>)> {
    store
        .versions(s)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.labels))
        .collect()
}

fn phase(h: &Harness, s: &SecretRef) -> &'static str {
    h.tree.context.board.get(s).map_or("none", |st| st.phase)
}

#[tokio::test(start_paused = true)]
async fn first_versions_then_scheduled_rotation_grace_and_expiry() {
    let h = start().await;
    eventually(Duration::from_secs(5), "first versions", async || {
        if !h.admin.ready() {
            return false;
        }
        for s in [t1(), SecretRef::new("tenant2", "api_keys").unwrap()] {
            if labels_of(&h.store, &s).await != vec![(1, vec![Label::Current])] {
                return false;
            }
        }
        true
    })
    .await;
    // An hour later the schedule rotates: v2 current, v1 previous during grace.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    eventually(Duration::from_secs(5), "v2 in grace", async || {
        phase(&h, &t1()) == "grace"
    })
    .await;
    assert_eq!(
        labels_of(&h.store, &t1()).await,
        vec![(1, vec![Label::Previous]), (2, vec![Label::Current])]
    );
    // Ten minutes of grace, then v1 expires.
    tokio::time::sleep(Duration::from_secs(600)).await;
    eventually(Duration::from_secs(5), "expiry", async || {
        phase(&h, &t1()) == "idle"
    })
    .await;
    let versions = h.store.versions(&t1()).await.unwrap();
    assert!(versions[0].labels.is_empty() && versions[0].expired_at.is_some());
    assert_eq!(versions[1].labels, vec![Label::Current]);
    let history = h.store.history(&t1(), 10).await.unwrap();
    assert_eq!(history[0].outcome, Outcome::Succeeded);
    assert_eq!(history[0].to_version, 2);
}

#[tokio::test(start_paused = true)]
async fn api_rotation_conflict_and_rollback_during_grace() {
    let h = start().await;
    eventually(Duration::from_secs(5), "ready", async || h.admin.ready()).await;
    eventually(Duration::from_secs(5), "v1", async || {
        labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    let id = h.admin.rotate(t1()).await.expect("accepted");
    assert_eq!(id.to_string(), "r2");
    eventually(Duration::from_secs(5), "grace", async || {
        phase(&h, &t1()) == "grace"
    })
    .await;
    // A second rotation while the first is in grace is a conflict.
    assert!(matches!(
        h.admin.rotate(t1()).await,
        Err(AdminError::Conflict(_))
    ));
    // Unknown secrets are 404s.
    let unknown = SecretRef::new("nobody", "api_keys").unwrap();
    assert!(matches!(
        h.admin.rotate(unknown).await,
        Err(AdminError::UnknownSecret(_))
    ));
    // Roll back: v1 current again, v2 revoked.
    h.admin.rollback(t1()).await.expect("rollback accepted");
    eventually(Duration::from_secs(5), "rolled back", async || {
        phase(&h, &t1()) == "idle"
    })
    .await;
    let versions = h.store.versions(&t1()).await.unwrap();
    assert_eq!(versions[0].labels, vec![Label::Current]);
    assert!(versions[1].labels.is_empty() && versions[1].expired_at.is_some());
    assert_eq!(
        h.store.history(&t1(), 1).await.unwrap()[0].outcome,
        Outcome::RolledBack
    );
    // Nothing in grace any more.
    assert!(matches!(
        h.admin.rollback(t1()).await,
        Err(AdminError::Conflict(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn failures_retry_with_backoff_then_stick_without_touching_current() {
    let h = start().await;
    eventually(Duration::from_secs(5), "v1", async || {
        labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    h.target.fail("test");
    h.admin.rotate(t1()).await.expect("accepted");
    // 3 attempts (10 s, then 20 s backoff), then stuck.
    eventually(Duration::from_secs(120), "stuck", async || {
        phase(&h, &t1()) == "stuck"
    })
    .await;
    let versions = h.store.versions(&t1()).await.unwrap();
    let current: Vec<_> = versions
        .iter()
        .filter(|v| v.labels.contains(&Label::Current))
        .map(|v| v.version)
        .collect();
    assert_eq!(current, vec![1], "a failed rotation changed current");
    let outcomes: Vec<_> = h
        .store
        .history(&t1(), 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome)
        .collect();
    // Newest first: three failed attempts after the first version's creation.
    assert_eq!(
        outcomes,
        vec![
            Outcome::Abandoned,
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Succeeded
        ]
    );
    let text = h.admin.metrics_text().await.unwrap();
    assert!(
        text.contains(r#"secret_rotation_total{policy="fast",outcome="failed"} 2"#),
        "{text}"
    );
    assert!(text.contains("rotor_secrets_stuck 1"), "{text}");
    // An operator fixes the target and rotates: it succeeds.
    h.target.heal();
    h.admin.rotate(t1()).await.expect("accepted after stuck");
    eventually(Duration::from_secs(5), "grace", async || {
        phase(&h, &t1()) == "grace"
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_rotation_actor_is_restarted_with_its_state() {
    let h = start().await;
    eventually(Duration::from_secs(5), "v1", async || {
        labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    h.admin.rotate(t1()).await.unwrap();
    eventually(Duration::from_secs(5), "grace", async || {
        phase(&h, &t1()) == "grace"
    })
    .await;
    let before = h.tree.context.board.get(&t1()).unwrap();
    // Woken, in case it hibernates in grace already.
    let old = h.tree.context.wake(&t1()).await.unwrap();
    old.cast(RotationMsg::InjectPanic).unwrap();
    eventually(Duration::from_secs(5), "a new incarnation", async || {
        ractor::registry::where_is(rotation::actor_name(&h.tree.context.namespace, &t1()))
            .is_some_and(|c| c.get_id() != old.get_id())
    })
    .await;
    // Same state: still in grace with the same expiry, and it still expires on time.
    eventually(Duration::from_secs(5), "state reloaded", async || {
        h.tree.context.board.get(&t1()) == Some(before.clone())
    })
    .await;
    let text = h.admin.metrics_text().await.unwrap();
    assert!(
        text.contains(r#"rotor_actor_restarts_total{kind="rotation"} 1"#),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    eventually(Duration::from_secs(5), "expiry after restart", async || {
        phase(&h, &t1()) == "idle"
    })
    .await;
    // The sibling was never touched.
    let t2 = SecretRef::new("tenant2", "api_keys").unwrap();
    assert_eq!(labels_of(&h.store, &t2).await[0].0, 1);
}

#[tokio::test(start_paused = true)]
async fn repeated_panics_beyond_the_intensity_escalate_to_the_root() {
    let mut h = start_with(
        tempfile::tempdir().unwrap(),
        Intensity {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
        Arc::new(NoneTarget::new(t1())),
    )
    .await;
    eventually(Duration::from_secs(5), "ready", async || h.admin.ready()).await;
    for _ in 0..3 {
        let actor = eventually(Duration::from_secs(5), "the rotation actor", async || {
            h.tree.context.wake(&t1()).await.ok()
        })
        .await;
        let _ = actor.cast(RotationMsg::InjectPanic);
        eventually(
            Duration::from_secs(5),
            "the panicked actor gone",
            async || {
                ractor::registry::where_is(rotation::actor_name(&h.tree.context.namespace, &t1()))
                    .is_none_or(|c| c.get_id() != actor.get_id())
            },
        )
        .await;
    }
    // The rotations supervisor gave up; the root restarts it (a fresh set of actors).
    let text = eventually(
        Duration::from_secs(30),
        "a supervisor restart",
        async || {
            let t = h.admin.metrics_text().await.ok()?;
            t.contains(r#"rotor_actor_restarts_total{kind="supervisor"} 1"#)
                .then_some(t)
        },
    )
    .await;
    assert!(
        text.contains(r#"rotor_actor_restarts_total{kind="rotation"} 2"#),
        "{text}"
    );
    // The new rotations supervisor starts actors again (each on demand).
    eventually(Duration::from_secs(5), "actors back", async || {
        h.tree.context.wake(&t1()).await.is_ok()
    })
    .await;
    h.tree.shutdown(Duration::from_secs(5)).await;
}

/// The state the store holds for `s`: what a restarted actor resumes from.
async fn saved_state(store: &EmbeddedStore, s: &SecretRef) -> SecretState {
    let bytes = store
        .journal(s)
        .await
        .unwrap()
        .expect("a journal for a configured secret");
    serde_json::from_slice(&bytes).expect("the journal is a SecretState")
}

#[tokio::test(start_paused = true)]
async fn a_store_write_failing_at_any_step_is_resumed_after_the_restart() {
    // Writes of one rotation through a target that takes time (1 ms a step): the generating
    // commit, put_version, then 4 commits (staged, applied, tested, grace). Through the
    // store-only target, whose steps the actor runs in memory: one write (the new version
    // with the state in grace). Fail each in turn; the actor crashes on the failed write,
    // its supervisor restarts it, and it resumes from the last state that reached the
    // store: that attempt (same rotation id, same pending version) is the one that
    // finishes, and no other is started.
    let targets = [(Duration::from_millis(1), 6u64), (Duration::ZERO, 1u64)];
    for (k, delay) in targets
        .into_iter()
        .flat_map(|(delay, writes)| (0..writes).map(move |k| (k, delay)))
    {
        let target = Arc::new(NoneTarget::with_delay(t1(), delay));
        assert_eq!(target.steps_in_memory(), delay.is_zero());
        let mut h = start_with(
            tempfile::tempdir().unwrap(),
            Intensity {
                max_restarts: 5,
                within: Duration::from_secs(10),
            },
            target,
        )
        .await;
        eventually(Duration::from_secs(5), "v1", async || {
            h.admin.ready() && labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
        })
        .await;
        h.store.fail_writes_after(k);
        // The API may see the actor die mid-call: whether it answers with the id or an
        // error, what counts is what reached the store, read below.
        let _ = h.admin.rotate(t1()).await;
        eventually(
            Duration::from_secs(5),
            &format!("k={k}: a restart"),
            async || {
                let text = h.admin.metrics_text().await.unwrap_or_default();
                text.contains(r#"rotor_actor_restarts_total{kind="rotation"} 1"#)
            },
        )
        .await;
        // Every write fails until the faults are cleared, so this is the state saved when
        // the actor died, the one the restarted actor resumes.
        let saved = saved_state(&h.store, &t1()).await;
        h.store.clear_faults();
        let (rotation, version) = match saved.phase.run() {
            // The attempt reached the store: it must be resumed, so a rotate is refused
            // (in flight) until it is done; while the actor restarts the API says 503.
            Some(run) => {
                let run = (run.rotation, run.pending);
                eventually(
                    Duration::from_secs(5),
                    &format!("k={k}: the API to refuse a second attempt"),
                    async || match h.admin.rotate(t1()).await {
                        Err(AdminError::Conflict(_)) => true,
                        Err(_) => false,
                        Ok(id) => panic!(
                            "k={k}: rotate started {id}: the interrupted {} in phase {} was dropped",
                            run.0,
                            saved.phase.name()
                        ),
                    },
                )
                .await;
                run
            }
            // Nothing of the attempt was saved (the first write failed): there is nothing
            // to resume, and the next rotate starts the attempt with the id and version
            // the lost one would have had.
            None => {
                let id = eventually(
                    Duration::from_secs(5),
                    &format!("k={k}: a rotation accepted"),
                    async || h.admin.rotate(t1()).await.ok(),
                )
                .await;
                assert_eq!(id.0, saved.rotations_started + 1, "k={k}: saved {saved:?}");
                (id, saved.latest_version + 1)
            }
        };
        eventually(
            Duration::from_secs(30),
            "a promotion after the restart",
            async || phase(&h, &t1()) == "grace",
        )
        .await;
        // The restarted actor resumes at once, so its first write can still meet the fault,
        // which this test clears only once it has seen the restart. Then the resumed
        // attempt fails on a store error (history says so), is discarded as any failed
        // attempt is, and the retry is the next attempt with the next version; nothing
        // else may differ.
        let hit_fault = h.store.history(&t1(), 10).await.unwrap().iter().any(|r| {
            r.rotation == rotation
                && r.outcome == Outcome::Failed
                && r.error == Some(ErrorKind::Store)
        });
        let failed_resume = hit_fault.then_some((rotation, version, Outcome::Failed));
        let (rotation, version) = if hit_fault {
            (RotationId(rotation.0 + 1), version + 1)
        } else {
            (rotation, version)
        };
        let versions = h.store.versions(&t1()).await.unwrap();
        let current: Vec<_> = versions
            .iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .collect();
        assert_eq!(current.len(), 1, "k={k}: {versions:?}");
        assert_eq!(current[0].version, version, "k={k}: {versions:?}");
        assert_eq!(current[0].rotation, rotation, "k={k}: {versions:?}");
        // No other version was created: the resumed attempt reused its pending one.
        assert_eq!(
            versions.iter().map(|v| v.version).max(),
            Some(version),
            "k={k}: {versions:?}"
        );
        for v in &versions {
            h.store
                .read_value(&t1(), v.version)
                .await
                .expect("value readable");
        }
        // After grace the history shows the first version and this one attempt, finished
        // once, and the journal counts no attempt beyond it.
        tokio::time::sleep(Duration::from_secs(600)).await;
        eventually(Duration::from_secs(5), "expiry", async || {
            phase(&h, &t1()) == "idle"
        })
        .await;
        let history: Vec<_> = h
            .store
            .history(&t1(), 10)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.rotation, r.to_version, r.outcome))
            .collect();
        let expected: Vec<_> = [(rotation, version, Outcome::Succeeded)]
            .into_iter()
            .chain(failed_resume)
            .chain([(RotationId(1), 1, Outcome::Succeeded)])
            .collect();
        assert_eq!(history, expected, "k={k}");
        assert_eq!(
            saved_state(&h.store, &t1()).await.rotations_started,
            rotation.0,
            "k={k}"
        );
        h.tree.shutdown(Duration::from_secs(5)).await;
    }
}

// Hibernation: a secret with nothing to do has no actor, only its deadline in the scheduler
// and its status on the board; a deadline, an API call or a wake starts it again.

/// Whether `s` has a live rotation actor.
fn awake(h: &Harness, s: &SecretRef) -> bool {
    ractor::registry::where_is(rotation::actor_name(&h.tree.context.namespace, s)).is_some()
}

/// The children of the rotations supervisor: one per awake secret.
async fn rotation_children(tree: &Tree) -> usize {
    let sup = ractor::registry::where_is(rotation::supervisor_name(&tree.context.namespace))
        .expect("the rotations supervisor");
    which_children(&sup.into()).await.expect("children").len()
}

/// The value of `rotor_actor_restarts_total{kind="rotation"}`, 0 when absent.
async fn rotation_restarts(h: &Harness) -> u64 {
    let text = h.admin.metrics_text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"rotor_actor_restarts_total{kind="rotation"} "#))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_idle_secret_hibernates_and_its_deadline_wakes_it() {
    let h = start().await;
    eventually(Duration::from_secs(5), "v1", async || {
        h.admin.ready() && labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    // The next rotation is an hour away: after the idle delay the actor is gone, and the
    // secret is a board entry and a deadline.
    eventually(Duration::from_secs(120), "hibernated", async || {
        !awake(&h, &t1()) && rotation_children(&h.tree).await == 0
    })
    .await;
    assert_eq!(phase(&h, &t1()), "idle");
    let due = h.tree.context.board.get(&t1()).unwrap().next_due.unwrap();
    assert_eq!(
        h.tree.context.scheduler.armed(&t1(), TimerKind::Rotation),
        Some(due)
    );
    // The deadline wakes it: the scheduled rotation happens, and after it the actor
    // hibernates again.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    eventually(Duration::from_secs(5), "v2 current", async || {
        labels_of(&h.store, &t1())
            .await
            .contains(&(2, vec![Label::Current]))
    })
    .await;
    eventually(
        Duration::from_secs(120),
        "hibernated in grace",
        async || phase(&h, &t1()) == "grace" && !awake(&h, &t1()),
    )
    .await;
    // Grace ends on the deadline of a hibernating secret too.
    tokio::time::sleep(Duration::from_secs(600)).await;
    eventually(Duration::from_secs(5), "v1 expired", async || {
        phase(&h, &t1()) == "idle" && labels_of(&h.store, &t1()).await.len() == 2
    })
    .await;
    // Stopping when idle is a normal exit: never counted (or done) as a restart.
    assert_eq!(rotation_restarts(&h).await, 0);
}

#[tokio::test(start_paused = true)]
async fn wakes_start_one_actor_and_an_api_call_wakes_a_hibernating_secret() {
    let h = start().await;
    eventually(Duration::from_secs(5), "v1", async || {
        h.admin.ready() && labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    eventually(Duration::from_secs(120), "hibernated", async || {
        !awake(&h, &t1())
    })
    .await;
    // Two callers at once: one starts it, the other finds it.
    let ctx = &h.tree.context;
    let secret = t1();
    let (a, b) = tokio::join!(ctx.wake(&secret), ctx.wake(&secret));
    assert_eq!(a.unwrap().get_id(), b.unwrap().get_id());
    assert_eq!(rotation_children(&h.tree).await, 1);
    eventually(Duration::from_secs(120), "hibernated again", async || {
        !awake(&h, &t1())
    })
    .await;
    // The API wakes it: the rotation runs as it would have with a live actor.
    h.admin.rotate(t1()).await.unwrap();
    eventually(Duration::from_secs(5), "grace", async || {
        phase(&h, &t1()) == "grace"
    })
    .await;
    // A secret that is not managed is refused, and no actor is started for it.
    let unknown = SecretRef::new("nobody", "api_keys").unwrap();
    assert!(matches!(
        ctx.wake(&unknown).await,
        Err(WakeError::Unknown(s)) if s == unknown
    ));
    assert!(matches!(
        h.admin.rotate(unknown.clone()).await,
        Err(AdminError::UnknownSecret(_))
    ));
    assert!(!awake(&h, &unknown));
}

/// An API request that reaches a rotation actor as it goes into hibernation is queued
/// behind the idle tick and dropped unread when the actor stops: the next incarnation
/// answers it, and the rotation happens once (it was a 503 "try again" before).
#[tokio::test(start_paused = true)]
async fn a_request_that_meets_an_actor_going_into_hibernation_is_answered_by_the_next() {
    let h = start().await;
    eventually(Duration::from_secs(5), "v1", async || {
        h.admin.ready() && labels_of(&h.store, &t1()).await == vec![(1, vec![Label::Current])]
    })
    .await;
    let ctx = &h.tree.context;
    for action in ["rotate", "rollback"] {
        let actor = ctx.wake(&t1()).await.unwrap();
        let first = actor.get_id();
        // Both messages are queued before the actor runs (one thread, no await between):
        // it takes the idle tick first and stops, leaving the request in its mailbox.
        actor.cast(RotationMsg::Hibernate).unwrap();
        let answer = match action {
            "rotate" => h.admin.rotate(t1()).await,
            _ => h.admin.rollback(t1()).await,
        };
        answer.unwrap_or_else(|e| panic!("{action}: {e}"));
        let now = ctx.wake(&t1()).await.unwrap();
        assert_ne!(
            now.get_id(),
            first,
            "{action}: answered by a new incarnation"
        );
        let (after, current) = if action == "rotate" {
            ("v2 current", 2)
        } else {
            ("v1 current again", 1)
        };
        eventually(Duration::from_secs(5), after, async || {
            let labels = labels_of(&h.store, &t1()).await;
            labels.contains(&(current, vec![Label::Current])) && labels.len() == 2
        })
        .await;
    }
    // Stopping to hibernate is no failure: nothing restarted.
    assert_eq!(rotation_restarts(&h).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_second_start_fills_the_board_from_the_journals_without_an_actor() {
    let h = start().await;
    let t2 = SecretRef::new("tenant2", "api_keys").unwrap();
    eventually(Duration::from_secs(5), "v1 of both", async || {
        h.admin.ready() && phase(&h, &t1()) == "idle" && phase(&h, &t2) == "idle"
    })
    .await;
    let before = h.tree.context.board.snapshot();
    let Harness {
        mut tree,
        admin,
        store,
        _dir: dir,
        ..
    } = h;
    drop(admin);
    tree.shutdown(Duration::from_secs(5)).await;
    drop(tree);
    // The process again, on the same store (a new registry namespace: the old names may
    // still be releasing).
    let options = TreeOptions {
        clock: Clock::tokio(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()),
        namespace: format!("{}/second/", dir.path().display()),
        ..TreeOptions::default()
    };
    let cfg = config(dir.path(), "");
    let tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .expect("tree starts");
    eventually(Duration::from_secs(5), "ready", async || tree.ready()).await;
    // Every secret on the board as it was, its deadline armed, and not one actor.
    assert_eq!(tree.context.board.snapshot(), before);
    for (secret, status) in &before {
        assert_eq!(
            tree.context.scheduler.armed(secret, TimerKind::Rotation),
            status.next_due
        );
        let name = rotation::actor_name(&tree.context.namespace, secret);
        assert!(ractor::registry::where_is(name).is_none(), "{secret} awake");
    }
    assert_eq!(rotation_children(&tree).await, 0);
}
