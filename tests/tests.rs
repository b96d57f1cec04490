//! rotor's integration tests, compiled as one test binary (`cargo test --test tests`): one
//! link of the dependency tree instead of one per file. This file is the index: each topic
//! is a module whose file lives in `tests/suite/`, and the helpers they share live in
//! `tests/common/`. A new topic is a file in `tests/suite/` and a line here; a filter
//! selects one topic (`cargo test --test tests runtime::`).
//!
//! The topics share one process, so none of them may change process-wide state another
//! could see (environment variables, the current directory, the panic hook, a global
//! tracing subscriber outside a capture, unnamespaced actor names in ractor's registry):
//! the actor trees each get a namespace of their own (`TreeOptions::namespace`).

// Helpers shared by the topics: HTTP client, rotor binary, receivers, store contract, TLS.
mod common;

// `rotor agent`, the real binary, against a stand-in for rotor's consumer routes (reports,
// reload permits, rotor down and back, bad configs, the consumer id's defaults) and once
// against the real rotor following a rotation.
#[path = "suite/agent.rs"]
mod agent;
// The admin HTTP API over real loopback HTTP, against a fake backend.
#[path = "suite/api.rs"]
mod api;
// Consumers (agents' reports) gating expiry, reload permits, and their routes over HTTP.
#[path = "suite/consumers.rs"]
mod consumers;
// Structural checks of the Kubernetes manifests in `deploy/`.
#[path = "suite/deploy.rs"]
mod deploy;
// The bulk path of a first start: the actor path's end state, crash and resume in whole
// batches, the pending gauge, the trait's default write.
#[path = "suite/first_start.rs"]
mod first_start;
// A fleet of pods on the real parts (OpenBao store and view, a CSI stand-in, PostgreSQL
// consumers behind `rotor agent` processes): no failed login over rotations, frozen and
// killed agents, the per-workload reload budget, promotion-to-acknowledgement figures.
#[path = "suite/fleet.rs"]
mod fleet;
// High availability, the follower's side: writes forwarded to the leader and answered as
// it answers, reads from the store, no leader, loop protection, the forwarding overhead.
#[path = "suite/ha_follow.rs"]
mod ha_follow;
// High availability: the lease election on paused time and on Vault (fake, OpenBao), store
// fencing by term, three real `rotor run` replicas on OpenBao (kill -9, a frozen leader).
#[path = "suite/ha.rs"]
mod ha;
// Emergency rotation jobs (rotate-all): rate, concurrency, cancel, resume, grace, routes, CLI.
#[path = "suite/jobs.rs"]
mod jobs;
// The real `rotor` binary end to end, including `kill -9` in the middle of rotations.
#[path = "suite/e2e.rs"]
mod e2e;
// The fault matrix: each fault (PostgreSQL, Redis, store, receivers, mounts, clock) with
// its retries, metrics and recovery by itself; the table is `tests/suite/FAULTS.md`.
#[path = "suite/faults.rs"]
mod faults;
// Targets that forget their state (Redis without its aclfile, a PostgreSQL restore):
// verify_interval, verify errors, re-applying the current version.
#[path = "suite/faults_targets.rs"]
mod faults_targets;
// Vault faults on a real OpenBao (sealed, 403, CAS conflicts, restart) and `kill -9` of rotor
// with a Vault store and view, against a reader polling the view.
#[path = "suite/faults_vault.rs"]
mod faults_vault;
// Property-based fuzzing of the input decoders: config, admin API, mount scanner
// (`ROTOR_FUZZ_CASES` sets the case count; `scripts/fuzz.sh` runs it long).
#[path = "suite/fuzz.rs"]
mod fuzz;
// The rotation state machine without actors or I/O: tables and proptest properties.
#[path = "suite/machine.rs"]
mod machine;
// `deploy/monitoring` (alert rules, dashboard) against a running rotor and promtool.
#[path = "suite/monitoring.rs"]
mod monitoring;
// Network edges: proxies (environment ignored, `proxy` keys, loopback bypass), plain http to
// Vault, and the admin server's timeouts, connection cap and oversized headers.
#[path = "suite/network.rs"]
mod network;
// Notification channels against a real local HTTP receiver.
#[path = "suite/notify.rs"]
mod notify;
// A real Prometheus scraping a real rotor: an alert fires and clears.
#[path = "suite/prometheus.rs"]
mod prometheus;
// The supervision tree and rotation actors in-process, on paused tokio time.
#[path = "suite/runtime.rs"]
mod runtime;
// The embedded store: the shared `Store` contract, encryption at rest, crash safety.
#[path = "suite/store.rs"]
mod store;
// AWS Secrets Manager on a private moto server (the helper the AWS store's tests use).
#[path = "suite/store_aws.rs"]
mod store_aws;
// The Vault store against a private OpenBao and against the in-repo fake.
#[path = "suite/store_vault.rs"]
mod store_vault;
// The `exec` and `webhook` targets and the secret cache.
#[path = "suite/target_hooks.rs"]
mod target_hooks;
// The `jwks` target and the JWKS route of a running rotor.
#[path = "suite/target_jwks.rs"]
mod target_jwks;
// The `postgres` target against the machine's PostgreSQL.
#[path = "suite/target_postgres.rs"]
mod target_postgres;
// The `redis` target against the machine's Redis and a private `redis-server`.
#[path = "suite/target_redis.rs"]
mod target_redis;
// The Vault store on a 3-node OpenBao raft cluster: the active node killed mid-rotation,
// rotor carries on through another node and loses nothing.
#[path = "suite/vault_cluster.rs"]
mod vault_cluster;
// Vault KV views (`[[publish]] type = "vault"`) over the Vault store, on a private OpenBao.
#[path = "suite/views.rs"]
mod views;
// AWS Secrets Manager views (`[[publish]] type = "aws"`) on a private moto server.
#[path = "suite/views_aws.rs"]
mod views_aws;
// The volume watcher on real directories and real inotify.
#[path = "suite/watch.rs"]
mod watch;
// Rotate, publish, watch, reload and expire in one process, in real time.
#[path = "suite/watch_loop.rs"]
mod watch_loop;
