//! Hostile requests against a real axum server over TCP, sent as raw bytes
//! (most of them no polite HTTP client would send). Each gets its
//! documented 4xx, from hyper when the bytes are not HTTP at all, from the
//! layer otherwise, and the server keeps serving.

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use common::client::{RawReply, raw};
use common::*;
use tower_keyauth::{Extract, KeyAuthLayer, Principal};

/// Who answers a case: hyper refuses bytes that are not HTTP before any
/// service runs; everything else reaches the layer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum By {
    Hyper,
    Layer,
    Handler,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    by: By,
    /// For the layer's answers, the JSON `error`.
    error: Option<&'static str>,
}

fn get_request(target: &str, headers: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    for header in headers {
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"connection: close\r\n\r\n");
    bytes
}

fn percent_encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn serve() -> (SocketAddr, Demo) {
    let demo = demo().await;
    let app = Router::new()
        .route(
            "/v1/whoami",
            get(|p: Principal| async move { p.org().to_string() }),
        )
        .route("/health/", get(|| async { "ok" }))
        .layer(
            KeyAuthLayer::new(demo.store.clone())
                .extract(Extract::bearer_api_key_or_query())
                .public("/health/"),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, demo)
}

fn cases(demo: &Demo) -> Vec<Case> {
    let key = demo.org_key.as_str();
    let other = demo.read_key.as_str();
    let auth = |value: &[u8]| [b"authorization: ".as_slice(), value].concat();
    let bearer_with = |inject: &[u8]| {
        let (head, tail) = key.split_at(10);
        auth(
            &[
                b"Bearer ".as_slice(),
                head.as_bytes(),
                inject,
                tail.as_bytes(),
            ]
            .concat(),
        )
    };
    let lookalike = key.replacen('a', "\u{0430}", 1); // Cyrillic а
    let fullwidth = key.replacen('k', "\u{ff4b}", 1); // fullwidth ｋ
    let long_value = format!("Bearer {}", "A".repeat(100 * 1024));
    let long_query = format!("/v1/whoami?api-key={key}&pad={}", "x".repeat(32 * 1024));
    let long_query_key = format!("/v1/whoami?api-key={}", "k".repeat(32 * 1024));
    let twice = format!(
        "/v1/whoami?api-key={}",
        percent_encode_all(&percent_encode_all(key))
    );
    let once = format!("/v1/whoami?api-key={}", percent_encode_all(key));
    let query_lookalike = format!("/v1/whoami?api-key={}", percent_encode_all(&lookalike));
    let many_headers: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("x-filler-{i}: {i}").into_bytes())
        .collect();
    let mut many: Vec<&[u8]> = many_headers.iter().map(Vec::as_slice).collect();
    let bearer = auth(format!("Bearer {key}").as_bytes());
    many.push(&bearer);

    let layer = |name, request, status, error| Case {
        name,
        request,
        status,
        by: By::Layer,
        error: Some(error),
    };
    let hyper = |name, request, status| Case {
        name,
        request,
        status,
        by: By::Hyper,
        error: None,
    };
    let handler = |name, request| Case {
        name,
        request,
        status: 200,
        by: By::Handler,
        error: None,
    };
    vec![
        // Bytes that are not HTTP: hyper answers before any service runs.
        hyper(
            "NUL in a header value",
            get_request("/v1/whoami", &[&bearer_with(b"\0")]),
            400,
        ),
        hyper(
            "bare CR in a header value",
            get_request("/v1/whoami", &[&bearer_with(b"\r")]),
            400,
        ),
        hyper(
            "LF splitting a header value",
            get_request("/v1/whoami", &[&bearer_with(b"\n")]),
            400,
        ),
        hyper(
            "DEL in a header value",
            get_request("/v1/whoami", &[&bearer_with(b"\x7f")]),
            400,
        ),
        hyper(
            "NUL in the path",
            get_request("/v1/who\0ami", &[&bearer]),
            400,
        ),
        hyper(
            "more than 100 headers",
            get_request("/v1/whoami", &many),
            431,
        ),
        // Bytes that are HTTP but not a credential: the layer answers 400.
        layer(
            "high bytes in a header value",
            get_request("/v1/whoami", &[&bearer_with(b"\xff\xfe")]),
            400,
            "invalid_request",
        ),
        layer(
            "a 100 KiB Authorization header",
            get_request("/v1/whoami", &[&auth(long_value.as_bytes())]),
            400,
            "invalid_request",
        ),
        layer(
            "a 32 KiB query key",
            get_request(&long_query_key, &[]),
            400,
            "invalid_request",
        ),
        layer(
            "Authorization in three casings",
            get_request(
                "/v1/whoami",
                &[
                    bearer.as_slice(),
                    format!("Authorization: Bearer {key}").as_bytes(),
                    format!("AUTHORIZATION: Bearer {key}").as_bytes(),
                ],
            ),
            400,
            "invalid_request",
        ),
        layer(
            "x-api-key twice in two casings",
            get_request(
                "/v1/whoami",
                &[
                    format!("x-api-key: {key}").as_bytes(),
                    format!("X-API-KEY: {key}").as_bytes(),
                ],
            ),
            400,
            "invalid_request",
        ),
        layer(
            "Bearer then a tab",
            get_request("/v1/whoami", &[&auth(format!("Bearer\t{key}").as_bytes())]),
            400,
            "invalid_request",
        ),
        layer(
            "a tab inside the token",
            get_request("/v1/whoami", &[&bearer_with(b"\t")]),
            400,
            "invalid_request",
        ),
        layer(
            "a Cyrillic look-alike",
            get_request(
                "/v1/whoami",
                &[&auth(format!("Bearer {lookalike}").as_bytes())],
            ),
            400,
            "invalid_request",
        ),
        layer(
            "a fullwidth look-alike",
            get_request(
                "/v1/whoami",
                &[&auth(format!("Bearer {fullwidth}").as_bytes())],
            ),
            400,
            "invalid_request",
        ),
        layer(
            "a look-alike in the query",
            get_request(&query_lookalike, &[]),
            400,
            "invalid_request",
        ),
        layer(
            "a different key in query and header",
            get_request(&format!("/v1/whoami?api-key={other}"), &[&bearer]),
            400,
            "invalid_request",
        ),
        layer(
            "two api-key parameters",
            get_request(&format!("/v1/whoami?api-key={key}&api-key={key}"), &[]),
            400,
            "invalid_request",
        ),
        layer(
            "Bearer with nothing after it",
            get_request("/v1/whoami", &[b"authorization: Bearer"]),
            400,
            "invalid_request",
        ),
        // Well-formed but not a key: 401.
        layer(
            "a query key encoded twice",
            get_request(&twice, &[]),
            401,
            "invalid_token",
        ),
        layer(
            "a broken percent escape",
            get_request("/v1/whoami?api-key=%ZZ", &[]),
            401,
            "invalid_token",
        ),
        layer(
            "an Authorization header of spaces",
            get_request("/v1/whoami", &[b"authorization:    "]),
            401,
            "missing_credentials",
        ),
        layer(
            "HTTP/1.0 without a key",
            b"GET /v1/whoami HTTP/1.0\r\n\r\n".to_vec(),
            401,
            "missing_credentials",
        ),
        layer(
            "a 32 KiB query without a valid key",
            get_request(&format!("/v1/whoami?pad={}", "x".repeat(32 * 1024)), &[]),
            401,
            "missing_credentials",
        ),
        // Unusual but valid: the handler answers.
        handler(
            "HTTP/1.0 with a key",
            format!("GET /v1/whoami HTTP/1.0\r\nauthorization: Bearer {key}\r\n\r\n").into_bytes(),
        ),
        handler(
            "the same key in query and header",
            get_request(&format!("/v1/whoami?api-key={key}"), &[&bearer]),
        ),
        handler("a query key encoded once", get_request(&once, &[])),
        handler(
            "a long query beside a valid key",
            get_request(&long_query, &[]),
        ),
        handler(
            "an absolute-form target",
            get_request(&format!("http://localhost/v1/whoami?api-key={key}"), &[]),
        ),
        handler(
            "lowercase scheme and many spaces",
            get_request(
                "/v1/whoami",
                &[&auth(format!("bearer      {key}").as_bytes())],
            ),
        ),
        handler(
            "a public path with garbage credentials",
            get_request("/health/", &[&auth(b"Bearer \xff")]),
        ),
    ]
}

/// Sends `bytes` and reads the answer. When hyper refuses a request it has
/// not read to the end, it closes the connection with bytes still unread,
/// and the kernel may then reset it before the client reads the answer; so
/// a reset is retried (the answer itself is checked by the caller).
async fn answer(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<RawReply> {
    let mut attempts = 0;
    loop {
        match raw(addr, bytes).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset && attempts < 20 => {
                attempts += 1;
            }
            other => return other,
        }
    }
}

fn describe(reply: &RawReply) -> String {
    format!(
        "{} {:?}",
        reply.status,
        reply.body.chars().take(200).collect::<String>()
    )
}

#[tokio::test]
async fn hostile_requests_get_their_documented_answers_and_the_server_stays_up() {
    let (addr, demo) = serve().await;
    let secret = demo.org_key.split_once('.').unwrap().1.to_owned();
    for case in cases(&demo) {
        let reply = answer(addr, &case.request)
            .await
            .unwrap_or_else(|error| panic!("{}: no answer: {error}", case.name));
        assert_eq!(
            reply.status,
            case.status,
            "{}: {}",
            case.name,
            describe(&reply)
        );
        match case.by {
            By::Layer => {
                let body = reply.json();
                assert_eq!(body["error"], case.error.unwrap(), "{}", case.name);
            }
            By::Handler => assert!(
                reply.body == "acme" || reply.body == "ok",
                "{}: {}",
                case.name,
                describe(&reply)
            ),
            By::Hyper => assert!(
                reply.body.is_empty() || !reply.body.contains("acme"),
                "{}",
                case.name
            ),
        }
        assert!(
            !reply.body.contains(&secret),
            "{}: the secret came back",
            case.name
        );
        // After each case, a plain valid request still works.
        let check = raw(
            addr,
            &get_request(
                "/v1/whoami",
                &[format!("authorization: Bearer {}", demo.org_key).as_bytes()],
            ),
        )
        .await
        .unwrap_or_else(|error| panic!("the server is down after {}: {error}", case.name));
        assert_eq!(
            check.status,
            200,
            "after {}: {}",
            case.name,
            describe(&check)
        );
    }
}

#[tokio::test]
async fn a_flood_of_hostile_requests_at_once_leaves_the_server_up() {
    let (addr, demo) = serve().await;
    let cases: Vec<(u16, Vec<u8>)> = cases(&demo)
        .into_iter()
        .map(|case| (case.status, case.request))
        .collect();
    let tasks: Vec<_> = cases
        .iter()
        .cycle()
        .take(300)
        .cloned()
        .map(|(status, request)| {
            tokio::spawn(async move { answer(addr, &request).await.map(|r| (status, r.status)) })
        })
        .collect();
    for task in tasks {
        let (expected, got) = task.await.unwrap().unwrap();
        assert_eq!(got, expected);
    }
    let check = raw(
        addr,
        &get_request(
            "/v1/whoami",
            &[format!("authorization: Bearer {}", demo.org_key).as_bytes()],
        ),
    )
    .await
    .unwrap();
    assert_eq!(check.status, 200);
}
