//! A minimal HTTP/1.1 client over a raw TCP socket, for tests against a real
//! server on loopback. Raw, so that tests can also send bytes a polite
//! client would refuse to.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `head` (request line and headers, without the blank line), adds
/// `Connection: close` and the body's length, and reads the whole answer.
pub async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<RawReply> {
    let mut bytes = head.trim_end().as_bytes().to_vec();
    bytes.extend_from_slice(b"\r\nconnection: close\r\n");
    if !body.is_empty() {
        bytes.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    raw(addr, &bytes).await
}

/// Sends exactly `bytes` and reads until the server closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<RawReply> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("the server did not answer within 10 s"))??;
    parse(&answer)
}

fn parse(answer: &[u8]) -> std::io::Result<RawReply> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete response: {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(RawReply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `method path` with `Authorization: Bearer <token>` and, when there is a
/// body, a JSON content type.
pub async fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> RawReply {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}");
    if !body.is_empty() {
        head.push_str("\r\ncontent-type: application/json");
    }
    request(addr, &head, body.as_bytes()).await.unwrap()
}
