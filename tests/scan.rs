//! The token scanner and redactor (`tower_keyauth::scan`): every minted
//! token is found in any surrounding text, nothing else is, the redactor
//! masks the same however its input is split, the `scan` example works as
//! a CI step, and (feature `tracing-subscriber`) logged keys are masked.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use proptest::prelude::*;
use tower_keyauth::KeyFormat;
use tower_keyauth::format::{Environment, ParseError};
use tower_keyauth::ids::KeyKind;
use tower_keyauth::scan::Redactor;

/// The default format; one with nested custom prefixes and environments;
/// one that also takes opaque keys and longer secrets.
fn formats() -> [KeyFormat; 3] {
    [
        KeyFormat::default(),
        KeyFormat::new()
            .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
            .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test)
            .prefix("andi", KeyKind::Organization),
        KeyFormat::default().accept_opaque().secret_length(40),
    ]
}

/// What each of [`formats`] can mint.
const MINTABLE: [&[(KeyKind, Option<Environment>)]; 3] = [
    &[
        (KeyKind::Organization, None),
        (KeyKind::Workspace, None),
        (KeyKind::Personal, None),
    ],
    &[
        (KeyKind::Workspace, Some(Environment::Live)),
        (KeyKind::Workspace, Some(Environment::Test)),
        (KeyKind::Organization, None),
    ],
    &[(KeyKind::Organization, None), (KeyKind::Personal, None)],
];

/// Text around tokens: whatever a log line, URL, JSON or prose holds,
/// including pieces of tokens, non-ASCII text and newlines.
fn filler() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Bearer ".to_owned()),
        Just("\"".to_owned()),
        Just("?api-key=".to_owned()),
        Just("{\"token\":\"".to_owned()),
        Just("\\n".to_owned()),
        Just("%20".to_owned()),
        Just("\n".to_owned()),
        Just("ak_".to_owned()),
        Just("pat_x.".to_owned()),
        Just("andi_".to_owned()),
        Just("_live".to_owned()),
        Just("日本語".to_owned()),
        Just("🔑".to_owned()),
        "[^\n]{0,6}",
        "[A-Za-z0-9_.-]{0,12}",
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// Text after a token: empty, or starting with a byte that is not an
/// ASCII letter or digit.
fn after_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        ("[^0-9A-Za-z]", filler()).prop_map(|(boundary, rest)| boundary + &rest),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // CI runs on clean clones: nothing to persist between runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_minted_token_is_found_and_masked_in_any_text(
        which in 0..3usize,
        kinds in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        before in filler(),
        gaps in proptest::collection::vec(after_token(), 4),
        piece in 1..64usize,
    ) {
        let format = &formats()[which];
        let mut text = before;
        let mut expected_redacted = text.clone();
        let mut minted = Vec::new();
        for (i, (kind, gap)) in kinds.iter().zip(&gaps).enumerate() {
            let (kind, environment) = *kind.get(MINTABLE[which]);
            let token = format.mint(kind, environment).unwrap();
            let start = text.len();
            text.push_str(token.token.expose_secret());
            expected_redacted.push_str(&KeyFormat::mask(Some(&token.prefix), &token.id));
            // Only the text's end may follow a token without a boundary.
            let gap = if gap.is_empty() && i + 1 < kinds.len() { " " } else { gap };
            text.push_str(gap);
            expected_redacted.push_str(gap);
            minted.push((start, token));
        }

        let found: Vec<_> = format.find_tokens(&text).collect();
        prop_assert_eq!(found.len(), minted.len(), "in {:?}", text);
        for (finding, (start, token)) in found.iter().zip(&minted) {
            let secret = token.token.expose_secret();
            prop_assert_eq!(&finding.range, &(*start..start + secret.len()));
            prop_assert!(text.is_char_boundary(finding.range.start));
            prop_assert!(text.is_char_boundary(finding.range.end));
            prop_assert_eq!(&finding.key_id, &token.id);
            prop_assert_eq!(finding.prefix, &*token.prefix);
            prop_assert_eq!(finding.environment, token.environment);
        }

        let redacted = format.redact(&text);
        prop_assert_eq!(&redacted, &expected_redacted);
        for (_, token) in &minted {
            let secret = token.token.expose_secret();
            let secret = &secret[secret.find('.').unwrap() + 1..];
            prop_assert!(!redacted.contains(secret));
        }

        // A redactor writes the same, however the text is split, and says
        // on which line each token is.
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let mut redactor = Redactor::with_callback(format, &mut out, |finding, line| {
            lines.push((line, finding.key_id.clone()))
        });
        for chunk in text.as_bytes().chunks(piece) {
            redactor.write_all(chunk).unwrap();
        }
        redactor.finish().unwrap();
        drop(redactor);
        prop_assert_eq!(String::from_utf8(out).unwrap(), redacted.into_owned());
        let expected_lines: Vec<_> = minted
            .iter()
            .map(|(start, token)| (1 + text[..*start].matches('\n').count() as u64, token.id.clone()))
            .collect();
        prop_assert_eq!(lines, expected_lines);
    }

    #[test]
    fn any_text_is_scanned_without_panic_and_redacting_keeps_what_is_not_a_token(
        text in "\\PC{0,200}",
    ) {
        let format = KeyFormat::default();
        prop_assert_eq!(format.find_tokens(&text).count(), 0);
        prop_assert_eq!(format.redact(&text), text.as_str());
    }
}

/// xorshift64*: fast, seeded, good enough to draw test strings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn push_from(&mut self, out: &mut String, alphabet: &[u8], count: usize) {
        out.extend((0..count).map(|_| alphabet[self.below(alphabet.len())] as char));
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_BYTES: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-";

#[test]
fn no_false_positive_in_a_million_random_strings() {
    let formats = formats();
    let prefixes: [&[&str]; 3] = [
        &["ak", "pat"],
        &["andi", "andi_live", "andi_test"],
        &["ak", "pat"],
    ];
    // Base62 with the separators and, twice more, the prefixes' letters.
    let mut alphabet = BASE62.to_vec();
    alphabet.extend_from_slice(b"__..--akpatndilvesakpatndilves");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut text = String::with_capacity(128);
    let mut refused_by_checksum = 0;
    let started = Instant::now();
    for i in 0..1_000_000 {
        let which = i % 3;
        let format = &formats[which];
        text.clear();
        match i % 10 {
            // 64 random bytes over that alphabet.
            0..=3 => rng.push_from(&mut text, &alphabet, 64),
            // The shape of a token with a made-up prefix, id and secret.
            4..=6 => {
                let len = 1 + rng.below(10);
                rng.push_from(&mut text, b"akpatndilves_AKP", len);
                text.push('_');
                let len = 1 + rng.below(16);
                rng.push_from(&mut text, ID_BYTES, len);
                text.push('.');
                let len = 20 + rng.below(24);
                rng.push_from(&mut text, BASE62, len);
            }
            // A real prefix and the right shape: only the checksum can
            // refuse these.
            _ => {
                let prefix = prefixes[which][rng.below(prefixes[which].len())];
                text.push_str(prefix);
                text.push('_');
                let len = 1 + rng.below(16);
                rng.push_from(&mut text, BASE62, len);
                text.push('.');
                let len = 28 + rng.below(16);
                rng.push_from(&mut text, BASE62, len);
                assert_eq!(
                    format.parse(&text).err(),
                    Some(ParseError::BadChecksum),
                    "{text}"
                );
                refused_by_checksum += 1;
                text.push_str([" ", "\"", ".", "_", ""][rng.below(5)]);
            }
        }
        assert_eq!(format.find_tokens(&text).next(), None, "{text}");
    }
    assert_eq!(refused_by_checksum, 300_000);
    eprintln!(
        "a million random strings scanned in {:?}",
        started.elapsed()
    );
}

/// Runs the `scan` example on `input` with extra environment variables:
/// its exit code, standard output and standard error.
fn run_scan(input: &[u8], env: &[(&str, &str)]) -> (Option<i32>, Vec<u8>, String) {
    let mut child = Command::new(common::example::example_binary("scan"))
        .env_remove("SCAN_PREFIXES")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the scan example");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: the example's output may fill its pipe first.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the example's output");
    // It may exit before reading everything (a bad SCAN_PREFIXES).
    let _ = writer.join().unwrap();
    (
        output.status.code(),
        output.stdout,
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn the_scan_example_masks_keys_names_them_and_fails() {
    let format = KeyFormat::default();
    let org = format.mint(KeyKind::Organization, None).unwrap();
    let pat = format.mint(KeyKind::Personal, None).unwrap();
    let (org_token, pat_token) = (org.token.expose_secret(), pat.token.expose_secret());
    let last = if org_token.ends_with('x') { 'y' } else { 'x' };
    let look_alike = format!("{}{last}", &org_token[..org_token.len() - 1]);
    let long_line = format!("{}{pat_token}", "lorem ipsum ".repeat(20_000));
    let mut input = format!(
        "first line\nAuthorization: Bearer {org_token}\nnot a key: {look_alike}\n{{\"pat\":\"{pat_token}\"}}\n{long_line}\n"
    )
    .into_bytes();
    input.extend_from_slice(b"\xff\xfe not UTF-8, last line without newline ");
    input.extend_from_slice(org_token.as_bytes());

    let (code, stdout, stderr) = run_scan(&input, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = String::from_utf8_lossy(&input)
        .replace(org_token, &format!("ak_{}.****", org.id))
        .replace(pat_token, &format!("pat_{}.****", pat.id));
    assert_eq!(String::from_utf8_lossy(&stdout), expected);
    assert!(stdout.starts_with(b"first line\n"));
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("line 2: ak key {}", org.id),
            format!("line 4: pat key {}", pat.id),
            format!("line 5: pat key {}", pat.id),
            format!("line 6: ak key {}", org.id),
            "scan: 4 key(s) found; revoke them".to_owned(),
        ]
    );
    for token in [org_token, pat_token] {
        let secret = &token[token.find('.').unwrap() + 1..];
        assert!(!stderr.contains(secret));
        assert!(!String::from_utf8_lossy(&stdout).contains(secret));
    }
}

#[test]
fn the_scan_example_passes_text_without_keys_through() {
    let format = KeyFormat::default();
    let minted = format.mint(KeyKind::Organization, None).unwrap();
    let token = minted.token.expose_secret();
    // The token with its last character changed: its checksum fails.
    let last = if token.ends_with('x') { "y" } else { "x" };
    let look_alike = format!("{}{last}", &token[..token.len() - 1]);
    let input = format!(
        "nothing here\nak_abc.{} and {} and sk_live_123\n日本語 ✓",
        "a".repeat(30),
        look_alike
    );
    let (code, stdout, stderr) = run_scan(input.as_bytes(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, input.as_bytes());
    assert_eq!(stderr, "");
    let (code, stdout, _) = run_scan(b"", &[]);
    assert_eq!((code, stdout), (Some(0), Vec::new()));
}

#[test]
fn the_scan_example_takes_custom_prefixes() {
    let format =
        KeyFormat::new().prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live);
    let minted = format
        .mint(KeyKind::Workspace, Some(Environment::Live))
        .unwrap();
    let input = format!("key {}\n", minted.token.expose_secret());
    let (code, _, _) = run_scan(input.as_bytes(), &[]);
    assert_eq!(code, Some(0), "not a default prefix");
    let (code, stdout, stderr) = run_scan(input.as_bytes(), &[("SCAN_PREFIXES", "x, andi_live")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout,
        format!("key andi_live_{}.****\n", minted.id).into_bytes()
    );
    let (code, _, stderr) = run_scan(input.as_bytes(), &[("SCAN_PREFIXES", "bad-prefix")]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("\"bad-prefix\" is not a key prefix"),
        "{stderr}"
    );
}

#[cfg(feature = "tracing-subscriber")]
mod tracing_writer {
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    use tower_keyauth::KeyFormat;
    use tower_keyauth::ids::KeyKind;
    use tower_keyauth::scan::RedactingWriter;

    /// A log kept in memory, shared with the test.
    #[derive(Clone, Default)]
    struct SharedLog(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedLog {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keys_logged_through_tracing_are_masked() {
        let format = KeyFormat::default();
        let minted = format.mint(KeyKind::Organization, None).unwrap();
        let token = minted.token.expose_secret();
        let log = SharedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(RedactingWriter::new(format, move || writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(token, "request with Authorization: Bearer {token}");
            tracing::warn!(
                "a long event that fills the buffer: {}{token}",
                "lorem ipsum ".repeat(2_000)
            );
            tracing::error!(header = ?format!("Bearer {token}"), "in a Debug field");
        });

        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let masked = format!("ak_{}.****", minted.id);
        assert_eq!(logged.matches(&masked).count(), 4, "{logged}");
        assert!(!logged.contains(&token[token.find('.').unwrap() + 1..]));
        assert_eq!(logged.lines().count(), 3);
        assert!(logged.contains("INFO") && logged.contains("in a Debug field"));
    }
}
