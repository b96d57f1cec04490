//! Helpers shared by integration tests.
#![allow(dead_code)] // each test binary uses a different subset
pub mod http;
pub mod kubelet;
pub mod receiver;
pub mod redis_server;
pub mod rotor_bin;
pub mod store_contract;
pub mod targets;
pub mod tls;
