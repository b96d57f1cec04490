//! The Slack-compatible incoming-webhook payload: a plain `text` (shown in notifications and
//! by receivers that ignore blocks, such as Mattermost) plus Block Kit blocks with the
//! fields an on-call engineer needs: tenant, key, versions, outcome, error kind.

use serde_json::{Value, json};

use super::{Notification, Severity};

pub fn payload(n: &Notification) -> Value {
    let icon = match n.severity {
        Severity::Info => ":information_source:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":rotating_light:",
    };
    let text = format!("{icon} [{}] {}", n.severity.as_str(), n.summary);
    let mut fields = Vec::new();
    let mut field = |name: &str, value: String| {
        fields.push(json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") }));
    };
    if let Some(t) = &n.tenant {
        field("Tenant", t.clone());
    }
    if let Some(k) = &n.key {
        field("Key", k.clone());
    }
    if let Some(v) = n.version {
        field("Version", format!("v{v}"));
    }
    if let Some(v) = n.previous_version {
        field("Previous version", format!("v{v}"));
    }
    field("Outcome", n.outcome.to_owned());
    if let Some(e) = n.error {
        field("Error kind", e.to_owned());
    }
    if let Some(m) = &n.mount {
        field("Mount", m.clone());
    }
    if let Some(a) = &n.action {
        field("Action", a.clone());
    }
    // Slack shows at most 10 fields in a section; rotor sends at most 7.
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "section", "fields": fields },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": format!(
                "rotor · {} · {} · {}",
                n.event,
                n.severity.as_str(),
                n.at.format("%Y-%m-%dT%H:%M:%SZ")
            ) } ] }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ErrorKind, RotationId, SecretRef};
    use crate::machine::Notice;
    use chrono::Utc;

    #[test]
    fn has_text_and_the_fields() {
        let s = SecretRef::new("tenant1", "db").expect("valid");
        let n = Notification::from_notice(
            &s,
            RotationId(4),
            &Notice::Failed {
                version: 7,
                error: ErrorKind::Apply,
                retry_at: None,
            },
            Utc::now(),
        );
        let p = payload(&n);
        assert!(p["text"].as_str().unwrap().contains("tenant1/db"));
        let fields: Vec<&str> = p["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&"*Tenant*\ntenant1"), "{fields:?}");
        assert!(fields.contains(&"*Key*\ndb"));
        assert!(fields.contains(&"*Version*\nv7"));
        assert!(fields.contains(&"*Outcome*\nfailed"));
        assert!(fields.contains(&"*Error kind*\napply"));
    }
}
