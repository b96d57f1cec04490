//! The `[[secrets]]` scanner (`config::fast`): whatever the document, loading with it
//! gives what the TOML parser alone gives, model and messages (key paths, values,
//! line:column) alike. A property test generates documents of simple and not-so-simple
//! entries (unknown keys, wrong types, bad identifiers, duplicates within `[[secrets]]`
//! and across `[[secret_sets]]`, odd spacing, comments, escapes, sub-tables, syntax
//! errors, a `[[secrets]]` line inside a multi-line string) and compares the two.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::super::fast;
use super::*;

fn slow(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_slow(text, "test.toml", Path::new(""), &no_env)
}

/// Loads `text` both ways and asserts the same outcome; returns it.
fn same_both_ways(text: &str) -> Result<Config, ConfigErrors> {
    let fast = load(text);
    let slow = slow(text);
    assert_eq!(fast, slow, "fast and slow differ for:\n{text}");
    fast
}

/// A complete policy called `NAME`.
const POLICY: &str = "[policies.NAME]\ninterval = \"30d\"\ngrace = \"2h\"\n\
                      generator = { type = \"password\", length = 32 }\n";

/// `n` entries in the shape `scripts/config-scale.sh` writes.
fn scale_doc(n: usize) -> String {
    let mut text = POLICY.replace("NAME", "tenant_db");
    for i in 0..n {
        text.push_str(&format!(
            "[[secrets]]\ntenant = \"tenant{:05}\"\nkey = \"key{:02}\"\npolicy = \"tenant_db\"\ntarget = {{ type = \"none\" }}\n",
            i / 100,
            i % 100
        ));
    }
    text
}

#[test]
fn the_scanner_takes_every_simple_entry_and_leaves_the_rest() {
    let text = scale_doc(300);
    let split = fast::split(&text).expect("the scanner takes simple entries");
    assert_eq!(split.entries.len(), 300);
    assert!(split.entries.iter().all(Option::is_some));
    assert_eq!(split.residual.text, POLICY.replace("NAME", "tenant_db"));
    let c = same_both_ways(&text).expect("valid");
    assert_eq!(c.secrets.len(), 300);
    // Entries written alike share one validated target.
    assert!(Arc::ptr_eq(&c.secrets[0].target, &c.secrets[299].target));

    // A sub-table, a dotted key or another key leaves the entry to the parser.
    for body in [
        "tenant = \"a\"\nkey = \"b\"\npolicy = \"api_keys\"\n[secrets.target]\ntype = \"none\"\n",
        "tenant = \"a\"\nkey = \"b\"\npolicy = \"api_keys\"\ntarget.type = \"none\"\n",
        "tenant = \"a\"\nkey = \"b\"\npolicy = \"api_keys\"\nnote = \"x\"\n",
        "tenant = \"a\"\nkey = 5\npolicy = \"api_keys\"\n",
    ] {
        let text = format!("{}[[secrets]]\n{body}", scale_doc(2));
        let split = fast::split(&text).expect("the first two are taken");
        assert_eq!(split.entries.len(), 3, "{text}");
        assert!(split.entries[2].is_none(), "{text}");
        assert!(split.residual.text.contains(body), "{text}");
        let _ = same_both_ways(&text);
    }
}

#[test]
fn a_header_line_inside_a_multi_line_string_is_not_an_entry() {
    let text = "[[mounts]]\npath = \"\"\"\n[[secrets]]\ntenant = \"x\"\n\"\"\"\n\
                [[secrets]]\ntenant = \"acme\"\nkey = \"db\"\npolicy = \"api_keys\"\n";
    let split = fast::split(text).expect("the real entry is taken");
    assert_eq!(split.entries.len(), 1);
    let _ = same_both_ways(text);
}

#[test]
fn messages_of_taken_entries_name_the_same_place() {
    let text = "# fleet\n[policies.p]\ninterval = \"1d\"\ngrace = \"1h\"\n\
                generator = { type = \"hmac\" }\n[[secrets]]\n\
                tenant = \"Acme\"\nkey = \"db\"\npolicy = \"p\"\n\n[[secrets]]  # second\n\
                \ttenant = 'acme'\nkey = \"db\"\npolicy = \"nope\"\n\
                target = { type = \"none\", delay = 5, x = 1 }\n";
    assert!(fast::split(text).is_some_and(|s| s.entries.iter().all(Option::is_some)));
    let errs = same_both_ways(text).expect_err("invalid");
    let rendered = errs.to_string();
    assert!(
        rendered.contains("test.toml:7:10: secrets[0].tenant:"),
        "{rendered}"
    );
    assert!(
        rendered.contains("test.toml:14:10: secrets[1].policy:"),
        "{rendered}"
    );
    assert!(
        rendered.contains("test.toml:15:35: secrets[1].target.delay:"),
        "{rendered}"
    );
}

#[test]
fn an_agent_table_is_found_beside_many_taken_entries() {
    use super::super::agent::is_agent_document;
    let service = scale_doc(50);
    assert!(!is_agent_document(&service));
    assert!(is_agent_document(&format!(
        "{service}[agent]\nrotor_url = \"http://127.0.0.1:8080\"\n"
    )));
}

#[test]
fn shipped_files_load_the_same_both_ways() {
    for name in ["config/example.toml", "config/production.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let text = std::fs::read_to_string(&path).expect("read shipped file");
        let base = path.parent().expect("config dir");
        let fast = Config::from_str_in(&text, name, base, &no_env);
        let slow = Config::from_str_slow(&text, name, base, &no_env);
        assert_eq!(fast, slow, "{name}");
    }
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"acme\"".to_owned()),
        Just("\"globex\"".to_owned()),
        Just("'acme'".to_owned()),
        Just("\"db\"".to_owned()),
        Just("\"api\"".to_owned()),
        Just("\"\\u0061cme\"".to_owned()),
        Just("\"Acme\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"a/b\"".to_owned()),
        Just("\"tab\\there\"".to_owned()),
        Just("\"raw\ttab\"".to_owned()),
        Just("\"raw\u{1}control\"".to_owned()),
        Just("'lit\\eral'".to_owned()),
        Just("\"\\e\"".to_owned()),
        Just("5".to_owned()),
        Just("true".to_owned()),
        Just("[\"acme\"]".to_owned()),
    ]
}

/// Mostly valid identifiers: a taken entry with a value the checks refuse is the case
/// to compare, a syntax error only now and then.
fn ident_value() -> impl Strategy<Value = String> {
    prop_oneof![
        60 => prop::sample::select(&["\"acme\"", "\"globex\"", "'initech'", "\"db\"", "\"api\""][..])
            .prop_map(str::to_owned),
        10 => string_value(),
        1 => prop::sample::select(&["\"unterminated", "\"\"\"acme\"\"\""][..]).prop_map(str::to_owned),
    ]
}

fn policy_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"api_keys\"".to_owned()),
        Just("\"custom\"".to_owned()),
        Just("'database_credentials'".to_owned()),
        Just("\"nope\"".to_owned()),
        Just("\"broken\"".to_owned()),
        Just("7".to_owned()),
    ]
}

fn target_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("{ type = \"none\" }".to_owned()),
        4 => Just("{type=\"none\",delay=\"1s\"}".to_owned()),
        4 => Just("{ type = \"none\", delay = 5 }".to_owned()),
        4 => Just("{ type = \"none\", delay = \"1x\" }".to_owned()),
        4 => Just("{ type = \"nope\" }".to_owned()),
        4 => Just("{ delay = \"1s\" }".to_owned()),
        4 => Just("{ type = 3 }".to_owned()),
        4 => Just("{ type = \"none\", foo = 1 }".to_owned()),
        4 => Just("{ type = \"none\", }".to_owned()),
        4 => Just("{ type = \"postgres\" }".to_owned()),
        4 => Just("{ type = \"postgres\", admin_url_file = \"/x\", roles = [\"a\", \"b\"] }".to_owned()),
        1 => Just("{ type = \"none\" # c }".to_owned()),
        1 => Just("{ type = \"none\"".to_owned()),
        4 => Just("{}".to_owned()),
        4 => Just("\"none\"".to_owned()),
    ]
}

fn spacing() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(" "), Just(""), Just("\t"), Just("  ")]
}

fn line() -> impl Strategy<Value = String> {
    let kv = |key: &'static str, value: BoxedStrategy<String>| {
        (
            spacing(),
            spacing(),
            value,
            prop::option::of(Just(" # note")),
        )
            .prop_map(move |(a, b, v, c)| format!("{a}{key}{b}={b}{v}{}", c.unwrap_or("")))
    };
    prop_oneof![
        4 => kv("tenant", ident_value().boxed()),
        4 => kv("key", ident_value().boxed()),
        4 => kv("policy", policy_value().boxed()),
        3 => kv("target", target_value().boxed()),
        1 => kv("tenat", ident_value().boxed()),
        1 => Just("target.type = \"none\"".to_owned()),
        1 => Just("# a comment".to_owned()),
        1 => Just(String::new()),
        1 => Just("[secrets.target]\ntype = \"none\"".to_owned()),
        1 => Just("   ".to_owned()),
    ]
}

/// An entry in the simple form, with values that may still be refused.
fn simple_entry() -> impl Strategy<Value = String> {
    let kv = |key: &'static str, value: BoxedStrategy<String>| {
        (spacing(), value, prop::option::of(Just("  # why")))
            .prop_map(move |(a, v, c)| format!("{a}{key} ={a}{v}{}\n", c.unwrap_or("")))
    };
    (
        prop::option::weighted(0.9, kv("tenant", ident_value().boxed())),
        prop::option::weighted(0.9, kv("key", ident_value().boxed())),
        prop::option::weighted(0.9, kv("policy", policy_value().boxed())),
        prop::option::of(kv("target", target_value().boxed())),
        prop::option::of(prop_oneof![
            8 => Just("# trailing comment\n\n"),
            1 => Just("# a bare\rcarriage return\n"),
            1 => Just("# a control \u{1} character\n"),
            4 => Just("\t# tab \t indented\r\n"),
        ]),
    )
        .prop_map(|(t, k, p, g, c)| {
            let mut out = String::from("[[secrets]]\n");
            for part in [t, k, p, g].into_iter().flatten() {
                out.push_str(&part);
            }
            out.push_str(c.unwrap_or(""));
            out
        })
}

fn entry() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just("[[secrets]]"),
        Just("[[ secrets ]]"),
        Just("  [[secrets]] # entry"),
        Just("[[\"secrets\"]]"),
    ];
    let eol = prop_oneof![4 => Just("\n"), 1 => Just("\r\n")];
    (header, prop::collection::vec(line(), 0..4), eol).prop_map(|(h, lines, eol)| {
        let mut out = format!("{h}{eol}");
        for l in lines {
            out.push_str(&l);
            out.push_str(eol);
        }
        out
    })
}

fn other_block() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("[[secret_sets]]\ntenants = [\"acme\", \"globex\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n".to_owned()),
        3 => Just("[[secret_sets]]\ntenants = [\"initech\"]\nkeys = [\"api\", \"db\"]\npolicy = \"custom\"\ntarget = { type = \"none\" }\n".to_owned()),
        3 => Just("[cache]\nttl = \"1m\"\n".to_owned()),
        3 => Just("[[mounts]]\npath = \"\"\"\n[[secrets]]\ntenant = \"x\"\n\"\"\"\n".to_owned()),
        1 => Just("[secrets]\ntenant = \"x\"\n".to_owned()),
        1 => Just("[secrets.target]\ntype = \"none\"\n".to_owned()),
        3 => Just("[policies.broken]\ninterval = \"1x\"\n".to_owned()),
        3 => Just("# just a comment\n\n".to_owned()),
    ]
}

fn document() -> impl Strategy<Value = String> {
    let block = prop_oneof![8 => simple_entry(), 1 => entry(), 2 => other_block()];
    let root = prop_oneof![
        8 => Just(""),
        8 => Just("# rotor\n"),
        1 => Just("secrets = []\n"),
        1 => Just("\"quoted\" = 1\n"),
    ];
    (root, prop::collection::vec(block, 0..10)).prop_map(|(root, blocks)| {
        let mut text = format!("{root}{}", POLICY.replace("NAME", "custom"));
        for b in blocks {
            text.push_str(&b);
        }
        text
    })
}

#[test]
fn the_generated_documents_mostly_take_the_fast_path() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = document();
    let (mut taken, mut total) = (0, 0);
    for _ in 0..300 {
        let text = strategy
            .new_tree(&mut runner)
            .expect("a document")
            .current();
        total += 1;
        if fast::split(&text).is_some_and(|s| toml::de::DeTable::parse(&s.residual.text).is_ok()) {
            taken += 1;
        }
    }
    // Otherwise the property test below would compare the slow path with itself.
    assert!(
        taken * 3 > total,
        "only {taken} of {total} documents took the fast path"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the document, the scanner changes nothing in the outcome.
    #[test]
    fn the_fast_path_gives_what_the_parser_alone_gives(text in document()) {
        let fast = load(&text);
        let slow = slow(&text);
        prop_assert_eq!(fast, slow, "document:\n{}", text);
    }
}
