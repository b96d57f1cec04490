//! Publishing: rotor writes the current version of chosen secrets somewhere a workload
//! reads them: a directory, written the way kubelet updates a secret volume
//! (`[[publish]]`, `type = "directory"`, the default), or a *view*, which only ever holds
//! promoted values: a Vault KV document ([`vault`], `type = "vault"`) or an AWS Secrets
//! Manager secret ([`aws`], `type = "aws"`). [`view`] holds what the view types share;
//! [`config`] holds the `[[publish]]` keys and checks. The publisher actors that run each
//! destination are [`crate::actors::publisher`] and [`crate::actors::publisher::view`].

pub mod aws;
pub mod config;
pub mod vault;
pub mod view;
