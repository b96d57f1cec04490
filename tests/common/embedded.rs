//! For the actor tree in-process: a config whose embedded store lives in the test's
//! directory, that store opened, the policy most tree tests rotate under, and the admin API
//! over the tree.

use std::path::Path;
use std::sync::Arc;

use rotor::actors::admin::ActorAdmin;
use rotor::actors::tree::Tree;
use rotor::config::Config;
use rotor::store::embedded::EmbeddedStore;

/// Policy `fast` (hourly, ten minutes of grace, three attempts) and `tenant1/api_keys`
/// under it.
pub const FAST_API_KEYS: &str = r#"
[policies.fast]
interval = "1h"
grace = "10m"
generator = { type = "token", bytes = 32 }
max_attempts = 3

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "fast"
"#;

/// `rest` (runtime settings, policies, secrets, mounts) after an embedded `[store]` in
/// `dir` (see [`open_store`]), parsed as a config.
pub fn tree_config(dir: &Path, rest: &str) -> Config {
    let text = format!(
        r#"
[store]
type = "embedded"
path = "{dir}/rotor.redb"
master_key_file = "{dir}/master.key"
{rest}"#,
        dir = dir.display()
    );
    Config::from_str_with_env(&text, "test.toml", &|_| None).expect("valid config")
}

/// The embedded store that [`tree_config`] names, opened (and created on first use).
pub fn open_store(dir: &Path) -> Arc<EmbeddedStore> {
    Arc::new(EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap())
}

/// The admin API over a started tree, as `rotor run` builds it.
pub fn admin(tree: &Tree) -> ActorAdmin {
    ActorAdmin {
        context: tree.context.clone(),
        secrets: tree.secrets.clone(),
        ready: tree.ready_flag(),
    }
}
