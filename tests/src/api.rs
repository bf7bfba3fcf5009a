//! The Commander's REST API as a client sees it: requests over a real
//! socket, answers parsed from the envelope.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One answer: the status code, the headers (lower-case names) and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }

    /// `result` of a `{"ok":true,…}` answer; panics on anything else.
    pub fn result(&self) -> Value {
        let json = self.json();
        assert_eq!(
            json["ok"],
            Value::Bool(true),
            "status {}: {json}",
            self.status
        );
        json["result"].clone()
    }

    /// `error.code` of a `{"ok":false,…}` answer; panics on anything else.
    pub fn error_code(&self) -> String {
        let json = self.json();
        assert_eq!(
            json["ok"],
            Value::Bool(false),
            "status {}: {json}",
            self.status
        );
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "every error says what went wrong: {json}"
        );
        json["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A client of one Commander's API with one key.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub key: Option<String>,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        ApiClient {
            addr,
            key: Some(key.to_owned()),
        }
    }

    /// The same API without a key.
    pub fn anonymous(&self) -> Self {
        ApiClient {
            addr: self.addr,
            key: None,
        }
    }

    /// The same API with another key.
    pub fn with_key(&self, key: &str) -> Self {
        ApiClient::new(self.addr, key)
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(
            "POST",
            path,
            Some(("application/json", body.to_string().as_bytes())),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(
            "PUT",
            path,
            Some(("application/json", body.to_string().as_bytes())),
        )
        .await
    }

    /// Sends `method path` with an optional `(content type, body)`.
    pub async fn send(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Answer {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(key) = &self.key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                request.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    bytes.len()
                ));
                bytes
            }
            None => {
                request.push_str("Content-Length: 0\r\n");
                &[][..]
            }
        };
        request.push_str("\r\n");
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("the API accepts");
        stream.write_all(request.as_bytes()).await.unwrap();
        // The server may answer (413) before reading a large body.
        let _ = stream.write_all(payload).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        parse(&response)
    }
}

fn parse(response: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

impl ApiClient {
    /// Registers a demo thermostat with `metadata`; its token.
    pub async fn register(&self, id: &str, metadata: Value) -> String {
        let created = self
            .post(
                "/v1/devices",
                &serde_json::json!({"id": id, "model": "demo-thermostat", "metadata": metadata}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let result = created.result();
        assert_eq!(result["device"]["id"], Value::from(id));
        result["token"].as_str().expect("a token").to_owned()
    }

    /// Waits up to `patience` until command `id` has `status`; the command.
    pub async fn command_with_status(
        &self,
        id: &str,
        status: &str,
        patience: std::time::Duration,
    ) -> Value {
        crate::wait_until(
            patience,
            &format!("command {id} to be {status}"),
            || async {
                let command = self.get(&format!("/v1/commands/{id}")).await.result();
                (command["status"] == status).then_some(command)
            },
        )
        .await
    }
}
