//! Publishing: rotor writes the current version of chosen secrets somewhere a workload
//! reads them: a directory, written the way kubelet updates a secret volume
//! (`[[publish]]`, `type = "directory"`, the default), or a Vault KV document, a *view*
//! ([`vault`], `type = "vault"`), which only ever holds promoted values. [`config`] holds
//! the `[[publish]]` keys and checks. The publisher actors that run each destination are
//! [`crate::actors::publisher`] and [`crate::actors::publisher::view`].

pub mod config;
pub mod vault;
