//! Publishing: rotor writes the current version of chosen secrets somewhere a workload
//! reads them. Today the only destination is a directory, written the way kubelet updates
//! a secret volume; [`config`] holds its `[[publish]]` keys and checks. The publisher actor
//! that runs each destination is [`crate::actors::publisher`].

pub mod config;
