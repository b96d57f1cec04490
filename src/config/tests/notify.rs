//! `[[notify]]` channels: defaults, and every error reported without quoting a URL.

use super::*;
use crate::notify::config::{ChannelConfig, UrlSource};

#[test]
fn notify_channels_and_metrics_are_read_with_defaults() {
    let c = load_ok(
        r#"
[metrics]
per_secret = true
[[notify]]
type = "slack"
url = "http://relay.local:8080/slack"
events = ["rotation_failed", "rotation_stuck"]
min_severity = "warning"
[[notify]]
type = "webhook"
name = "audit"
url_file = "/etc/rotor/url"
secret_file = "/etc/rotor/key"
queue_capacity = 10
max_attempts = 2
retry_backoff = "2s"
retry_backoff_max = "4s"
timeout = "1s"
[[notify]]
type = "log"
"#,
    );
    assert!(c.metrics.per_secret);
    assert_eq!(c.notify.len(), 3);
    let slack = &c.notify[0];
    assert_eq!(slack.name, "slack");
    assert_eq!(slack.events, ["rotation_failed", "rotation_stuck"]);
    assert_eq!(slack.min_severity, crate::notify::Severity::Warning);
    assert_eq!(slack.queue_capacity, 1_000);
    assert_eq!(slack.max_attempts, 5);
    let hook = &c.notify[1];
    assert_eq!(hook.name, "audit");
    assert_eq!(
        hook.channel,
        ChannelConfig::Webhook {
            url: UrlSource::File(PathBuf::from("/etc/rotor/url")),
            secret_file: PathBuf::from("/etc/rotor/key"),
        }
    );
    assert_eq!((hook.queue_capacity, hook.max_attempts), (10, 2));
    assert_eq!(hook.timeout, Duration::from_secs(1));
    assert_eq!(c.notify[2].channel, ChannelConfig::Log);
    // Debug never shows a URL's path (Slack's is its token).
    assert!(!format!("{:?}", c.notify[0]).contains("/slack"));
    assert!(!load_ok("").metrics.per_secret);
}

#[test]
fn notify_errors_are_all_reported_without_quoting_urls() {
    let errs = errors(
        r#"
[[notify]]
type = "slack"
url = "ftp://hooks.slack.com/services/T0/B0/SECRETTOKEN"
events = ["rotation_exploded"]
min_severity = "loud"
[[notify]]
type = "webhook"
url = "http://relay.local/hook"
[[notify]]
type = "pager"
[[notify]]
type = "log"
url = "http://x/"
"#,
    );
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "notify[0].url",
        "notify[0].events[0]",
        "notify[0].min_severity",
        "notify[1].secret_file",
        "notify[2].type",
        "notify[3].url",
    ] {
        assert!(keys.contains(&key), "{key} not in:\n{errs}");
    }
    let text = errs.to_string();
    assert!(
        text.contains("must be an http:// or https:// URL"),
        "{text}"
    );
    assert!(!text.contains("SECRETTOKEN"), "a URL was quoted:\n{text}");
}
