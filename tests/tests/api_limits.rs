//! The REST API as a public listener must hold up against slow and
//! numerous clients: headers and bodies have deadlines, and connections a
//! cap. Each case is played by raw TCP clients, as an attacker would.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_tests::wharf::TestWharf;

const PATIENCE: Duration = Duration::from_secs(10);

/// Everything the server sends until it closes, waiting at most `PATIENCE`.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the API closed the connection in time")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.api.header_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = wharf.api().addr;
    // Slowloris: the request line and a header, never the blank line.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: wharf\r\n")
        .await
        .unwrap();
    read_until_closed(&mut slow).await;
    // A connection that says nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut silent).await;
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.api.body_timeout = Duration::from_millis(500);
    })
    .await;
    let api = wharf.api();
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /v1/devices HTTP/1.1\r\nHost: wharf\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"id\":",
        api.key.as_deref().unwrap()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_wait_until_one_closes() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.api.max_connections = 2;
    })
    .await;
    let addr = wharf.api().addr;
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: wharf\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut first = [0u8; 12];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut first))
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(stream); // kept alive, holding a slot
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut first = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read_exact(&mut first)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two held both slots"
    );
    drop(held.pop());
    tokio::time::timeout(PATIENCE, third.read_exact(&mut first))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    wharf.stop().await;
}
