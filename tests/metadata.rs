//! Key metadata's own JSON check agrees with `serde_json` on what is one
//! JSON object within the bounds.

use proptest::prelude::*;
use tower_keyauth::metadata::KeyMetadata;

/// What `serde_json` makes of `text`, within the metadata's bounds.
fn serde_json_accepts(text: &str) -> bool {
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(members) => {
                1 + members.values().map(depth).max().unwrap_or(0)
            }
            _ => 0,
        }
    }
    text.len() <= KeyMetadata::MAX_BYTES
        && serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|value| value.is_object() && depth(&value) <= KeyMetadata::MAX_DEPTH)
}

/// JSON-ish text: the characters that matter to the grammar, often nested.
/// Exponents stay below 100: beyond 10³⁰⁰ the check refuses numbers that
/// `serde_json` still reads (`a_number_too_large_for_a_float_is_refused`).
fn jsonish() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"a\"".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("\\u00e9".to_owned()),
        Just("\\ud83d".to_owned()),
        Just("\\ude00".to_owned()),
        Just(" ".to_owned()),
        Just("true".to_owned()),
        Just("nul".to_owned()),
        Just("null".to_owned()),
        "-?[0-9]{1,3}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
        "[a-z\u{1}\u{7f}é]{1,2}",
    ];
    prop::collection::vec(atoms, 0..40).prop_map(|parts| parts.concat())
}

/// Well-formed objects, to check that the check does not refuse them.
fn object() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(".{0,6}", value, 0..6)
        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_serde_json_on_jsonish_text(text in jsonish()) {
        prop_assert_eq!(KeyMetadata::from_json(&text).is_ok(), serde_json_accepts(&text), "{:?}", text);
    }

    #[test]
    fn agrees_with_serde_json_inside_an_object(text in jsonish()) {
        let wrapped = format!("{{\"k\":{text}}}");
        prop_assert_eq!(KeyMetadata::from_json(&wrapped).is_ok(), serde_json_accepts(&wrapped), "{:?}", wrapped);
    }

    #[test]
    fn accepts_every_object_serde_json_writes(text in object()) {
        prop_assert_eq!(KeyMetadata::from_json(&text).is_ok(), text.len() <= KeyMetadata::MAX_BYTES, "{:?}", text);
    }
}

#[test]
fn a_number_too_large_for_a_float_is_refused() {
    assert!(serde_json::from_str::<serde_json::Value>(r#"{"n":1e400}"#).is_err());
    assert!(KeyMetadata::from_json(r#"{"n":1e400}"#).is_err());
    assert!(KeyMetadata::from_json(r#"{"n":123456789e295}"#).is_err());
    assert!(KeyMetadata::from_json(r#"{"n":-1.5e299,"m":1e-400}"#).is_ok());
}
