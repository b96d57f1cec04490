//! AWS Secrets Manager, served locally by moto (`tests/common/moto.rs`). rotor has no AWS
//! store yet; this proves the helper, so the store's tests can run against moto from the
//! start: a private `moto_server` answers Secrets Manager's JSON API over plain loopback
//! HTTP without real credentials or signatures.

use serde_json::json;

use crate::common::moto::{Moto, REGION};
use crate::common::openbao::random_name;

#[tokio::test]
async fn moto_serves_secrets_manager() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let name = format!("rotor-test/{}", random_name(8));
    let (status, created) = moto
        .secrets_manager(
            "CreateSecret",
            &json!({"Name": name, "SecretString": "first"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["Name"], name.as_str());
    let arn = created["ARN"].as_str().expect("ARN");
    assert!(
        arn.starts_with(&format!("arn:aws:secretsmanager:{REGION}:")),
        "{arn}"
    );

    let (status, put) = moto
        .secrets_manager(
            "PutSecretValue",
            &json!({"SecretId": name, "SecretString": "second"}),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    let (status, read) = moto
        .secrets_manager("GetSecretValue", &json!({"SecretId": name}))
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["SecretString"], "second");
    assert_eq!(read["VersionId"], put["VersionId"]);
    assert!(
        read["VersionStages"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("AWSCURRENT"))),
        "{read}"
    );

    // A missing secret is Secrets Manager's error shape, not a transport failure. moto
    // answers it with 404 where AWS answers 400: a store must go by `__type`, not status.
    let (status, missing) = moto
        .secrets_manager("GetSecretValue", &json!({"SecretId": "rotor-test/absent"}))
        .await;
    assert!(status == 400 || status == 404, "{status} {missing}");
    assert_eq!(missing["__type"], "ResourceNotFoundException");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}
