//! Every shipped file in `config/` must validate: they are what newcomers copy first.
//! Loaded without environment overrides, so the result does not depend on the machine.

use std::path::Path;

use super::*;

#[test]
fn every_shipped_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        // An agent's file (`[agent]` table) is the sidecar's kind, checked as such.
        let text = std::fs::read_to_string(file).expect("readable");
        if crate::config::agent::is_agent_document(&text) {
            if let Err(errors) = AgentConfig::from_str(&text, &file.display().to_string()) {
                failures.push(errors.to_string());
            }
            continue;
        }
        match Config::load_with_env(file, &|_| None) {
            Ok(config) => assert!(
                !config.secrets.is_empty(),
                "{} declares no secrets",
                file.display()
            ),
            Err(errors) => failures.push(errors.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The demo file promises visible rotations right after `rotor run`: every first version at
/// once, the next one within two minutes.
#[test]
fn example_rotates_soon() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let config = Config::load_with_env(&file, &|_| None).expect("example validates");
    let now = chrono::Utc::now();
    for secret in &config.secrets {
        let schedule = &secret.policy.schedule;
        let first = schedule.next_due(&secret.secret, None, now);
        assert_eq!(first, Some(now), "{} is not created at once", secret.secret);
        let second = schedule
            .next_due(&secret.secret, Some(now), now)
            .expect("scheduled");
        assert!(
            second - now <= chrono::TimeDelta::seconds(120),
            "{} next rotates at {second}",
            secret.secret
        );
    }
}
