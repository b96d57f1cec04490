//! Configuration: TOML policy files, parsed in two stages, every error reported at once.
//!
//! 1. [`schema`] walks the spanned TOML document and reports unknown keys and values of the
//!    wrong type, all of them (serde alone stops at the first), removing each so the rest
//!    can still be checked;
//! 2. what remains deserializes into the raw structs of [`raw`] (every field optional and
//!    spanned), and [`validate`] checks meanings and cross-field rules into the
//!    [`model`], merging the [`builtin`] policies;
//! 3. [`env`] overrides from the environment are checked alongside and applied last.
//!
//! Before stage one, [`fast`] takes the `[[secrets]]` entries written in the simple form
//! out of the text (a million of them would be gigabytes as a TOML tree); stage two reads
//! them from the text through the same checks, with the same messages.
//!
//! A document with an `[agent]` table is the other kind, the configuration of `rotor
//! agent` ([`agent`]): it shares the `[[mounts]]` and `[watch]` checks and has none of the
//! rest. [`load_any`] tells the two apart (what `rotor check` uses).
//!
//! Only this module and the integrations' `config` modules (the keys of a target, store,
//! notifier channel, reload action or publish destination, beside it) know TOML:
//! everything else reads [`Config`].
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! [policies.api_keys]            # overrides only the keys it names
//! interval = "30d"
//! grace = "2h"
//! [[secrets]]
//! tenant = "tenant1"
//! key = "api_keys"
//! policy = "api_keys"
//! ```

pub mod agent;
mod builtin;
mod check;
mod env;
mod error;
mod fast;
mod model;
mod policy;
mod raw;
mod schema;
mod sets;
mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use agent::{AgentConfig, AgentSettings};
pub(crate) use check::{SecretMention, Validator, join};
pub use env::{
    ADVERTISE_URL as ENV_ADVERTISE_URL, MOUNT_PATH as ENV_MOUNT_PATH,
    POLL_INTERVAL as ENV_POLL_INTERVAL, WATCH_ENABLED as ENV_WATCH_ENABLED,
};
pub use error::{ConfigError, ConfigErrors, Location};
pub use model::{
    CacheConfig, Config, ConsumersConfig, ExpireAfter, HaConfig, MetricsConfig, MountConfig,
    Policy, RuntimeConfig, SecretConfig, ServerConfig, StoreConfig, WatchConfig,
};
pub(crate) use schema::{Field, Ty, f};

use error::Diagnostics;

/// A configuration file of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyConfig {
    /// `rotor run`'s. Boxed, as is the agent's: both are large next to the tag.
    Service(Box<Config>),
    /// `rotor agent`'s (the file has an `[agent]` table).
    Agent(Box<AgentConfig>),
}

/// Loads and validates `path` as whichever kind it is: an agent configuration when it has
/// an `[agent]` table, `rotor run`'s otherwise (with overrides from the environment).
pub fn load_any(path: &Path) -> Result<AnyConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = read_text(path)?;
    if agent::is_agent_document(&text) {
        AgentConfig::from_str(&text, &origin).map(|c| AnyConfig::Agent(Box::new(c)))
    } else {
        drop(text);
        Config::load(path).map(|c| AnyConfig::Service(Box::new(c)))
    }
}

/// The text of a configuration file, or the one error saying why it cannot be read.
fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        origin: path.display().to_string(),
        errors: vec![ConfigError {
            location: None,
            key: "file".to_owned(),
            message: format!("cannot read the configuration file: {e}"),
            got: None,
        }],
    })
}

impl AgentConfig {
    /// Loads and validates the agent configuration at `path`. A file without an `[agent]`
    /// table is refused with a message saying so.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigErrors> {
        let origin = path.display().to_string();
        let text = read_text(path)?;
        if !agent::is_agent_document(&text) {
            let mut diag = Diagnostics::new(&text);
            diag.at(
                None,
                agent::AGENT_TABLE,
                "missing table [agent]: this is not a `rotor agent` configuration (a `rotor \
                 run` file is started with `rotor run`)",
            );
            return Err(diag.finish(&origin));
        }
        AgentConfig::from_str(&text, &origin)
    }
}

impl Config {
    /// Loads and validates `path`, with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Loads and validates `path`, looking environment overrides up through `env`.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = read_text(path)?;
        // A relative `tenants_file` is read beside the configuration file.
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let config = Config::from_str_in(&text, &origin, base_dir, env);
        // The document, its spans and the raw tables are gone: give their pages back.
        drop(text);
        release_freed_memory();
        config
    }

    /// Validates configuration text; `origin` names it in messages (usually the file name).
    /// A relative `tenants_file` is read from the working directory.
    pub fn from_str_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::from_str_in(text, origin, Path::new(""), env)
    }

    /// Validates configuration text whose relative `tenants_file` paths are read from
    /// `base_dir` (the configuration file's directory).
    ///
    /// `[[secrets]]` entries written in the simple form are read by a scanner ([`fast`])
    /// and the rest of the document by the TOML parser; the result, messages included,
    /// is the one [`Config::from_str_slow`] gives for the whole document.
    pub fn from_str_in(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        if let Some(split) = fast::split(text) {
            let (doc, syntax_errors) = DeTable::parse_recoverable(&split.residual.text);
            // A residual that does not parse: the whole document is checked the slow way,
            // so the syntax errors are the parser's on the document as written.
            if syntax_errors.is_empty() {
                let doc = split.residual.restore_spans(doc);
                let mut diag = Diagnostics::new(text);
                let overrides = env::read(env, &mut diag);
                return check(diag, doc, overrides, origin, base_dir, Some(&split));
            }
        }
        Config::from_str_slow(text, origin, base_dir, env)
    }

    /// [`Config::from_str_in`] without the scanner: the whole document goes through the
    /// TOML parser. Kept callable so that tests compare the two.
    pub(crate) fn from_str_slow(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut diag = Diagnostics::new(text);
        let overrides = env::read(env, &mut diag);

        let (doc, syntax_errors) = DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            // A document that does not parse has no reliable structure to check further.
            for e in syntax_errors {
                diag.at(e.span(), "syntax", e.message().to_owned());
            }
            return Err(diag.finish(origin));
        }
        check(diag, doc, overrides, origin, base_dir, None)
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&std::sync::Arc<Policy>> {
        self.policies.get(name)
    }
}

/// Checks a parsed document (the whole one, or the residual of a `split` with its spans
/// moved back to the document's) into the model.
fn check(
    mut diag: Diagnostics<'_>,
    mut doc: toml::Spanned<DeTable<'_>>,
    overrides: env::EnvOverrides,
    origin: &str,
    base_dir: &Path,
    split: Option<&fast::Split<'_>>,
) -> Result<Config, ConfigErrors> {
    // An `[agent]` table makes the file the sidecar's: say so instead of calling every
    // table unknown.
    if let Some((key, _)) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == agent::AGENT_TABLE)
    {
        diag.at(
            Some(key.span()),
            agent::AGENT_TABLE,
            "an [agent] table makes this a `rotor agent` configuration: start it with \
             `rotor agent -c FILE` (`rotor check` validates both kinds)",
        );
        return Err(diag.finish(origin));
    }
    let pruned = match split {
        None => schema::check_document(&mut diag, doc.get_mut()),
        Some(split) => schema::check_residual(&mut diag, doc.get_mut(), &split.residual_indices()),
    };
    let raw = match raw::parse(doc) {
        Ok(raw) => raw,
        Err(e) => {
            // Unreachable while the schema and the raw structs agree (a test checks
            // that); reported rather than panicking if they ever drift apart.
            diag.at(e.span(), "document", e.message().to_owned());
            return Err(diag.finish(origin));
        }
    };
    let mut config = validate::validate(raw, &mut diag, &pruned, base_dir, split);
    if !diag.is_empty() {
        return Err(diag.finish(origin));
    }
    env::apply(&mut config, overrides);
    Ok(config)
}

/// Returns the heap pages freed after a load to the operating system. glibc's allocator
/// keeps freed memory of its arenas for reuse, and a large configuration's document and
/// raw tables are many times the size of the validated model: without this, `rotor run`
/// would keep the peak of loading for its whole life. Other allocators return it by
/// themselves, so this does nothing there.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no
        // pointer and may be called at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests;
