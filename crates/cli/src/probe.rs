//! `wharf probe URL`: one HTTP GET of an operations endpoint, for health
//! checks in images without a shell or curl. Plain HTTP/1.1 over TCP is
//! all the operations endpoints speak.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// GETs `url` (`http://host:port/path`); Ok when it answers 200.
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: expected http://host:port/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let status = tokio::time::timeout(timeout, get(authority, path))
        .await
        .with_context(|| {
            format!(
                "{url}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })??;
    if status != 200 {
        bail!("{url} answered {status}");
    }
    Ok(())
}

async fn get(authority: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut buf).await?;
        if read == 0 || head.len() > 4096 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("not an HTTP answer from {authority}"))
}
