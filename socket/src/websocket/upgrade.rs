//! The WebSocket opening handshake, server side (RFC 6455 4.2): the HTTP/1.1
//! upgrade request read into one small buffer and parsed with httparse,
//! then answered `101 Switching Protocols` or refused with a status and a
//! line of text.
//!
//! Our own rather than tungstenite's: its handshake allocates a 4 KiB read
//! chunk, two header maps and a response for every connection, and those
//! short-lived buffers, interleaved with what connections keep, left the
//! allocator holding more memory per idle WebSocket connection than per
//! MQTT one (docs/BENCHMARKS.md). Here a typical request costs one buffer of
//! 512 bytes and its answer one line of text.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest upgrade request read.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The most headers an upgrade request may carry.
const MAX_HEADERS: usize = 124;
/// What a read reserves at a time.
const READ_CHUNK: usize = 512;

/// An upgrade request, as far as the Socket needs it.
#[derive(Debug)]
pub(crate) struct UpgradeRequest {
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) authorization: Option<String>,
    /// Whether the client offers the subprotocol `mqtt`.
    pub(crate) offers_mqtt: bool,
    /// `Sec-WebSocket-Accept` for the client's key.
    pub(crate) accept: String,
    /// Bytes the client sent after its request. RFC 6455 4.1 says it must
    /// wait for the answer; what an impatient client sent is kept anyway.
    pub(crate) early: BytesMut,
}

/// Why there is no upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UpgradeError {
    /// The connection ended (or failed) before a whole request came.
    Closed,
    /// More than [`MAX_REQUEST_BYTES`] or [`MAX_HEADERS`].
    TooLarge,
    /// Not a WebSocket upgrade request; says what is wrong.
    Malformed(&'static str),
}

/// Reads one upgrade request from `stream`.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<UpgradeRequest, UpgradeError> {
    let mut buf = BytesMut::new();
    loop {
        if buf.len() >= MAX_REQUEST_BYTES {
            return Err(UpgradeError::TooLarge);
        }
        buf.reserve(READ_CHUNK);
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(UpgradeError::Closed),
            Ok(_) => {}
        }
        if let Some(request) = parse(&mut buf)? {
            return Ok(request);
        }
    }
}

/// The request in `buf`, once it is all there.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<UpgradeRequest>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpgradeError::TooLarge),
        Err(_) => return Err(UpgradeError::Malformed("not an HTTP/1.1 request")),
    };
    if request.method != Some("GET") {
        return Err(UpgradeError::Malformed("a WebSocket upgrade is a GET"));
    }
    if request.version != Some(1) {
        return Err(UpgradeError::Malformed("a WebSocket upgrade is HTTP/1.1"));
    }
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |header| header.name.eq_ignore_ascii_case(name))
            .filter_map(|header| std::str::from_utf8(header.value).ok())
    };
    let lists = |name: &'static str, token: &str| {
        values(name)
            .flat_map(|value| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    };
    if !lists("upgrade", "websocket") {
        return Err(UpgradeError::Malformed("no Upgrade: websocket header"));
    }
    if !lists("connection", "upgrade") {
        return Err(UpgradeError::Malformed("no Connection: Upgrade header"));
    }
    if values("sec-websocket-version").next().map(str::trim) != Some("13") {
        return Err(UpgradeError::Malformed("not WebSocket version 13"));
    }
    let Some(key) = values("sec-websocket-key").next().map(str::trim) else {
        return Err(UpgradeError::Malformed("no Sec-WebSocket-Key header"));
    };
    let accept = derive_accept_key(key.as_bytes());
    let authorization = values("authorization").next().map(str::to_owned);
    let offers_mqtt = lists("sec-websocket-protocol", "mqtt");
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    // Copied, not split off: a split would keep the whole request buffer
    // alive for as long as the connection keeps these bytes.
    let early = match buf.get(length..) {
        Some(rest) if !rest.is_empty() => BytesMut::from(rest),
        _ => BytesMut::new(),
    };
    Ok(Some(UpgradeRequest {
        path,
        query,
        authorization,
        offers_mqtt,
        accept,
        early,
    }))
}

/// The answer that completes the handshake.
pub(crate) fn switching_protocols(accept: &str, protocol: Option<&str>) -> String {
    let protocol = protocol
        .map(|protocol| format!("Sec-WebSocket-Protocol: {protocol}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
}

/// A refusal: `status` with `message` as its text body (and, for 401, the
/// scheme the client should use).
pub(crate) fn refusal(status: u16, message: &str) -> String {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let challenge = if status == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n{challenge}\r\n{message}\n",
        message.len() + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Option<UpgradeRequest>, UpgradeError> {
        parse(&mut BytesMut::from(text.as_bytes()))
    }

    const UPGRADE: &str = "GET /v1/ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
                           Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                           Authorization: Bearer t0k\r\nSec-WebSocket-Protocol: foo, mqtt\r\n\r\n";

    #[test]
    fn a_complete_upgrade_is_read_with_what_the_socket_needs() {
        let request = parsed(UPGRADE).unwrap().expect("complete");
        assert_eq!(request.path, "/v1/ws");
        assert_eq!(request.query.as_deref(), Some("token=abc"));
        assert_eq!(request.authorization.as_deref(), Some("Bearer t0k"));
        assert!(request.offers_mqtt);
        // RFC 6455's own example.
        assert_eq!(request.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(request.early.is_empty());
        let answer = switching_protocols(&request.accept, Some("mqtt"));
        assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(answer.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
        assert!(answer.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_request_in_pieces_waits_and_early_bytes_are_kept() {
        for cut in [1, 10, UPGRADE.len() - 1] {
            assert!(parsed(&UPGRADE[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let with_frame = format!("{UPGRADE}\u{81}\u{0}");
        let request = parsed(&with_frame).unwrap().unwrap();
        assert_eq!(&request.early[..], "\u{81}\u{0}".as_bytes());
    }

    #[test]
    fn what_is_not_an_upgrade_says_why() {
        let cases = [
            (
                "POST /v1/ws HTTP/1.1\r\n\r\n",
                "a WebSocket upgrade is a GET",
            ),
            (
                "GET /v1/ws HTTP/1.0\r\n\r\n",
                "a WebSocket upgrade is HTTP/1.1",
            ),
            (
                "GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n",
                "no Upgrade: websocket header",
            ),
            (
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
                "no Connection: Upgrade header",
            ),
            (
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                "not WebSocket version 13",
            ),
            (
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n",
                "no Sec-WebSocket-Key header",
            ),
            ("\u{0}\u{1}garbage\r\n\r\n", "not an HTTP/1.1 request"),
        ];
        for (text, why) in cases {
            assert_eq!(
                parsed(text).unwrap_err(),
                UpgradeError::Malformed(why),
                "{text:?}"
            );
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parsed(&many).unwrap_err(), UpgradeError::TooLarge);
    }

    #[test]
    fn refusals_carry_their_reason_as_text() {
        let answer = refusal(401, "token expired");
        assert!(answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(answer.contains("\r\nWWW-Authenticate: Bearer\r\n"));
        assert!(answer.contains("\r\nContent-Length: 14\r\n"));
        assert!(answer.ends_with("\r\n\r\ntoken expired\n"));
        assert!(!refusal(404, "no").contains("WWW-Authenticate"));
    }
}
