//! Devices registered through the Commander's REST API (`--api`), for
//! deployments whose token secret the simulator does not hold: each device
//! is registered (`POST /v1/devices`) and simulates with the token the
//! answer holds. A device id already registered is deleted and registered
//! again (its earlier tokens stop working): simulated devices only.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

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
        let bearer = format!("Bearer {}", self.key);
        let answer = wharf_runtime::http_client::call(
            &self.authority,
            method,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body.unwrap_or("").as_bytes(),
        )
        .await
        .with_context(|| format!("cannot reach the API at {}", self.authority))?;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((answer.status, value))
    }
}
