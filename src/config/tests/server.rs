//! `[server]`: the admin API's connection cap.

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
