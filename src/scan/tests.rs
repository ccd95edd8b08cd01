use std::io::{self, Write};

use super::*;
use crate::format::Environment;
use crate::ids::KeyKind;

fn mint(format: &KeyFormat, kind: KeyKind, environment: Option<Environment>) -> (String, KeyId) {
    let minted = format.mint(kind, environment).unwrap();
    (minted.token.expose_secret().to_owned(), minted.id)
}

/// A token of any shape `parse` accepts: `body` and its checksum.
fn with_checksum(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("{body}{}", str::from_utf8(&digits).unwrap())
}

/// No findings.
const NONE: [(usize, usize); 0] = [];

/// The (start, end) of each token found.
fn ranges(format: &KeyFormat, text: &str) -> Vec<(usize, usize)> {
    format
        .find_tokens(text)
        .map(|found| (found.range.start, found.range.end))
        .collect()
}

#[test]
fn a_forged_checksum_is_what_parse_accepts() {
    let token = with_checksum(&format!("ak_abc.{}", "s".repeat(22)));
    assert_eq!(
        KeyFormat::default().parse(&token).unwrap().key_id(),
        Some(KeyId::from("abc"))
    );
}

#[test]
fn tokens_are_found_in_whatever_surrounds_them() {
    let format = KeyFormat::default();
    let (token, id) = mint(&format, KeyKind::Organization, None);
    let surroundings = [
        "{}",
        "Authorization: Bearer {}",
        "\"{}\"",
        "'{}'",
        "`{}`",
        "https://api.example.com/v1?api-key={}&page=2",
        r#"{"token":"{}","n":1}"#,
        r#"{"msg":"key:\n{}\t"}"#,
        "Bearer%20{}%0A",
        "key={};",
        "({})",
        "<{}>",
        "KEY_{}_OLD",
        "-{}-",
        "sentence ends with {}.",
        "x{}",
        "日本語{}é",
        "🔑{}🔑",
        "\u{a0}{}\u{2028}",
    ];
    for surrounding in surroundings {
        let text = surrounding.replacen("{}", &token, 1);
        let start = surrounding.find("{}").unwrap();
        let found: Vec<_> = format.find_tokens(&text).collect();
        assert_eq!(found.len(), 1, "{surrounding}");
        assert_eq!(found[0].range, start..start + token.len(), "{surrounding}");
        assert_eq!(found[0].key_id, id);
        assert_eq!(found[0].prefix, "ak");
        assert_eq!(
            format.redact(&text),
            surrounding.replacen("{}", &format!("ak_{id}.****"), 1)
        );
    }
}

#[test]
fn a_token_with_letters_or_digits_glued_after_it_is_still_found() {
    let format = KeyFormat::default();
    let (token, _) = mint(&format, KeyKind::Personal, None);
    for after in ["x", "0", "Z", "xyz9"] {
        assert_eq!(
            ranges(&format, &format!("{token}{after} rest")),
            [(0, token.len())],
            "{after:?}"
        );
    }
    for after in ["_", "-", ".", ".x", "é", " ", "\n", "\\n", "%20"] {
        assert_eq!(
            ranges(&format, &format!("{token}{after}")),
            [(0, token.len())],
            "{after:?}"
        );
    }
}

#[test]
fn several_tokens_on_a_line_are_found_in_order() {
    let format = KeyFormat::default();
    let (a, a_id) = mint(&format, KeyKind::Organization, None);
    let (b, b_id) = mint(&format, KeyKind::Personal, None);
    let (c, c_id) = mint(&format, KeyKind::Workspace, None);
    let text = format!("a={a} b={b},{c}_{a}");
    let ids: Vec<_> = format.find_tokens(&text).map(|f| f.key_id).collect();
    assert_eq!(
        ids,
        [a_id.clone(), b_id.clone(), c_id.clone(), a_id.clone()]
    );
    assert_eq!(
        format.redact(&text),
        format!("a=ak_{a_id}.**** b=pat_{b_id}.****,ak_{c_id}.****_ak_{a_id}.****")
    );
}

#[test]
fn look_alikes_are_not_reported() {
    let format = KeyFormat::default();
    let (token, _) = mint(&format, KeyKind::Organization, None);
    for position in 0..token.len() {
        for replacement in [b'a', b'Z', b'7', b'.', b'_', b'-'] {
            let mut bytes = token.clone().into_bytes();
            if bytes[position] == replacement {
                continue;
            }
            bytes[position] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(ranges(&format, &changed), NONE, "{changed}");
        }
    }
    for look_alike in [
        token.to_uppercase(),
        token.replacen("ak_", "sk_", 1),
        token.replacen("ak_", "ak-", 1),
        token.replacen('.', "_", 1),
        token[..token.len() - 1].to_owned(),
    ] {
        assert_eq!(ranges(&format, &look_alike), NONE, "{look_alike}");
    }
}

#[test]
fn tokens_overlapping_look_alikes_are_found() {
    let format = KeyFormat::default();
    let (token, _) = mint(&format, KeyKind::Organization, None);
    let len = token.len();
    // A prefix before the prefix, a look-alike glued in front, the same
    // token twice with nothing between (the first runs into the second).
    assert_eq!(ranges(&format, &format!("ak_{token}")), [(3, 3 + len)]);
    assert_eq!(ranges(&format, &format!("pat_ak_{token}")), [(7, 7 + len)]);
    assert_eq!(
        ranges(&format, &format!("ak_x.{token}")),
        [(5, 5 + len)],
        "after a dot"
    );
    assert_eq!(
        ranges(&format, &format!("{token}{token}")),
        [(0, len), (len, 2 * len)]
    );
    assert_eq!(
        ranges(&format, &format!("{token}.{token}")),
        [(0, len), (len + 1, 2 * len + 1)]
    );
}

#[test]
fn custom_prefixes_and_environments_are_told_apart() {
    let format = KeyFormat::new()
        .prefix("andi", KeyKind::Organization)
        .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
        .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test);
    let (org, org_id) = mint(&format, KeyKind::Organization, None);
    let (live, live_id) = mint(&format, KeyKind::Workspace, Some(Environment::Live));
    let (test, _) = mint(&format, KeyKind::Workspace, Some(Environment::Test));
    let text = format!("{live} andi_{org} {test}");
    let found: Vec<_> = format.find_tokens(&text).collect();
    assert_eq!(found.len(), 3);
    assert_eq!((found[0].prefix, &found[0].key_id), ("andi_live", &live_id));
    assert_eq!(found[0].environment, Some(Environment::Live));
    assert!(found[0].accepts(KeyKind::Workspace) && !found[0].accepts(KeyKind::Organization));
    assert_eq!((found[1].prefix, &found[1].key_id), ("andi", &org_id));
    assert_eq!(found[1].range.start, live.len() + 6);
    assert_eq!(found[1].environment, None);
    assert_eq!(found[2].environment, Some(Environment::Test));
    // Another format's tokens are not this one's.
    assert_eq!(ranges(&KeyFormat::default(), &text), NONE);
}

#[test]
fn opaque_tokens_are_not_reported() {
    let format = KeyFormat::default().accept_opaque();
    let (token, _) = mint(&format, KeyKind::Organization, None);
    let text = format!("legacy-key-1234 x_abc.{} {token}", "a".repeat(40));
    assert_eq!(
        ranges(&format, &text),
        [(text.len() - token.len(), text.len())]
    );
}

#[test]
fn tokens_up_to_the_longest_are_found() {
    let format = KeyFormat::new().prefix(&"p".repeat(32), KeyKind::Organization);
    let body = |secret_len: usize| {
        format!(
            "{}_{}.{}",
            "p".repeat(32),
            "i".repeat(64),
            "s".repeat(secret_len)
        )
    };
    let longest = with_checksum(&body(MAX_TOKEN_LEN - 98 - 6));
    assert_eq!(longest.len(), MAX_TOKEN_LEN);
    assert_eq!(
        ranges(&format, &format!(" {longest} ")),
        [(1, 1 + MAX_TOKEN_LEN)]
    );
    let too_long = with_checksum(&body(MAX_TOKEN_LEN - 98 - 5));
    assert!(format.parse(&too_long).is_ok());
    assert_eq!(ranges(&format, &too_long), NONE);
    // A 400-character secret fits.
    let format = KeyFormat::default().secret_length(400);
    let (token, _) = mint(&format, KeyKind::Organization, None);
    assert_eq!(ranges(&format, &token), [(0, token.len())]);
}

#[test]
fn hostile_text_is_scanned_in_one_pass() {
    // Each would take minutes if a candidate rescanned what others did.
    let format = KeyFormat::default();
    let secret = "s".repeat(40);
    let mega = 1 << 20;
    for text in [
        "ak_a.".repeat(mega / 5),
        ".".repeat(mega),
        "_".repeat(mega),
        "a".repeat(mega),
        format!("ak_{}.{}", "a".repeat(mega / 2), "b".repeat(mega / 2)),
        format!("ak_a.{secret}-").repeat(mega / 48),
        format!("{}_a.{secret}.", "ak_".repeat(11)).repeat(mega / 80),
        format!("{}.{secret}", "a-".repeat(32)).repeat(mega / 100),
    ] {
        assert_eq!(ranges(&format, &text), NONE);
    }
}

#[test]
fn findings_show_no_text() {
    let format = KeyFormat::default();
    let (token, _) = mint(&format, KeyKind::Organization, None);
    let secret = &token[token.find('.').unwrap() + 1..];
    let text = format!("{token} {token}");
    let mut findings = format.find_tokens(&text);
    let first = findings.next().unwrap();
    for debug in [format!("{first:?}"), format!("{findings:?}")] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

/// Writes `text` through a redactor in pieces of `piece` bytes.
fn through_redactor(
    format: &KeyFormat,
    text: &[u8],
    piece: usize,
) -> (Vec<u8>, Vec<(u64, Range<usize>)>) {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut redactor = Redactor::with_callback(format, &mut out, |found: &Finding<'_>, line| {
        seen.push((line, found.range.clone()))
    });
    for chunk in text.chunks(piece) {
        redactor.write_all(chunk).unwrap();
    }
    redactor.finish().unwrap();
    drop(redactor);
    (out, seen)
}

#[test]
fn a_redactor_masks_tokens_cut_by_its_bound() {
    let format = KeyFormat::default();
    let (token, id) = mint(&format, KeyKind::Organization, None);
    // One long line with a token across every likely cut.
    let mut line = String::new();
    let mut starts = Vec::new();
    while line.len() < 40_000 {
        line.push_str(&"word ".repeat(37));
        starts.push(line.len());
        line.push_str(&token);
        line.push(' ');
    }
    let text = format!("first\n{line}\nlast {token}");
    let expected = format.redact(&text).into_owned();
    for piece in [1, 7, 100, 4096, 8191, 8192, 100_000] {
        let (out, seen) = through_redactor(&format, text.as_bytes(), piece);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "pieces of {piece}"
        );
        let mut wanted: Vec<_> = starts.iter().map(|&s| (2, s..s + token.len())).collect();
        wanted.push((3, 5..5 + token.len()));
        assert_eq!(seen, wanted, "pieces of {piece}");
    }
    assert!(expected.contains(&format!("ak_{id}.****")));
}

#[test]
fn a_redactor_holds_back_the_unfinished_line_only() {
    let format = KeyFormat::default();
    let (token, id) = mint(&format, KeyKind::Organization, None);
    let mut out = Vec::new();
    {
        let mut redactor = Redactor::new(&format, &mut out);
        write!(redactor, "one {token}\ntwo {}", &token[..10]).unwrap();
        redactor.flush().unwrap();
        assert!(format!("{redactor:?}").contains("held: 14"), "{redactor:?}");
        // Dropping it ends the text.
    }
    assert_eq!(
        out,
        format!("one ak_{id}.****\ntwo {}", &token[..10]).into_bytes()
    );
}

/// A writer that takes a few bytes, then fails.
struct Failing {
    taken: Vec<u8>,
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("full"));
        }
        let n = buf.len().min(self.budget).min(3);
        self.budget -= n;
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_fails_the_redactor_without_growing_it() {
    let format = KeyFormat::default();
    let mut inner = Failing {
        taken: Vec::new(),
        budget: 10,
    };
    let mut redactor = Redactor::new(&format, &mut inner);
    // The first line is taken; the writer fails part way through it.
    assert_eq!(redactor.write(b"0123456789abcdef\n").unwrap(), 17);
    for _ in 0..1000 {
        assert!(redactor.write(&[b'x'; 4096]).is_err());
    }
    assert!(format!("{redactor:?}").contains("unwritten: 7"));
    assert!(redactor.finish().is_err());
    drop(redactor);
    assert_eq!(inner.taken, b"0123456789");
}

#[test]
fn a_redactor_shows_no_text() {
    let format = KeyFormat::default();
    let (token, _) = mint(&format, KeyKind::Organization, None);
    let mut redactor = Redactor::new(&format, io::sink());
    write!(redactor, "{token}").unwrap();
    let debug = format!("{redactor:?}");
    assert!(!debug.contains(&token[3..]), "{debug}");
}
