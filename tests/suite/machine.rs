//! The rotation state machine, without actors or I/O: table tests of each path and
//! proptest properties over random event sequences, against a model of the store (the
//! saved state and history records) with crashes after and before a save.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use rotor::domain::{ErrorKind, HistoryRecord, Label, Outcome, RotationId, Step, Trigger};
use rotor::machine::{
    Effect, Event, ExpiryGate, Notice, Phase, Rejection, Rules, SecretState, Transition, labels,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
}

fn interval_1h(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(match last {
        Some(l) => (l + TimeDelta::hours(1)).max(now),
        None => now,
    })
}

fn rules(gate: ExpiryGate) -> Rules<'static> {
    Rules {
        grace: TimeDelta::minutes(10),
        max_attempts: 3,
        retry_backoff: TimeDelta::seconds(30),
        retry_backoff_max: TimeDelta::minutes(10),
        expiry_gate: gate,
        jitter_seed: 7,
        next_due: &interval_1h,
    }
}

/// The effect a step result answers, if `e` is a step effect.
fn step_of(e: &Effect) -> Option<(RotationId, Step)> {
    match e {
        Effect::Generate { rotation, .. } => Some((*rotation, Step::Generate)),
        Effect::Apply { rotation, .. } => Some((*rotation, Step::Apply)),
        Effect::Test { rotation, .. } => Some((*rotation, Step::Test)),
        Effect::Promote { rotation, .. } => Some((*rotation, Step::Promote)),
        Effect::Revoke { rotation, step, .. } => Some((*rotation, *step)),
        Effect::Restore { rotation, .. } => Some((*rotation, Step::Rollback)),
        _ => None,
    }
}

/// Drives a state by answering every step effect with success until nothing is pending.
fn settle(r: &Rules, _s: SecretState, mut t: Transition, now: DateTime<Utc>) -> SecretState {
    loop {
        let s = t.state.clone();
        let Some((rotation, step)) = t.effects.iter().find_map(step_of) else {
            return s;
        };
        t = r
            .step(&s, Event::StepDone { rotation, step }, now)
            .expect("step result accepted");
    }
}

fn first_version(r: &Rules) -> SecretState {
    let t = r
        .step(&SecretState::default(), Event::Resume, t0())
        .unwrap();
    // A secret with no version is due at once: resume arms the timer for now.
    assert!(t.effects.contains(&Effect::ArmTimer {
        rotation: RotationId(1),
        at: t0()
    }));
    let s = t.state;
    let t = r.step(&s, Event::Timer, t0()).unwrap();
    settle(r, s, t, t0())
}

/// A job's rotation of `s` requested at `t0`, settled: every step succeeds.
fn rotate_by_job(r: &Rules, s: &SecretState, expire_previous: bool) -> (Transition, SecretState) {
    let t = r
        .step(
            s,
            Event::JobRotate {
                job: "job-1".into(),
                expire_previous,
            },
            t0(),
        )
        .unwrap();
    let settled = settle(r, t.state.clone(), t.clone(), t0());
    (t, settled)
}

#[test]
fn a_job_rotation_names_its_job_and_keeps_the_grace_by_default() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let (t, s) = rotate_by_job(&r, &s, false);
    let Phase::Generating(run) = &t.state.phase else {
        panic!("{:?}", t.state.phase)
    };
    assert_eq!(run.trigger, Trigger::Job);
    assert_eq!(run.job.as_deref(), Some("job-1"));
    assert!(!run.expire_previous_at_promotion);
    let Phase::Grace { previous, run, .. } = &s.phase else {
        panic!("{:?}", s.phase)
    };
    assert_eq!(*previous, 1);
    assert_eq!(run.job.as_deref(), Some("job-1"));
    assert_eq!(labels(&s), vec![(2, Label::Current), (1, Label::Previous)]);
}

#[test]
fn expire_previous_revokes_the_previous_version_at_promotion() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = r
        .step(
            &s,
            Event::JobRotate {
                job: "job-1".into(),
                expire_previous: true,
            },
            t0(),
        )
        .unwrap();
    // Generate, apply, test, then the promotion goes straight to the revoke of v1.
    let mut s = t.state;
    for step in [Step::Generate, Step::Apply, Step::Test] {
        s = r
            .step(
                &s,
                Event::StepDone {
                    rotation: RotationId(2),
                    step,
                },
                t0(),
            )
            .unwrap()
            .state;
    }
    let t = r
        .step(
            &s,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Promote,
            },
            t0(),
        )
        .unwrap();
    assert_eq!(t.outcome, Some(Outcome::Succeeded));
    assert_eq!(t.state.current, Some(2));
    assert!(matches!(t.state.phase, Phase::Expired { previous: 1, .. }));
    assert!(t.effects.contains(&Effect::Revoke {
        rotation: RotationId(2),
        version: 1,
        step: Step::Expire
    }));
    assert!(
        !t.effects.iter().any(|e| matches!(
            e,
            Effect::Notify {
                notice: Notice::GraceEntered { .. },
                ..
            }
        )),
        "no grace is entered"
    );
    // No `previous` label at any point after the promotion.
    assert_eq!(labels(&t.state), vec![(2, Label::Current)]);
    let t = r
        .step(
            &t.state,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Expire,
            },
            t0(),
        )
        .unwrap();
    let record = t.history.expect("the attempt is recorded");
    assert_eq!(record.outcome, Outcome::Succeeded);
    assert_eq!(record.trigger, Trigger::Job);
    assert!(matches!(t.state.phase, Phase::Idle { .. }));
}

#[test]
fn expire_now_ends_the_grace_at_once_and_is_ignored_elsewhere() {
    let r = rules(ExpiryGate::GraceAndConsumers {
        max_extension: TimeDelta::hours(1),
    });
    let s = first_version(&r);
    // Outside grace: nothing happens.
    let t = r.step(&s, Event::ExpireNow, t0()).unwrap();
    assert_eq!(t.state, s);
    assert!(t.effects.is_empty());
    let t = rotate_by_api(&r, &s);
    let s = settle(&r, t.state.clone(), t, t0());
    let Phase::Grace { expires_at, .. } = &s.phase else {
        panic!("{:?}", s.phase)
    };
    let early = *expires_at - TimeDelta::minutes(9);
    // In grace, well before its end and without consumers having caught up: expired now.
    let t = r.step(&s, Event::ExpireNow, early).unwrap();
    assert!(matches!(t.state.phase, Phase::Expired { previous: 1, .. }));
    assert!(t.effects.contains(&Effect::Revoke {
        rotation: RotationId(2),
        version: 1,
        step: Step::Expire
    }));
    assert_eq!(labels(&t.state), vec![(2, Label::Current)]);
    // A rotate while the revoke runs is refused; once it is done, it starts.
    assert!(matches!(
        r.step(
            &t.state,
            Event::JobRotate {
                job: "j".into(),
                expire_previous: false
            },
            early
        ),
        Err(Rejection::InProgress {
            phase: "expired",
            ..
        })
    ));
    let s = settle(&r, t.state.clone(), t, early);
    assert!(matches!(s.phase, Phase::Idle { .. }));
    let (_, s) = rotate_by_job(&r, &s, false);
    assert_eq!(s.current, Some(3));
}

#[test]
fn a_job_rotation_resumes_with_its_job_after_a_restart() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = r
        .step(
            &s,
            Event::JobRotate {
                job: "job-9".into(),
                expire_previous: true,
            },
            t0(),
        )
        .unwrap();
    // The journal round-trips the job and the flag; an old journal without them reads.
    let bytes = serde_json::to_vec(&t.state).unwrap();
    let back: SecretState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, t.state);
    let old = serde_json::to_vec(&s).unwrap();
    assert!(!String::from_utf8_lossy(&old).contains("expire_previous"));
    let resumed = r.step(&back, Event::Resume, t0()).unwrap();
    assert!(resumed.effects.contains(&Effect::Generate {
        rotation: RotationId(2),
        version: 2
    }));
}

/// An API rotation of `s` requested at `t0`.
fn rotate_by_api(r: &Rules, s: &SecretState) -> Transition {
    r.step(
        s,
        Event::Rotate {
            trigger: Trigger::Api,
        },
        t0(),
    )
    .unwrap()
}

#[test]
fn first_version_is_created_at_once_and_needs_no_grace() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    assert_eq!(s.current, Some(1));
    assert_eq!(labels(&s), vec![(1, Label::Current)]);
    assert_eq!(
        s.phase,
        Phase::Idle {
            next_due: Some(t0() + TimeDelta::hours(1)),
            retry: false
        }
    );
}

#[test]
fn full_rotation_moves_labels_pending_current_previous_then_expires() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let due = t0() + TimeDelta::hours(1);
    let t = r.step(&s, Event::Timer, due).unwrap();
    assert!(matches!(t.state.phase, Phase::Generating(_)));
    assert!(t.effects.contains(&Effect::Generate {
        rotation: RotationId(2),
        version: 2
    }));
    let s = t.state;
    let t = r
        .step(
            &s,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Generate,
            },
            due,
        )
        .unwrap();
    assert_eq!(
        labels(&t.state),
        vec![(1, Label::Current), (2, Label::Pending)]
    );
    let s = settle(&r, t.state.clone(), t, due);
    assert_eq!(s.current, Some(2));
    assert_eq!(labels(&s), vec![(2, Label::Current), (1, Label::Previous)]);
    let Phase::Grace { expires_at, .. } = s.phase else {
        panic!("not in grace: {:?}", s.phase)
    };
    assert_eq!(expires_at, due + TimeDelta::minutes(10));

    // A timer before expiry changes nothing but re-arms.
    let early = r
        .step(&s, Event::Timer, due + TimeDelta::minutes(5))
        .unwrap();
    assert_eq!(early.state, s);
    // At expiry the previous version is revoked, then the secret goes idle.
    let t = r.step(&s, Event::Timer, expires_at).unwrap();
    assert!(t.effects.contains(&Effect::Revoke {
        rotation: RotationId(2),
        version: 1,
        step: Step::Expire
    }));
    assert_eq!(labels(&t.state), vec![(2, Label::Current)]);
    let t = r
        .step(
            &t.state,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Expire,
            },
            expires_at,
        )
        .unwrap();
    let h = t.history.expect("history record");
    assert_eq!(h.outcome, Outcome::Succeeded);
    assert_eq!(h.from_version, Some(1));
    assert_eq!(h.to_version, 2);
    assert_eq!(
        h.steps,
        vec![
            Step::Generate,
            Step::Apply,
            Step::Test,
            Step::Promote,
            Step::Expire
        ]
    );
    // Next due counts from the promotion, not from expiry.
    assert_eq!(
        t.state.phase,
        Phase::Idle {
            next_due: Some(due + TimeDelta::hours(1)),
            retry: false
        }
    );
}

#[test]
fn rollback_during_grace_restores_previous_and_revokes_new() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let s = settle(&r, t.state.clone(), t, t0());
    assert!(matches!(s.phase, Phase::Grace { .. }));
    let t = r.step(&s, Event::Rollback, t0()).unwrap();
    assert_eq!(t.state.current, Some(1));
    assert_eq!(labels(&t.state), vec![(1, Label::Current)]);
    assert!(t.effects.contains(&Effect::Restore {
        rotation: RotationId(2),
        restore: 1,
        revoke: 2
    }));
    let t = r
        .step(
            &t.state,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Rollback,
            },
            t0(),
        )
        .unwrap();
    assert_eq!(t.history.map(|h| h.outcome), Some(Outcome::RolledBack));
    assert!(matches!(t.state.phase, Phase::Idle { .. }));
    // No grace any more: a second rollback is refused.
    assert_eq!(
        r.step(&t.state, Event::Rollback, t0()),
        Err(Rejection::NothingToRollBack)
    );
}

#[test]
fn rotate_while_in_flight_is_refused() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let err = r
        .step(
            &t.state,
            Event::Rotate {
                trigger: Trigger::Api,
            },
            t0(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Rejection::InProgress {
            rotation: RotationId(2),
            phase: "generating"
        }
    );
}

#[test]
fn failure_before_promotion_keeps_current_and_retries_then_sticks() {
    let r = rules(ExpiryGate::Grace);
    let mut s = first_version(&r);
    let mut now = t0();
    let mut retries = Vec::new();
    let mut trigger = Trigger::Api;
    for attempt in 1..=3u32 {
        let t = r.step(&s, Event::Rotate { trigger }, now).unwrap();
        let rot = t.state.phase.run().unwrap().rotation;
        let t = r
            .step(
                &t.state,
                Event::StepDone {
                    rotation: rot,
                    step: Step::Generate,
                },
                now,
            )
            .unwrap();
        let t = r
            .step(
                &t.state,
                Event::StepFailed {
                    rotation: rot,
                    step: Step::Apply,
                    error: ErrorKind::Apply,
                },
                now,
            )
            .unwrap();
        assert_eq!(t.state.current, Some(1), "failure changed current");
        assert!(t.effects.contains(&Effect::Revoke {
            rotation: rot,
            version: t.state.latest_version,
            step: Step::Rollback
        }));
        let t = r
            .step(
                &t.state,
                Event::StepDone {
                    rotation: rot,
                    step: Step::Rollback,
                },
                now,
            )
            .unwrap();
        assert_eq!(t.state.current, Some(1));
        assert_eq!(t.state.attempts, attempt);
        s = t.state;
        if attempt < 3 {
            assert_eq!(t.history.as_ref().map(|h| h.outcome), Some(Outcome::Failed));
            let Phase::Idle {
                next_due: Some(at),
                retry: true,
            } = s.phase
            else {
                panic!("expected a retry, got {:?}", s.phase)
            };
            retries.push(at - now);
            now = at;
            // The retry fires from the timer with the Retry trigger.
            let t = r.step(&s, Event::Timer, now).unwrap();
            assert!(t.effects.iter().any(|e| matches!(
                e,
                Effect::Notify {
                    notice: Notice::Started {
                        trigger: Trigger::Retry,
                        ..
                    },
                    ..
                }
            )));
            trigger = Trigger::Retry;
        } else {
            assert_eq!(
                t.history.as_ref().map(|h| h.outcome),
                Some(Outcome::Abandoned)
            );
            assert!(matches!(s.phase, Phase::Stuck { .. }), "{:?}", s.phase);
        }
    }
    // Backoff grows (30 s base, jitter within [b/2, b]).
    assert!(retries[0] >= TimeDelta::seconds(15) && retries[0] <= TimeDelta::seconds(30));
    assert!(retries[1] >= TimeDelta::seconds(30) && retries[1] <= TimeDelta::seconds(60));
    // Stuck ignores timers; an operator's rotate starts afresh.
    assert_eq!(r.step(&s, Event::Timer, now).unwrap().state, s);
    let t = r
        .step(
            &s,
            Event::Rotate {
                trigger: Trigger::Manual,
            },
            now,
        )
        .unwrap();
    assert_eq!(t.state.attempts, 0);
    assert!(matches!(t.state.phase, Phase::Generating(_)));
}

#[test]
fn resume_reissues_the_step_in_flight_and_ignores_stale_results() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let t = r
        .step(
            &t.state,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Generate,
            },
            t0(),
        )
        .unwrap();
    let staged = t.state;
    let resumed = r.step(&staged, Event::Resume, t0()).unwrap();
    assert_eq!(resumed.state, staged);
    assert_eq!(
        resumed.effects,
        vec![Effect::Apply {
            rotation: RotationId(2),
            version: 2
        }]
    );
    // Resuming twice is the same as once.
    assert_eq!(
        r.step(&resumed.state, Event::Resume, t0()).unwrap(),
        resumed
    );
    // A duplicate Generate result does not advance the machine.
    let dup = r
        .step(
            &staged,
            Event::StepDone {
                rotation: RotationId(2),
                step: Step::Generate,
            },
            t0(),
        )
        .unwrap();
    assert_eq!(dup.state, staged);
    assert!(dup.effects.is_empty());
}

#[test]
fn consumer_gate_extends_grace_until_the_mount_shows_the_new_version() {
    let r = rules(ExpiryGate::GraceAndConsumers {
        max_extension: TimeDelta::hours(1),
    });
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let s = settle(&r, t.state.clone(), t, t0());
    let end = t0() + TimeDelta::minutes(10);
    let t = r.step(&s, Event::Timer, end).unwrap();
    assert!(matches!(t.state.phase, Phase::Grace { extended: true, .. }));
    assert_eq!(
        labels(&t.state),
        vec![(2, Label::Current), (1, Label::Previous)]
    );
    // The mount shows v2: expire now.
    let t = r
        .step(
            &t.state,
            Event::ConsumerSaw { version: 2 },
            end + TimeDelta::minutes(1),
        )
        .unwrap();
    assert!(matches!(t.state.phase, Phase::Expired { previous: 1, .. }));
}

#[test]
fn consumer_gate_expires_anyway_after_the_maximum_extension() {
    let r = rules(ExpiryGate::GraceAndConsumers {
        max_extension: TimeDelta::hours(1),
    });
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let s = settle(&r, t.state.clone(), t, t0());
    let end = t0() + TimeDelta::minutes(10);
    let s = r.step(&s, Event::Timer, end).unwrap().state;
    let t = r.step(&s, Event::Timer, end + TimeDelta::hours(1)).unwrap();
    assert!(matches!(t.state.phase, Phase::Expired { .. }));
    assert!(t.effects.iter().any(|e| matches!(
        e,
        Effect::Notify {
            notice: Notice::Expired { forced: true, .. },
            ..
        }
    )));
}

#[test]
fn revoke_failures_retry_in_place_then_stick_without_touching_current() {
    let r = rules(ExpiryGate::Grace);
    let s = first_version(&r);
    let t = rotate_by_api(&r, &s);
    let s = settle(&r, t.state.clone(), t, t0());
    let mut now = t0() + TimeDelta::minutes(10);
    let mut s = r.step(&s, Event::Timer, now).unwrap().state;
    for i in 1..=3 {
        let t = r
            .step(
                &s,
                Event::StepFailed {
                    rotation: RotationId(2),
                    step: Step::Expire,
                    error: ErrorKind::Revoke,
                },
                now,
            )
            .unwrap();
        assert_eq!(t.state.current, Some(2));
        s = t.state;
        if i < 3 {
            let at = s.phase.run().unwrap().retry_at.expect("retry armed");
            now = at;
            let t = r.step(&s, Event::Timer, now).unwrap();
            assert!(t.effects.contains(&Effect::Revoke {
                rotation: RotationId(2),
                version: 1,
                step: Step::Expire
            }));
            s = t.state;
        } else {
            assert!(matches!(
                s.phase,
                Phase::Stuck {
                    reason: ErrorKind::Revoke,
                    ..
                }
            ));
        }
    }
}

// ---- properties over random event sequences ----------------------------------------

#[derive(Debug, Clone)]
enum Action {
    /// Advance the clock by this many seconds and fire the timer if it is due.
    Advance(u32),
    Rotate,
    Rollback,
    /// Answer the pending step effect: true = success.
    Answer(bool),
    /// The process dies and restarts: pending effects are lost, Resume is sent.
    Crash,
    /// The process dies after the machine took its next step (the answer to the pending
    /// step, else the timer, else a rotate) but before the store saved it: that transition
    /// and its effects are lost, the last saved state is reloaded and resumed.
    CrashBeforeSave(bool),
    ConsumerSaw,
    /// A timer message that arrives early (a stale timer from before a re-arm).
    SpuriousTimer,
    /// An emergency rotation job's rotate: true = `expirePrevious`.
    JobRotate(bool),
    /// An emergency rotation job ends the grace now.
    ExpireNow,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (1u32..4000).prop_map(Action::Advance),
        3 => (1u32..120).prop_map(Action::Advance),
        1 => Just(Action::Rotate),
        1 => Just(Action::Rollback),
        6 => proptest::bool::weighted(0.85).prop_map(Action::Answer),
        1 => Just(Action::Crash),
        1 => proptest::bool::weighted(0.85).prop_map(Action::CrashBeforeSave),
        1 => Just(Action::ConsumerSaw),
        1 => Just(Action::SpuriousTimer),
        1 => any::<bool>().prop_map(Action::JobRotate),
        1 => Just(Action::ExpireNow),
    ]
}

fn check_invariants(before: &SecretState, t: &Transition, ev: &Event, now: DateTime<Utc>) {
    let after = &t.state;
    let ls = labels(after);
    // Exactly one current once one exists, and it never goes away.
    if before.current.is_some() {
        assert!(after.current.is_some(), "current vanished on {ev:?}");
    }
    let currents = ls.iter().filter(|(_, l)| *l == Label::Current).count();
    assert_eq!(currents, usize::from(after.current.is_some()));
    // Labels name distinct versions.
    let mut vs: Vec<_> = ls.iter().map(|(v, _)| *v).collect();
    vs.sort();
    vs.dedup();
    assert_eq!(vs.len(), ls.len(), "two labels on one version: {ls:?}");
    // Previous exists only during grace.
    let has_prev = ls.iter().any(|(_, l)| *l == Label::Previous);
    assert_eq!(has_prev, matches!(after.phase, Phase::Grace { .. }));
    // Current changes only by a promotion or a rollback.
    if before.current != after.current {
        match ev {
            Event::StepDone {
                step: Step::Promote,
                ..
            } => assert_eq!(after.current, before.phase.run().map(|r| r.pending)),
            Event::Rollback => {
                let Phase::Grace { previous, .. } = &before.phase else {
                    panic!("rollback outside grace changed current")
                };
                assert_eq!(after.current, Some(*previous));
                assert!(t.effects.iter().any(|e| matches!(e,
                    Effect::Restore { revoke, .. } if Some(*revoke) == before.current)));
            }
            other => panic!("current changed on {other:?}"),
        }
    }
    // The previous version stays valid until its expiry (or a rollback).
    if let Phase::Grace { expires_at, .. } = &before.phase
        && !matches!(after.phase, Phase::Grace { .. })
    {
        match ev {
            Event::Timer => assert!(now >= *expires_at, "expired early"),
            Event::Rollback | Event::ConsumerSaw { .. } | Event::ExpireNow => {}
            other => panic!("left grace on {other:?}"),
        }
    }
    // Version numbers never go back; the budget bounds attempts.
    assert!(after.latest_version >= before.latest_version);
    assert!(after.attempts <= 3);
    // Every effect carries the rotation it belongs to.
    if let Some(run) = after.phase.run() {
        for e in &t.effects {
            if step_of(e).is_some() {
                assert_eq!(e.rotation(), run.rotation);
            }
        }
    }
    // The transition names the attempt it concerns: the one in flight, the one it
    // finished, and the one its notices are about.
    assert_eq!(t.rotation, RotationId(after.rotations_started));
    if let Some(run) = after.phase.run() {
        assert_eq!(t.rotation, run.rotation, "on {ev:?}");
    }
    for e in &t.effects {
        if let Effect::Notify { rotation, .. } = e {
            assert_eq!(*rotation, t.rotation, "notice of another attempt on {ev:?}");
        }
    }
    // A finished attempt's outcome is the history record's, except that a success after a
    // previous version was counted at its promotion already, and a rollback whose revoke
    // was given up on counts as abandoned.
    if let Some(record) = &t.history {
        assert_eq!(
            record.rotation, t.rotation,
            "history of another attempt on {ev:?}"
        );
        let expected = match record.outcome {
            Outcome::Succeeded if record.from_version.is_some() => None,
            Outcome::RolledBack if matches!(after.phase, Phase::Stuck { .. }) => {
                Some(Outcome::Abandoned)
            }
            other => Some(other),
        };
        assert_eq!(t.outcome, expected, "on {ev:?}");
    } else if let Some(outcome) = t.outcome {
        // The only result reached before the history record: a promotion into grace, or
        // straight into expiry for an attempt that expires its previous at promotion.
        assert_eq!(outcome, Outcome::Succeeded, "on {ev:?}");
        match &after.phase {
            Phase::Grace { run, .. } => assert!(!run.expire_previous_at_promotion),
            Phase::Expired { run, .. } => assert!(run.expire_previous_at_promotion),
            other => panic!("success counted in {other:?}"),
        }
    }
    // An attempt that ends has its history record in the same transition (the store writes
    // both in one commit), and a record is written only when an attempt ends; the record
    // says what the attempt was and what became of it.
    let ended = before
        .phase
        .run()
        .filter(|b| after.phase.run().map(|a| a.rotation) != Some(b.rotation));
    match (ended, &t.history) {
        (Some(run), Some(record)) => {
            assert_eq!(record.rotation, run.rotation, "on {ev:?}");
            assert_eq!(record.trigger, run.trigger, "on {ev:?}");
            assert_eq!(record.from_version, run.from, "on {ev:?}");
            assert_eq!(record.to_version, run.pending, "on {ev:?}");
            assert_eq!(record.started_at, run.started_at, "on {ev:?}");
            assert_eq!(record.finished_at, now, "on {ev:?}");
            assert!(
                record.steps.starts_with(&run.steps) && record.steps.len() <= run.steps.len() + 1,
                "record steps {:?}, attempt's {:?}, on {ev:?}",
                record.steps,
                run.steps
            );
            match record.outcome {
                Outcome::Succeeded => {
                    assert_eq!(after.current, Some(run.pending), "on {ev:?}");
                    assert_eq!(record.error, None, "on {ev:?}");
                }
                Outcome::Failed => {
                    assert_eq!(after.current, run.from, "a failure changed current");
                    assert!(record.error.is_some(), "a failure without its error");
                }
                Outcome::RolledBack => {
                    assert_eq!(after.current, run.from, "a rollback kept the new version");
                }
                Outcome::Abandoned => {
                    assert!(record.error.is_some(), "abandoned without its error");
                    assert!(after.current == run.from || after.current == Some(run.pending));
                }
            }
        }
        (Some(run), None) => panic!(
            "{} ended on {ev:?} ({} -> {}) without a history record",
            run.rotation,
            before.phase.name(),
            after.phase.name()
        ),
        (None, Some(record)) => {
            panic!("a history record {record:?} on {ev:?}, but no attempt ended")
        }
        (None, None) => {}
    }
    // The outcome is the one the notices announce, so metrics and notifications agree.
    let announced = t.effects.iter().find_map(|e| match e {
        Effect::Notify { notice, .. } => match notice {
            Notice::Succeeded { .. } => Some(Outcome::Succeeded),
            Notice::Failed {
                retry_at: Some(_), ..
            } => Some(Outcome::Failed),
            Notice::RolledBack { .. } => Some(Outcome::RolledBack),
            Notice::Stuck { .. } => Some(Outcome::Abandoned),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(t.outcome, announced, "on {ev:?}");
}

/// The result of step `step` of `rotation`: done, or failed as a test fails.
fn answer(rotation: RotationId, step: Step, ok: bool) -> Event {
    if ok {
        Event::StepDone { rotation, step }
    } else {
        Event::StepFailed {
            rotation,
            step,
            error: ErrorKind::Test,
        }
    }
}

/// What the store holds in the model: the last saved state and every history record saved,
/// and what the process holds beside it (the armed timer, the step effect in flight).
struct Model<'a> {
    r: Rules<'a>,
    state: SecretState,
    history: Vec<HistoryRecord>,
    timer: Option<DateTime<Utc>>,
    pending: Option<(RotationId, Step)>,
}

impl Model<'_> {
    /// One step of the machine, checked, then saved with its history record as one commit
    /// and its effects carried out. A rejected request (409) leaves the state as it was.
    fn commit(&mut self, ev: Event, now: DateTime<Utc>) -> Option<Transition> {
        let t = self.r.step(&self.state, ev.clone(), now).ok()?;
        check_invariants(&self.state, &t, &ev, now);
        if let Some(record) = &t.history {
            assert!(
                self.history.iter().all(|h| h.rotation != record.rotation),
                "{} recorded twice, again on {ev:?}",
                record.rotation
            );
            self.history.push(record.clone());
        }
        for e in &t.effects {
            match e {
                Effect::ArmTimer { at, .. } => self.timer = Some(*at),
                Effect::CancelTimer { .. } => self.timer = None,
                other => {
                    if let Some(p) = step_of(other) {
                        self.pending = Some(p);
                    }
                }
            }
        }
        self.state = t.state.clone();
        Some(t)
    }

    /// The process dies: only the saved state (round-tripped through JSON, as the journal
    /// is) and the history survive, and the machine resumes. An attempt that was saved in
    /// flight continues (same id, same pending version, its step re-issued or its timer
    /// re-armed, nothing recorded); none is started or dropped.
    fn crash(&mut self, now: DateTime<Utc>) {
        let bytes = serde_json::to_vec(&self.state).unwrap();
        self.state = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            serde_json::to_vec(&self.state).unwrap(),
            bytes,
            "the journal round-trips"
        );
        let saved = self.state.clone();
        self.timer = None;
        self.pending = None;
        let t = self
            .commit(Event::Resume, now)
            .expect("resume is never rejected");
        assert!(t.history.is_none(), "resume recorded {:?}", t.history);
        let before = saved.phase.run().map(|r| (r.rotation, r.pending));
        let after = t.state.phase.run().map(|r| (r.rotation, r.pending));
        assert_eq!(after, before, "resume changed the attempt in flight");
        if let Some(step) = saved.phase.awaited_step() {
            let run = saved.phase.run().map(|r| r.rotation);
            assert!(
                self.pending == run.map(|r| (r, step)) || self.timer.is_some(),
                "resume in {} neither re-issued {step:?} nor armed a retry",
                saved.phase.name()
            );
        }
    }

    /// Every attempt started is in the history exactly once, except the one in flight.
    fn check_history(&self) {
        let mut ids: Vec<u64> = self.history.iter().map(|h| h.rotation.0).collect();
        ids.sort_unstable();
        let in_flight = self.state.phase.run().map(|r| r.rotation.0);
        let expected: Vec<u64> = (1..=self.state.rotations_started)
            .filter(|id| Some(*id) != in_flight)
            .collect();
        assert_eq!(ids, expected, "history in {}", self.state.phase.name());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_over_random_histories(
        actions in proptest::collection::vec(action(), 1..200),
        gated in any::<bool>(),
    ) {
        let gate = if gated {
            ExpiryGate::GraceAndConsumers { max_extension: TimeDelta::minutes(30) }
        } else {
            ExpiryGate::Grace
        };
        let mut m = Model {
            r: rules(gate),
            state: SecretState::default(),
            history: Vec::new(),
            timer: None,
            pending: None,
        };
        let mut now = t0();
        m.commit(Event::Resume, now);
        for a in actions {
            match a {
                Action::Advance(secs) => {
                    now += TimeDelta::seconds(i64::from(secs));
                    if m.timer.is_some_and(|at| at <= now) {
                        m.timer = None;
                        m.commit(Event::Timer, now);
                    }
                }
                Action::SpuriousTimer => {
                    m.commit(Event::Timer, now);
                }
                Action::Rotate => {
                    m.commit(Event::Rotate { trigger: Trigger::Api }, now);
                }
                Action::Rollback => {
                    m.commit(Event::Rollback, now);
                }
                Action::JobRotate(expire_previous) => {
                    m.commit(
                        Event::JobRotate { job: "j1".into(), expire_previous },
                        now,
                    );
                }
                Action::ExpireNow => {
                    m.commit(Event::ExpireNow, now);
                }
                Action::ConsumerSaw => {
                    if let Some(v) = m.state.current {
                        m.commit(Event::ConsumerSaw { version: v }, now);
                    }
                }
                Action::Answer(ok) => {
                    if let Some((rotation, step)) = m.pending.take() {
                        m.commit(answer(rotation, step, ok), now);
                    }
                }
                Action::Crash => m.crash(now),
                Action::CrashBeforeSave(ok) => {
                    let ev = match m.pending {
                        Some((rotation, step)) => answer(rotation, step, ok),
                        None if m.timer.is_some_and(|at| at <= now) => Event::Timer,
                        None => Event::Rotate { trigger: Trigger::Api },
                    };
                    // The machine's answer is checked as always; it never reaches the store.
                    if let Ok(t) = m.r.step(&m.state, ev.clone(), now) {
                        check_invariants(&m.state, &t, &ev, now);
                    }
                    m.crash(now);
                }
            }
            m.check_history();
            // Something always drives the machine forward: a step, a timer, or Stuck/manual.
            let driven = m.pending.is_some() || m.timer.is_some()
                || matches!(m.state.phase, Phase::Stuck { .. } | Phase::Idle { next_due: None, .. });
            prop_assert!(driven, "machine wedged in {:?}", m.state.phase);
        }
    }

    #[test]
    fn an_always_failing_target_ends_stuck_within_the_budget(fail_at in 0usize..4) {
        let r = rules(ExpiryGate::Grace);
        let mut now = t0();
        let mut s = first_version(&r);
        let mut started = 0;
        for _ in 0..50 {
            if matches!(s.phase, Phase::Stuck { .. }) { break; }
            let t = if let Phase::Idle { next_due: Some(at), .. } = s.phase {
                now = now.max(at);
                r.step(&s, Event::Timer, now).unwrap()
            } else {
                r.step(&s, Event::Resume, now).unwrap()
            };
            if matches!(t.state.phase, Phase::Generating(_)) { started += 1; }
            s = t.state;
            let mut effects = t.effects;
            let mut n = 0;
            while let Some((rotation, step)) = effects.iter().find_map(step_of) {
                let ev = if n == fail_at && step != Step::Rollback {
                    Event::StepFailed { rotation, step, error: ErrorKind::Apply }
                } else {
                    Event::StepDone { rotation, step }
                };
                n += 1;
                let t = r.step(&s, ev, now).unwrap();
                effects = t.effects;
                s = t.state;
            }
        }
        prop_assert!(matches!(s.phase, Phase::Stuck { .. }), "{:?}", s.phase);
        prop_assert_eq!(started, 3);
        prop_assert_eq!(s.current, Some(1));
    }
}
