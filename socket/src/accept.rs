//! Accepting TCP connections for every TCP-based transport: the connection
//! limit, one task per connection, and stopping on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::gateway::Gateway;

/// One transport's listener.
pub(crate) struct Listener {
    gateway: Arc<Gateway>,
    listener: TcpListener,
    transport: &'static str,
}

impl Listener {
    pub(crate) fn new(
        gateway: Arc<Gateway>,
        listener: TcpListener,
        transport: &'static str,
    ) -> Self {
        Listener {
            gateway,
            listener,
            transport,
        }
    }

    /// Accepts until `stop`, running `connection` for each accepted stream
    /// in a task the Socket waits for at shutdown. Beyond
    /// `socket.max_connections` a connection is closed at once and counted.
    pub(crate) async fn serve<F, Fut>(self, stop: CancellationToken, connection: F)
    where
        F: Fn(Arc<Gateway>, TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(%error, transport = self.transport, "failed to accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Commands and acknowledgements are small writes a device
            // waits on: no Nagle delay, on every TCP-based transport.
            let _ = stream.set_nodelay(true);
            let Ok(permit) = self.gateway.connection_slots.clone().try_acquire_owned() else {
                self.gateway
                    .metrics
                    .connections_refused
                    .get_or_create(&[("reason", "max_connections")])
                    .inc();
                drop(stream);
                continue;
            };
            self.gateway.connection_tasks.spawn(connection(
                self.gateway.clone(),
                stream,
                peer,
                permit,
            ));
        }
    }
}
