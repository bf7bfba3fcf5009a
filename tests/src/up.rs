//! `wharf up` started as a process on fixed ports, so that a restart on the
//! same data directory is where devices and clients expect it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::free_port;
use crate::process::binary;
use crate::socket::SocketPorts;
use crate::{http, wait_until};

/// Where a `wharf up` process listens.
#[derive(Debug, Clone, Copy)]
pub struct UpPorts {
    pub socket: SocketPorts,
    pub ops: SocketAddr,
    pub api: SocketAddr,
}

impl UpPorts {
    pub fn free() -> Self {
        let addr = || -> SocketAddr { ([127, 0, 0, 1], free_port()).into() };
        UpPorts {
            socket: SocketPorts::free(),
            ops: addr(),
            api: addr(),
        }
    }
}

/// A `wharf up` process, logging to `<data>/wharf-up.log` (appended across
/// restarts); killed when dropped.
pub struct UpProcess {
    child: Child,
    ops: SocketAddr,
}

impl UpProcess {
    /// Starts `wharf up --data-dir data` with `secret`, on `ports`, with
    /// extra `WHARF_…`/`RUST_LOG` variables.
    pub fn start(data: &Path, ports: UpPorts, secret: &str, env: &[(&str, &str)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("wharf-up.log"))
            .expect("the log file opens");
        let socket = ports.socket;
        let child = Command::new(binary("wharf"))
            .args(["up", "--data-dir"])
            .arg(data)
            .env("WHARF_AUTH__SECRET", secret)
            .env(
                "WHARF_SOCKET__WEBSOCKET__LISTEN",
                socket.websocket.to_string(),
            )
            .env("WHARF_SOCKET__MQTT__LISTEN", socket.mqtt.to_string())
            .env("WHARF_SOCKET__TCP__LISTEN", socket.tcp.to_string())
            .env("WHARF_SOCKET__UDP__LISTEN", socket.udp.to_string())
            .env("WHARF_UP__OPS_LISTEN", ports.ops.to_string())
            .env("WHARF_COMMANDER__API__LISTEN", ports.api.to_string())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wharf up starts");
        UpProcess {
            child,
            ops: ports.ops,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, patience: Duration) {
        let ops = self.ops;
        wait_until(patience, "wharf up to be ready", || async {
            http::get(ops, "/readyz")
                .await
                .filter(|(status, _)| *status == 200)
        })
        .await;
    }

    /// Kills the process with SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
