//! Vault store benchmark, against the in-repo fake Vault (so the figure measures rotor's
//! side plus local HTTP, not a real Vault's storage backend and its fsyncs).
//!
//! - `vault/rotation`: rotations per second. One iteration is one rotation's worth of
//!   store writes, the same as `benches/store.rs`: `put_version`, then five commits
//!   (stage, applied, tested, promote into grace, expire with a history record). Each is
//!   a read and a check-and-set write over HTTP, plus the label mirror when labels change:
//!   about 16 requests per rotation.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotor::domain::{SecretRef, VersionNo};
use rotor::generator::SecretValue;
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::store::vault_fake::VaultFake;

#[path = "common/rotation_writes.rs"]
mod rotation_writes;

fn rotation(c: &mut Criterion) {
    let fake = VaultFake::start("secret", "bench-root").expect("fake vault");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "bench-root").expect("token");
    // One runtime for the whole run: the store's HTTP connections belong to it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(VaultStore::open(VaultSettings {
            address: fake.address(),
            other_addresses: Vec::new(),
            mount: "secret".into(),
            path_prefix: "bench/tenants".into(),
            namespace: None,
            ca_file: None,
            master_key_file: dir.path().join("master.key"),
            timeout: std::time::Duration::from_secs(5),
            max_attempts: 3,
            retry_backoff: std::time::Duration::from_millis(10),
            auth: VaultAuth::Token { token_file },
            proxy: None,
            allow_insecure_http: false,
        }))
        .expect("open store");
    let secret = SecretRef::new("tenant1", "database_credentials").expect("valid ref");
    let value = SecretValue::from_bytes(vec![b'x'; 32]);
    let journal = vec![0u8; 200];
    let mut current: VersionNo = 0;

    let mut group = c.benchmark_group("vault");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("rotation", |b| {
        b.iter(|| {
            current = rt.block_on(rotation_writes::rotate(
                &store, &secret, &value, &journal, current,
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, rotation);
criterion_main!(benches);
