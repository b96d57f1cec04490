//! Cost of one state-machine step, and of a whole rotation's worth of steps.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rotor::domain::{RotationId, Step, Trigger};
use rotor::machine::{Event, ExpiryGate, Rules, SecretState};
use std::hint::black_box;

fn due(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(last.map_or(now, |l| (l + TimeDelta::days(30)).max(now)))
}

fn bench(c: &mut Criterion) {
    let rules = Rules {
        grace: TimeDelta::hours(2),
        max_attempts: 5,
        retry_backoff: TimeDelta::seconds(30),
        retry_backoff_max: TimeDelta::hours(1),
        expiry_gate: ExpiryGate::Grace,
        jitter_seed: 1,
        next_due: &due,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
    let s = SecretState {
        current: Some(1),
        latest_version: 1,
        rotations_started: 1,
        ..SecretState::default()
    };
    let generating = rules
        .step(
            &s,
            Event::Rotate {
                trigger: Trigger::Api,
            },
            now,
        )
        .unwrap()
        .state;
    c.bench_function("machine/step (generate done)", |b| {
        b.iter(|| {
            rules.step(
                black_box(&generating),
                Event::StepDone {
                    rotation: RotationId(2),
                    step: Step::Generate,
                },
                now,
            )
        })
    });
    c.bench_function("machine/full rotation (7 steps)", |b| {
        b.iter(|| {
            let mut st = rules
                .step(
                    black_box(&s),
                    Event::Rotate {
                        trigger: Trigger::Api,
                    },
                    now,
                )
                .unwrap()
                .state;
            for step in [Step::Generate, Step::Apply, Step::Test, Step::Promote] {
                st = rules
                    .step(
                        &st,
                        Event::StepDone {
                            rotation: RotationId(2),
                            step,
                        },
                        now,
                    )
                    .unwrap()
                    .state;
            }
            st = rules
                .step(&st, Event::Timer, now + TimeDelta::hours(3))
                .unwrap()
                .state;
            rules
                .step(
                    &st,
                    Event::StepDone {
                        rotation: RotationId(2),
                        step: Step::Expire,
                    },
                    now,
                )
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
