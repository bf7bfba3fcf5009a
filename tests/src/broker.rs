//! A Kafka-protocol broker of a test's own, reached through a proxy the test
//! can cut: the broker and its data stay, but clients lose it, as in a
//! broker outage. Tansu advertises the proxy's address, so every client
//! connection goes through it.

use std::process::{Child, Command, Stdio};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::env::free_port;

/// A tansu broker behind a proxy that can be cut and restored.
pub struct FlakyBroker {
    broker: Child,
    broker_port: u16,
    proxy_port: u16,
    proxy: Option<JoinSet<()>>,
}

impl FlakyBroker {
    /// Starts tansu (the binary in `TANSU`, or `tansu` on the path) with
    /// in-memory storage, and the proxy in front of it.
    pub async fn start() -> Self {
        let binary = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let (broker_port, proxy_port) = (free_port(), free_port());
        let broker = Command::new(&binary)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{broker_port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{proxy_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("failed to start {binary} (set TANSU; scripts/test does): {error}")
            });
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", broker_port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut flaky = FlakyBroker {
            broker,
            broker_port,
            proxy_port,
            proxy: None,
        };
        flaky.restore().await;
        flaky
    }

    /// `host:port` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    /// Cuts every client off: the proxy stops listening and drops its connections.
    pub fn cut(&mut self) {
        self.proxy = None; // dropping the set aborts every task
    }

    /// Lets clients reach the broker again.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.proxy_port))
            .await
            .expect("the proxy port is free again");
        let broker_port = self.broker_port;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(("127.0.0.1", broker_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        });
        self.proxy = Some(tasks);
    }
}

impl Drop for FlakyBroker {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}
