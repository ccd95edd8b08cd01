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

#[tokio::test]
async fn the_grpc_example_shows_each_status() {
    let lines = output_until("grpc", &[], "serving until").await;
    assert!(line_starting(&lines, "Whoami.Get without a key").contains("Unauthenticated"));
    assert!(line_starting(&lines, "Whoami.Get with the org key").contains("OK"));
    assert!(
        line_starting(&lines, "Objects.Create with the read-only key").contains("PermissionDenied")
    );
    assert!(line_starting(&lines, "Objects.Create with ada's token for acme").contains("OK"));
}
