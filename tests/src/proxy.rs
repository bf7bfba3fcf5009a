//! A TCP proxy on a loopback port that a test can cut and restore: the
//! server behind it keeps running, but the clients going through the proxy
//! lose it, as in a network partition between them.

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::env::free_port;

/// Forwards connections from its own port to `127.0.0.1:target`.
pub struct CuttableProxy {
    port: u16,
    target: u16,
    tasks: Option<JoinSet<()>>,
}

impl CuttableProxy {
    /// A proxy to `127.0.0.1:target` on a free port, forwarding at once.
    pub async fn start(target: u16) -> Self {
        Self::listening_on(free_port(), target).await
    }

    /// A proxy to `127.0.0.1:target` on `port` (one a server already
    /// advertises), forwarding at once.
    pub async fn listening_on(port: u16, target: u16) -> Self {
        let mut proxy = CuttableProxy {
            port,
            target,
            tasks: None,
        };
        proxy.restore().await;
        proxy
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every client off: the proxy stops listening and drops its connections.
    pub fn cut(&mut self) {
        self.tasks = None; // dropping the set aborts every task
    }

    /// Lets clients through again.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy port is free again");
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }
}
