//! `[[publish]] type = "aws"`: the view keys and every refusal `rotor check` makes for
//! them, beside those it shares with Vault views (unknown secret, unknown `#field`).

use super::*;
use crate::domain::SecretRef;
use crate::publish::config::AwsValue;

use super::views::SECRETS;

fn doc(views: &str) -> String {
    format!("{SECRETS}{views}")
}

#[test]
fn an_aws_view_of_a_value_and_of_fields() {
    let c = load_ok(&doc(r#"
[[publish]]
type = "aws"
name = "rotor/api"
region = "eu-west-1"
secret = "team/api"

[[publish]]
type = "aws"
name = "rotor/database"
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:5000"
proxy = "http://proxy:3128"
interval = "5s"
fields = { username = "team/db#username", password = "team/db#password" }
"#));
    assert!(c.publish.is_empty() && c.views.is_empty());
    let [a, b] = &c.aws_views[..] else {
        panic!("two AWS views: {:?}", c.aws_views)
    };
    assert_eq!(a.label(), "aws:eu-west-1/rotor/api");
    assert_eq!(a.endpoint_url, None);
    assert_eq!(a.interval, Duration::from_secs(1));
    assert_eq!(
        a.value,
        AwsValue::Secret(SecretRef::new("team", "api").unwrap())
    );
    assert_eq!(b.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert!(b.proxy.is_some());
    assert_eq!(b.interval, Duration::from_secs(5));
    let AwsValue::Fields(fields) = &b.value else {
        panic!("fields: {:?}", b.value)
    };
    assert_eq!(fields["password"].json_field.as_deref(), Some("password"));
    assert_eq!(c.all_views().len(), 2);
}

#[test]
fn aws_view_refusals_name_the_key() {
    let base = "[[publish]]\ntype = \"aws\"\nname = \"rotor/x\"\nregion = \"eu-west-1\"\n";
    let cases: &[(String, &str, &[&str])] = &[
        (
            format!("{base}secret = \"team/nope\"\n"),
            "publish[0].secret",
            &["team/nope is not a managed secret"],
        ),
        (
            format!("{base}fields = {{ a = \"team/db#token\" }}\n"),
            "publish[0].fields.a",
            &["no field \"token\"", "username, password, url"],
        ),
        (
            format!("{base}secret = \"team/api\"\nfields = {{ a = \"team/api\" }}\n"),
            "publish[0].fields",
            &["either `secret`", "not both"],
        ),
        (
            base.to_owned(),
            "publish[0].secret",
            &["missing key `secret` or `fields`"],
        ),
        (
            format!("{base}secret = \"team/api#password\"\n"),
            "publish[0].secret",
            &["must name a secret as \"tenant/key\""],
        ),
        (
            format!("{base}endpoint_url = \"http://aws.internal:4566\"\nsecret = \"team/api\"\n"),
            "publish[0].endpoint_url",
            &["plain http", "not loopback"],
        ),
        (
            format!("{base}endpoint_url = \"ftp://x\"\nsecret = \"team/api\"\n"),
            "publish[0].endpoint_url",
            &["not an endpoint URL"],
        ),
        (
            "[[publish]]\ntype = \"aws\"\nname = \"rotor x\"\nregion = \"eu-west-1\"\nsecret = \"team/api\"\n".to_owned(),
            "publish[0].name",
            &["not a Secrets Manager secret name"],
        ),
        (
            "[[publish]]\ntype = \"aws\"\nname = \"rotor/x\"\nsecret = \"team/api\"\n".to_owned(),
            "publish[0].region",
            &["missing key `region`"],
        ),
        (
            format!("{base}secret = \"team/api\"\nmount = \"secret\"\n"),
            "publish[0].mount",
            &["only applies to type = \"vault\"", "this entry is type = \"aws\""],
        ),
        (
            format!("{base}secret = \"team/api\"\npath = \"x\"\n"),
            "publish[0].path",
            &["only applies to type = \"directory\" or type = \"vault\""],
        ),
        (
            "[[publish]]\ntype = \"vault\"\naddress = \"https://v:8200\"\nauth = { method = \"token\", token_file = \"t\" }\npath = \"p\"\nregion = \"eu-west-1\"\nfields = { a = \"team/api\" }\n".to_owned(),
            "publish[0].region",
            &["only applies to type = \"aws\""],
        ),
        (
            format!("{base}secret = \"team/api\"\ninterval = \"0s\"\n"),
            "publish[0].interval",
            &["longer than zero"],
        ),
    ];
    for (views, key, needles) in cases {
        one_error(&doc(views), key, needles);
    }
}

#[test]
fn two_views_of_one_aws_secret_are_refused() {
    let view = |endpoint: &str| {
        format!(
            "[[publish]]\ntype = \"aws\"\nname = \"rotor/x\"\nregion = \"eu-west-1\"\n{endpoint}secret = \"team/api\"\n"
        )
    };
    one_error(
        &doc(&format!("{}{}", view(""), view(""))),
        "publish[1].name",
        &["already written by publish[0]"],
    );
    // Another endpoint is another secret.
    load_ok(&doc(&format!(
        "{}{}",
        view(""),
        view("endpoint_url = \"http://localhost:4566\"\n")
    )));
}
