//! The examples besides the quickstart run as documented.

mod common;

use common::example::output_until;

fn line_starting<'a>(lines: &'a [String], start: &str) -> &'a str {
    lines
        .iter()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?} in {lines:#?}"))
}

#[tokio::test]
async fn the_custom_store_example_authenticates_from_its_own_table() {
    let lines = output_until("custom_store", &[], "after disabling it").await;
    assert!(line_starting(&lines, "with the key").ends_with("200 OK reports of acme"));
    assert!(line_starting(&lines, "without a key").contains("401 Unauthorized"));
    assert!(line_starting(&lines, "with a made-up key").contains("invalid_token"));
    assert!(line_starting(&lines, "after disabling it").ends_with("401 Unauthorized"));
}

/// The value of `export NAME=value` among `lines` (a trailing `# comment`
/// is not part of it).
fn export<'a>(lines: &'a [String], name: &str) -> &'a str {
    let line = line_starting(lines, &format!("export {name}="));
    line[format!("export {name}=").len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("{line:?} exports nothing"))
}

#[tokio::test]
async fn the_grpc_example_shows_each_status() {
    let lines = output_until("grpc", &[], "serving until").await;
    // The keys are printed for outside clients, before the server listens.
    let listening = lines
        .iter()
        .position(|line| line.starts_with("listening on"))
        .expect("a listening line");
    for name in ["ORG_KEY", "READ_KEY", "PAT", "ORG_ID"] {
        let at = lines
            .iter()
            .position(|line| line.starts_with(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no export {name} line in {lines:#?}"));
        assert!(
            at < listening,
            "export {name} comes after the listening line"
        );
    }
    let org_key = export(&lines, "ORG_KEY");
    assert!(org_key.starts_with("ak_"), "{org_key}");
    assert!(export(&lines, "READ_KEY").starts_with("ak_"));
    assert!(export(&lines, "PAT").starts_with("pat_"));
    assert_eq!(export(&lines, "ORG_ID"), "acme");
    // The printed org key is the one the self-call used.
    let org_key_id = tower_keyauth::KeyFormat::default()
        .parse(org_key)
        .expect("a well-formed key")
        .key_id()
        .expect("a prefixed key");
    assert!(
        line_starting(&lines, "Whoami.Get with the org key")
            .contains(&format!("key_id: \"{org_key_id}\"")),
        "{lines:#?}"
    );
    assert!(line_starting(&lines, "Whoami.Get without a key").contains("Unauthenticated"));
    assert!(line_starting(&lines, "Whoami.Get with the org key").contains("OK"));
    assert!(
        line_starting(&lines, "Objects.Create with the read-only key").contains("PermissionDenied")
    );
    assert!(line_starting(&lines, "Objects.Create with ada's token for acme").contains("OK"));
}
