//! `examples/grpc/demo.proto` and the hand-written messages of
//! `examples/grpc/demo.rs` describe the same wire format. The .proto is
//! compiled in pure Rust (protox, so no protoc is needed) and every
//! hand-written message is compared with its .proto type on the wire: a
//! field renumbered, retyped, added, removed, made optional or repeated on
//! one side only, or a method path changed, fails here.

#[path = "../examples/grpc/demo.rs"]
mod demo;

use std::collections::BTreeSet;
use std::fmt::Debug;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tonic::server::NamedService;

const PACKAGE: &str = "keyauth.demo";

fn pool() -> DescriptorPool {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grpc");
    protox::Compiler::new([dir])
        .and_then(|mut compiler| {
            compiler
                .open_file("demo.proto")
                .map(|c| c.descriptor_pool())
        })
        .unwrap_or_else(|e| panic!("examples/grpc/demo.proto does not compile: {e:?}"))
}

fn message(pool: &DescriptorPool, name: &str) -> MessageDescriptor {
    let full = format!("{PACKAGE}.{name}");
    pool.get_message_by_name(&full)
        .unwrap_or_else(|| panic!("demo.proto has no message {full}"))
}

fn string(value: &str) -> Value {
    Value::String(value.to_owned())
}

/// Checks the hand-written type `M` against .proto message `name`.
///
/// `full` has every field set to a value distinct from the default and
/// from every other field, so a field that lands under another name or
/// number shows. `expected` names, for every .proto field, the value it
/// must decode to. `presence` has every `Option` field set to
/// `Some(default)` and everything else at its default: only fields with
/// explicit presence are then on the wire, which tells `optional` apart on
/// both sides.
fn check_message<M>(
    pool: &DescriptorPool,
    name: &str,
    full: M,
    expected: &[(&str, Value)],
    presence: M,
) where
    M: Message + Default + PartialEq + Debug,
{
    let descriptor = message(pool, name);

    let proto_fields: BTreeSet<String> = descriptor.fields().map(|f| f.name().to_owned()).collect();
    let mapped: BTreeSet<String> = expected.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        proto_fields, mapped,
        "{name}: the .proto fields and the fields this test maps differ"
    );

    let bytes = full.encode_to_vec();
    let decoded = DynamicMessage::decode(descriptor.clone(), bytes.as_slice())
        .unwrap_or_else(|e| panic!("{name}: {full:?} does not decode as the .proto type: {e}"));
    let unknown: Vec<u32> = decoded.unknown_fields().map(|f| f.number()).collect();
    assert!(
        unknown.is_empty(),
        "{name}: the hand-written message sends field numbers {unknown:?} that demo.proto lacks"
    );
    for (field, value) in expected {
        let got = decoded.get_field_by_name(field).expect("mapped above");
        assert_eq!(
            &*got, value,
            "{name}.{field}: the hand-written value arrives as {got:?} (field number or type differs)"
        );
        assert!(
            decoded.has_field_by_name(field),
            "{name}.{field} is not set"
        );
    }
    let back = M::decode(decoded.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("{name}: the .proto encoding does not decode by hand: {e}"));
    assert_eq!(
        back, full,
        "{name}: the round trip through the .proto type changed it"
    );

    let bytes = presence.encode_to_vec();
    let decoded = DynamicMessage::decode(descriptor.clone(), bytes.as_slice())
        .unwrap_or_else(|e| panic!("{name}: {presence:?} does not decode: {e}"));
    for field in descriptor.fields() {
        if field.supports_presence() && !field.is_list() {
            assert!(
                decoded.has_field(&field),
                "{name}.{}: optional in demo.proto, but not an Option by hand",
                field.name()
            );
        }
    }
    // A hand-written `Option` that the .proto declares without presence
    // is sent as `Some(default)` yet dropped by the .proto encoding.
    assert_eq!(
        decoded.encode_to_vec(),
        bytes,
        "{name}: a field is an Option by hand but not optional in demo.proto"
    );
}

#[test]
fn the_proto_declares_exactly_the_hand_written_messages() {
    let pool = pool();
    let messages: BTreeSet<String> = pool
        .all_messages()
        .map(|m| m.full_name().to_owned())
        .collect();
    let hand_written: BTreeSet<String> = [
        "WhoamiRequest",
        "WhoamiReply",
        "CreateObjectRequest",
        "ObjectReply",
    ]
    .iter()
    .map(|name| format!("{PACKAGE}.{name}"))
    .collect();
    assert_eq!(messages, hand_written);
}

#[test]
fn whoami_request_matches() {
    check_message(
        &pool(),
        "WhoamiRequest",
        demo::WhoamiRequest {},
        &[],
        demo::WhoamiRequest {},
    );
}

#[test]
fn whoami_reply_matches() {
    check_message(
        &pool(),
        "WhoamiReply",
        demo::WhoamiReply {
            key_id: "key-id-1".into(),
            kind: "kind-2".into(),
            org: "org-3".into(),
            workspace: Some("workspace-4".into()),
            user: Some("user-5".into()),
            scopes: vec!["scope-6a".into(), "scope-6b".into()],
        },
        &[
            ("key_id", string("key-id-1")),
            ("kind", string("kind-2")),
            ("org", string("org-3")),
            ("workspace", string("workspace-4")),
            ("user", string("user-5")),
            (
                "scopes",
                Value::List(vec![string("scope-6a"), string("scope-6b")]),
            ),
        ],
        demo::WhoamiReply {
            workspace: Some(String::new()),
            user: Some(String::new()),
            ..Default::default()
        },
    );
}

#[test]
fn create_object_request_matches() {
    check_message(
        &pool(),
        "CreateObjectRequest",
        demo::CreateObjectRequest {
            name: "name-1".into(),
        },
        &[("name", string("name-1"))],
        demo::CreateObjectRequest::default(),
    );
}

#[test]
fn object_reply_matches() {
    check_message(
        &pool(),
        "ObjectReply",
        demo::ObjectReply {
            name: "name-1".into(),
            org: "org-2".into(),
            created_by: "created-by-3".into(),
        },
        &[
            ("name", string("name-1")),
            ("org", string("org-2")),
            ("created_by", string("created-by-3")),
        ],
        demo::ObjectReply::default(),
    );
}

/// Every service of the .proto, as (name, [(method path, input, output)]).
type Services = Vec<(String, Vec<(String, String, String)>)>;

fn services(pool: &DescriptorPool) -> Services {
    pool.services()
        .map(|service| {
            let methods = service
                .methods()
                .map(|method| {
                    assert!(
                        !method.is_client_streaming() && !method.is_server_streaming(),
                        "{} is streaming; the hand-written services are unary",
                        method.full_name()
                    );
                    (
                        format!("/{}/{}", service.full_name(), method.name()),
                        method.input().full_name().to_owned(),
                        method.output().full_name().to_owned(),
                    )
                })
                .collect();
            (service.full_name().to_owned(), methods)
        })
        .collect()
}

#[test]
fn the_services_have_the_hand_written_paths_and_types() {
    let message = |name: &str| format!("{PACKAGE}.{name}");
    assert_eq!(
        services(&pool()),
        vec![
            (
                demo::WhoamiServer::NAME.to_owned(),
                vec![(
                    demo::WHOAMI_GET.to_owned(),
                    message("WhoamiRequest"),
                    message("WhoamiReply"),
                )],
            ),
            (
                demo::ObjectsServer::NAME.to_owned(),
                vec![(
                    demo::OBJECTS_CREATE.to_owned(),
                    message("CreateObjectRequest"),
                    message("ObjectReply"),
                )],
            ),
        ]
    );
}
