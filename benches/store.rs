//! Store benchmarks.
//!
//! - `store/rotation`: durable rotations per second. One iteration is one rotation's worth
//!   of writes against a real redb file in a temporary directory (so on the real disk
//!   under `$TMPDIR`, with fsync on every commit): `put_version`, then five commits
//!   (stage, applied, tested, promote into grace, expire with a history record). The
//!   reported element rate is rotations per second.
//! - `store/rotation_16_writers`: the same, with 16 writers each rotating a secret of its
//!   own at once (as 16 rotation actors do under `max_concurrent_rotations = 16`): one
//!   iteration is one rotation by each writer, so the element rate is rotations per second
//!   over all of them. Group commit lets concurrent writers share fsyncs; compare with
//!   `store/rotation`.
//! - `crypto/seal_open_64b`: sealing and opening a 64-byte value, the CPU cost of the
//!   encryption that every `put_version` and `read_value` pays.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotor::domain::{SecretRef, VersionNo};
use rotor::generator::SecretValue;
use rotor::store::crypto::MasterKey;
use rotor::store::embedded::EmbeddedStore;

#[path = "common/rotation_writes.rs"]
mod rotation_writes;

fn rotation(c: &mut Criterion) {
    // The store is async; its writes run on the runtime's blocking threads.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(
        &dir.path().join("bench.redb"),
        &dir.path().join("master.key"),
    )
    .expect("open store");
    let secret = SecretRef::new("tenant1", "database_credentials").expect("valid ref");
    let value = SecretValue::from_bytes(vec![b'x'; 32]);
    // The journal the rotation actor persists is a small serialised state; 200 bytes is
    // a generous stand-in.
    let journal = vec![0u8; 200];
    let mut current: VersionNo = 0;

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rotation", |b| {
        b.iter(|| {
            current = rt.block_on(rotation_writes::rotate(
                &store, &secret, &value, &journal, current,
            ))
        });
    });

    const WRITERS: usize = 16;
    let secrets: Vec<SecretRef> = (0..WRITERS)
        .map(|i| SecretRef::new(&format!("tenant{i}"), "api_keys").expect("valid ref"))
        .collect();
    let mut currents: Vec<VersionNo> = vec![0; WRITERS];
    group.throughput(Throughput::Elements(WRITERS as u64));
    group.bench_function("rotation_16_writers", |b| {
        b.iter(|| {
            rt.block_on(futures::future::join_all(
                secrets
                    .iter()
                    .zip(currents.iter_mut())
                    .map(|(secret, current)| {
                        let (store, value, journal) = (&store, &value, &journal);
                        async move {
                            *current =
                                rotation_writes::rotate(store, secret, value, journal, *current)
                                    .await;
                        }
                    }),
            ))
        });
    });
    group.finish();
}

fn seal_open(c: &mut Criterion) {
    let key = MasterKey::from_bytes(&[42u8; 32]);
    let secret = SecretRef::new("tenant1", "api_keys").expect("valid ref");
    let value = [7u8; 64];
    let mut group = c.benchmark_group("crypto");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal_open_64b", |b| {
        b.iter(|| {
            let sealed = key.seal(&secret, 3, black_box(&value)).expect("seal");
            let opened = key.open(&secret, 3, black_box(&sealed)).expect("open");
            black_box(opened.len())
        });
    });
    group.finish();
}

criterion_group!(benches, rotation, seal_open);
criterion_main!(benches);
