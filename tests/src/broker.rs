//! An Apache Kafka broker of a test's own, reached through a proxy the test
//! can cut: the broker and its data stay, but clients lose it, as in a
//! broker outage. The broker advertises the proxy's address, so every client
//! connection goes through it. Also: Kafka's own command-line tools, run from
//! the same jars, as an operator would.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::env::free_port;
use crate::proxy::CuttableProxy;

/// `scripts/kafka`, which starts brokers and runs Kafka's tools from the
/// Maven Central jars (`WHARF_KAFKA_SCRIPT` overrides it).
pub fn kafka_script() -> PathBuf {
    std::env::var_os("WHARF_KAFKA_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka"))
}

/// Runs one of Kafka's own tools (`class` from the broker's jars) to its end.
pub fn kafka_tool(class: &str, args: &[&str]) -> Output {
    Command::new(kafka_script())
        .arg("run")
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("failed to run scripts/kafka run {class}: {error}"))
}

/// An Apache Kafka broker behind a proxy that can be cut and restored.
pub struct FlakyBroker {
    dir: PathBuf,
    pid: u32,
    proxy: CuttableProxy,
}

impl FlakyBroker {
    /// Starts a single-node Apache Kafka (`scripts/kafka start`) advertising
    /// the proxy's port, and the proxy in front of it.
    pub async fn start() -> Self {
        let dir = crate::temp_dir("wharf-kafka");
        let proxy_port = free_port();
        let script = kafka_script();
        let output = tokio::process::Command::new(&script)
            .arg("start")
            .arg(&dir)
            .args(["--advertised-port", &proxy_port.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .unwrap_or_else(|error| panic!("failed to run {}: {error}", script.display()));
        assert!(
            output.status.success(),
            "scripts/kafka start failed ({}); see {}",
            output.status,
            dir.join("server.log").display()
        );
        let address = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let broker_port = address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("scripts/kafka printed no address: {address:?}"));
        let pid = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .expect("scripts/kafka wrote the broker's pid");
        FlakyBroker {
            dir,
            pid,
            proxy: CuttableProxy::listening_on(proxy_port, broker_port).await,
        }
    }

    /// `host:port` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port())
    }

    /// Cuts every client off: the proxy stops listening and drops its connections.
    pub fn cut(&mut self) {
        self.proxy.cut();
    }

    /// Lets clients reach the broker again.
    pub async fn restore(&mut self) {
        self.proxy.restore().await;
    }
}

impl Drop for FlakyBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
