//! Helpers shared by the integration tests (declared once, in `tests/tests.rs`).
pub mod ci;
pub mod csi;
pub mod embedded;
pub mod faults;
pub mod http;
pub mod kubelet;
pub mod moto;
pub mod openbao;
pub mod pg_consumer;
pub mod postgres;
pub mod receiver;
pub mod redis_server;
pub mod rotor_bin;
pub mod store_contract;
pub mod targets;
pub mod tls;
pub mod wait;
