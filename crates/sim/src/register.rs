//! Devices registered through the Commander's REST API (`--api`), for
//! deployments whose token secret the simulator does not hold: each device
//! is registered (`POST /v1/devices`) and simulates with the token the
//! answer holds. A device id already registered is deleted and registered
//! again (its earlier tokens stop working): simulated devices only.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The API at `base` (`http://host:port`) with an API key.
#[derive(Debug, Clone)]
pub struct Api {
    authority: String,
    key: String,
}

impl Api {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .with_context(|| format!("--api {base}: expected http://host:port"))?
            .trim_end_matches('/');
        if key.is_empty() {
            bail!("--api needs --api-key (an API key the Commander accepts)");
        }
        Ok(Api {
            authority: authority.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Registers `device` of `model` and returns its token.
    pub async fn register(&self, device: &str, model: &str) -> anyhow::Result<String> {
        let body = json!({"id": device, "model": model}).to_string();
        let (status, answer) = self.call("POST", "/v1/devices", Some(&body)).await?;
        let (status, answer) = if status == 409 {
            let (deleted, answer) = self
                .call("DELETE", &format!("/v1/devices/{device}"), None)
                .await?;
            if deleted != 200 {
                bail!("{device} is registered and could not be deleted ({deleted}): {answer}");
            }
            self.call("POST", "/v1/devices", Some(&body)).await?
        } else {
            (status, answer)
        };
        if status != 201 && status != 200 {
            bail!("registering {device} answered {status}: {answer}");
        }
        answer["result"]["token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("registering {device}: no token in {answer}"))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to the API at {}", self.authority))?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.authority,
            self.key,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("not an HTTP answer from {}", self.authority))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP answer from {}", self.authority))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let json_text = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let value = serde_json::from_str(&json_text).unwrap_or(Value::String(json_text));
        Ok((status, value))
    }
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
    }
}
