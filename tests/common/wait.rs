//! The one way to wait in a test lives in the library ([`rotor::testing`], with the
//! `test-util` feature), so unit tests and these integration tests share it.

pub use rotor::testing::{eventually, eventually_blocking, eventually_every};
