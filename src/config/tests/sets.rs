//! `[[secret_sets]]`: expansion to tenant × key secrets, tenants from a list or a file
//! (read beside the config file), and every refusal: exactly one tenants source, bad
//! tenants with `file:line`, duplicates within and across both forms, unknown policies.
//! A property test checks that a set expands to exactly the equivalent `[[secrets]]`.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::target::TargetConfig;

/// Loads `text` as if it were `dir/rotor.toml`, so relative tenants files resolve in `dir`.
fn load_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let path = dir.join("rotor.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load_with_env(&path, &no_env)
}

fn names(c: &Config) -> Vec<String> {
    c.secrets.iter().map(|s| s.secret.to_string()).collect()
}

#[test]
fn a_set_expands_to_every_tenant_times_every_key_in_order() {
    let c = load_ok(
        "[[secrets]]\ntenant = \"solo\"\nkey = \"db\"\npolicy = \"api_keys\"\n\
         [[secret_sets]]\ntenants = [\"acme\", \"globex\"]\nkeys = [\"db\", \"api\"]\n\
         policy = \"database_credentials\"\n\
         target = { type = \"none\", delay = \"1s\" }\n",
    );
    assert_eq!(
        names(&c),
        ["solo/db", "acme/db", "acme/api", "globex/db", "globex/api"]
    );
    assert_eq!(c.secrets[1].policy.name, "database_credentials");
    // One validated target serves the whole set.
    assert!(Arc::ptr_eq(&c.secrets[1].target, &c.secrets[4].target));
    let TargetConfig::None(none) = &*c.secrets[4].target else {
        panic!("expected the none target, got {:?}", c.secrets[4].target);
    };
    assert_eq!(none.delay, Duration::from_secs(1));
    // No target: store only, as for [[secrets]].
    let c =
        load_ok("[[secret_sets]]\ntenants = [\"acme\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n");
    assert_eq!(*c.secrets[0].target, TargetConfig::default());
}

#[test]
fn tenants_file_is_read_beside_the_config_with_comments_and_blank_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sets")).expect("mkdir");
    std::fs::write(
        dir.path().join("sets/tenants.txt"),
        "# customers\n\nacme\n  globex  \n\t# initech left\numbrella\n",
    )
    .expect("write tenants");
    let c = load_in(
        dir.path(),
        "[[secret_sets]]\ntenants_file = \"sets/tenants.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&c), ["acme/db", "globex/db", "umbrella/db"]);
}

#[test]
fn bad_tenants_in_the_file_are_named_by_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tenants.txt");
    std::fs::write(&file, "acme\nAcme Corp\nglobex\nacme\n").expect("write tenants");
    let errs = load_in(
        dir.path(),
        "[policies.p]\ninterval = \"30d\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n\
         [[secret_sets]]\ntenants_file = \"tenants.txt\"\nkeys = [\"db\"]\npolicy = \"p\"\n",
    )
    .expect_err("bad tenants");
    let shown = file.display().to_string();
    assert_eq!(errs.errors.len(), 2, "{errs}");
    for e in &errs.errors {
        assert_eq!(e.key, "secret_sets[0].tenants_file", "{errs}");
        // The set's own line in the config file.
        assert_eq!(e.location.map(|l| l.line), Some(6), "{errs}");
    }
    assert!(
        errs.errors[0]
            .message
            .starts_with(&format!("{shown}:2: tenant \"Acme Corp\"")),
        "{errs}"
    );
    assert!(
        errs.errors[1].message.contains(&format!(
            "{shown}:4: duplicate tenant \"acme\": already on line 1"
        )),
        "{errs}"
    );
}

#[test]
fn a_file_of_bad_lines_is_summarised_not_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: String = (0..100).map(|i| format!("Bad{i}\n")).collect();
    std::fs::write(dir.path().join("tenants.txt"), lines).expect("write tenants");
    let errs = load_in(
        dir.path(),
        "[[secret_sets]]\ntenants_file = \"tenants.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
    )
    .expect_err("bad tenants");
    assert_eq!(errs.errors.len(), 21, "{errs}");
    assert!(
        errs.errors[20].message.contains("and 80 more bad lines"),
        "{errs}"
    );
}

#[test]
fn unreadable_or_empty_tenants_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errs = load_in(
        dir.path(),
        "[[secret_sets]]\ntenants_file = \"missing.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
    )
    .expect_err("missing file");
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert_eq!(errs.errors[0].key, "secret_sets[0].tenants_file");
    assert!(
        errs.errors[0]
            .message
            .contains("cannot read the tenants file")
            && errs.errors[0].message.contains("missing.txt"),
        "{errs}"
    );
    std::fs::write(dir.path().join("empty.txt"), "# nobody yet\n\n").expect("write");
    let errs = load_in(
        dir.path(),
        "[[secret_sets]]\ntenants_file = \"empty.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
    )
    .expect_err("empty file");
    assert!(errs.errors[0].message.contains("names no tenant"), "{errs}");
}

#[test]
fn exactly_one_of_tenants_and_tenants_file() {
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\ntenants_file = \"t.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].tenants_file",
        &["exactly one of `tenants` and `tenants_file`"],
    );
    let e = one_error(
        "[[secret_sets]]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0]",
        &["missing key `tenants` or `tenants_file`"],
    );
    // At the set's header line.
    assert_eq!(e.location.map(|l| l.line), Some(1));
}

#[test]
fn bad_lists_keys_and_policies() {
    one_error(
        "[[secret_sets]]\ntenants = [\"a\", \"B\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].tenants[1]",
        &["lowercase"],
    );
    one_error(
        "[[secret_sets]]\ntenants = [\"a\", \"a\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].tenants[1]",
        &["duplicate tenant", "tenants[0]"],
    );
    one_error(
        "[[secret_sets]]\ntenants = []\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].tenants",
        &["at least one tenant"],
    );
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\nkeys = [\"db\", \"../x\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].keys[1]",
        &["'.'"],
    );
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\nkeys = [\"db\", \"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].keys[1]",
        &["duplicate key", "keys[0]"],
    );
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].keys",
        &["missing key `keys`"],
    );
    let e = one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\nkeys = [\"db\"]\npolicy = \"api_key\"\n",
        "secret_sets[0].policy",
        &["no policy has this name", "api_keys"],
    );
    assert_eq!(
        e.location,
        Some(Location {
            line: 4,
            column: 10
        })
    );
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\nowner = \"x\"\n",
        "secret_sets[0].owner",
        &["unknown key"],
    );
    one_error(
        "[[secret_sets]]\ntenants = \"a\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0].tenants",
        &["expected an array of strings"],
    );
    // The target is checked once, against the set's policy, like a secret's.
    one_error(
        "[[secret_sets]]\ntenants = [\"a\"]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n\
         target = { type = \"webhook\", url = \"ftp://x\", hmac_key_file = \"k\" }\n",
        "secret_sets[0].target.url",
        &[],
    );
}

#[test]
fn duplicates_within_and_across_forms_name_both_places() {
    let e = one_error(
        "[[secrets]]\ntenant = \"acme\"\nkey = \"db\"\npolicy = \"api_keys\"\n\
         [[secret_sets]]\ntenants = [\"globex\", \"acme\"]\nkeys = [\"api\", \"db\"]\npolicy = \"api_keys\"\n",
        "secret_sets[0]",
        &[
            "duplicate secret acme/db (tenants[1], keys[1])",
            "already declared as secrets[0]",
        ],
    );
    // At the duplicate tenant's place in the set.
    assert_eq!(
        e.location,
        Some(Location {
            line: 6,
            column: 22
        })
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "acme\nglobex\n").expect("write");
    std::fs::write(dir.path().join("b.txt"), "initech\n\nglobex\n").expect("write");
    let errs = load_in(
        dir.path(),
        "[[secret_sets]]\ntenants_file = \"a.txt\"\nkeys = [\"db\"]\npolicy = \"api_keys\"\n\
         [[secret_sets]]\ntenants_file = \"b.txt\"\nkeys = [\"api\", \"db\"]\npolicy = \"api_keys\"\n",
    )
    .expect_err("duplicate across sets");
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let a = dir.path().join("a.txt").display().to_string();
    let b = dir.path().join("b.txt").display().to_string();
    assert_eq!(
        errs.errors[0].message,
        format!(
            "duplicate secret globex/db ({b}:3, keys[1]): already declared as secret_sets[0] ({a}:2, keys[0])"
        )
    );
}

#[test]
fn a_set_repeating_another_reports_a_few_duplicates_and_a_count() {
    let tenants: Vec<String> = (0..30).map(|i| format!("\"t{i}\"")).collect();
    let set = format!(
        "[[secret_sets]]\ntenants = [{}]\nkeys = [\"db\"]\npolicy = \"api_keys\"\n",
        tenants.join(", ")
    );
    let errs = errors(&format!("{set}{set}"));
    assert_eq!(errs.errors.len(), 21, "{errs}");
    assert!(
        errs.errors
            .iter()
            .any(|e| e.message == "and 10 more duplicate secrets in this set"),
        "{errs}"
    );
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,6}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A set is exactly its `[[secrets]]` written out: same secrets, same order, same
    /// policy and target; and where those have a duplicate, both forms are refused.
    #[test]
    fn a_set_equals_its_secrets_written_out(
        tenants in proptest::collection::vec(ident(), 1..6),
        keys in proptest::collection::vec(ident(), 1..5),
    ) {
        let quoted = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        let set = format!(
            "[[secret_sets]]\ntenants = [{}]\nkeys = [{}]\npolicy = \"api_keys\"\ntarget = {{ type = \"none\", delay = \"2s\" }}\n",
            quoted(&tenants),
            quoted(&keys),
        );
        let mut tables = String::new();
        for t in &tenants {
            for k in &keys {
                tables.push_str(&format!(
                    "[[secrets]]\ntenant = {t:?}\nkey = {k:?}\npolicy = \"api_keys\"\ntarget = {{ type = \"none\", delay = \"2s\" }}\n"
                ));
            }
        }
        let unique = |v: &[String]| v.iter().collect::<std::collections::HashSet<_>>().len() == v.len();
        match (load(&set), load(&tables)) {
            (Ok(a), Ok(b)) => {
                prop_assert!(unique(&tenants) && unique(&keys));
                prop_assert_eq!(a.secrets, b.secrets);
            }
            (Err(_), Err(_)) => prop_assert!(!unique(&tenants) || !unique(&keys)),
            (a, b) => prop_assert!(false, "set {:?} but tables {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }
}
