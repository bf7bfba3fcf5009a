//! `wharf probe URL`: one HTTP GET of an operations endpoint, for health
//! checks in images without a shell or curl. Plain HTTP/1.1 over TCP is
//! all the operations endpoints speak.

use std::time::Duration;

use anyhow::{Context as _, bail};

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
    let answer = wharf_runtime::http_client::call(authority, "GET", path, &[], &[])
        .await
        .with_context(|| format!("no HTTP answer from {authority}"))?;
    Ok(answer.status)
}
