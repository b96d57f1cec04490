//! `[server]`: the admin API's connection cap and the consumer token; `[consumers]`.

use super::*;

#[test]
fn max_connections_defaults_to_4096_and_is_bounded() {
    assert_eq!(load_ok("").server.max_connections, 4096);
    assert_eq!(
        load_ok("[server]\nmax_connections = 64\n")
            .server
            .max_connections,
        64
    );
    for bad in ["0", "-1", "1000001"] {
        let e = one_error(
            &format!("[server]\nmax_connections = {bad}\n"),
            "server.max_connections",
            &["between 1 and 1000000"],
        );
        let at = e.location.expect("a location");
        assert_eq!((at.line, at.column), (2, 19));
    }
    one_error(
        "[server]\nmax_connections = \"many\"\n",
        "server.max_connections",
        &["expected an integer"],
    );
}

#[test]
fn consumer_token_file_is_optional_and_not_the_admin_token() {
    assert_eq!(load_ok("").server.consumer_token_file, None);
    assert_eq!(
        load_ok("[server]\nconsumer_token_file = \"data/consumer.token\"\n")
            .server
            .consumer_token_file,
        Some(std::path::PathBuf::from("data/consumer.token"))
    );
    one_error(
        "[server]\nconsumer_token_file = \"\"\n",
        "server.consumer_token_file",
        &["must not be empty"],
    );
    one_error(
        "[server]\nadmin_token_file = \"t\"\nconsumer_token_file = \"t\"\n",
        "server.consumer_token_file",
        &["is the admin token file"],
    );
}

#[test]
fn consumers_keys_have_defaults_and_ranges() {
    let c = load_ok("").consumers;
    assert_eq!(c.ttl, std::time::Duration::from_secs(60));
    assert_eq!(c.max_concurrent_reloads, 1);
    assert_eq!(c.permit_timeout, std::time::Duration::from_secs(120));
    let c = load_ok(
        "[consumers]\nttl = \"30s\"\nmax_concurrent_reloads = 2\npermit_timeout = \"5m\"\n",
    )
    .consumers;
    assert_eq!(c.ttl, std::time::Duration::from_secs(30));
    assert_eq!(c.max_concurrent_reloads, 2);
    assert_eq!(c.permit_timeout, std::time::Duration::from_secs(300));
    let e = one_error(
        "[consumers]\nttl = \"500ms\"\n",
        "consumers.ttl",
        &["between 1s and 1d", "\"500ms\""],
    );
    let at = e.location.expect("a location");
    assert_eq!((at.line, at.column), (2, 7));
    one_error(
        "[consumers]\npermit_timeout = \"2h\"\n",
        "consumers.permit_timeout",
        &["between 1s and 1h", "\"2h\""],
    );
    one_error("[consumers]\nttl = \"soon\"\n", "consumers.ttl", &["soon"]);
    one_error(
        "[consumers]\nmax_concurrent_reloads = 0\n",
        "consumers.max_concurrent_reloads",
        &["between 1 and 100000"],
    );
    one_error(
        "[consumers]\nreloads = 2\n",
        "consumers.reloads",
        &["unknown key"],
    );
}
