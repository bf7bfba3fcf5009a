//! Socket listeners for scenarios: free ports for every transport.

use std::net::SocketAddr;

use wharf_socket::SocketConfig;

use crate::env::free_port;

/// Puts every listener of `config` on a free port of 127.0.0.1.
pub fn on_free_ports(config: &mut SocketConfig) {
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    config.websocket.listen = local;
    config.mqtt.listen = local;
    config.tcp.listen = local;
    config.udp.listen = local;
    config.ops_listen = local;
}

/// Addresses chosen for a Socket started as a process.
#[derive(Debug, Clone, Copy)]
pub struct SocketPorts {
    pub websocket: SocketAddr,
    pub mqtt: SocketAddr,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub ops: SocketAddr,
}

impl SocketPorts {
    pub fn free() -> Self {
        let port = || -> SocketAddr { ([127, 0, 0, 1], free_port()).into() };
        SocketPorts {
            websocket: port(),
            mqtt: port(),
            tcp: port(),
            // A free TCP port number is, in practice, free for UDP too.
            udp: port(),
            ops: port(),
        }
    }

    /// The `[socket]` section of instance `instance` on these addresses.
    pub fn toml(&self, instance: &str) -> String {
        format!(
            "[socket]\ninstance_id = \"{instance}\"\nops_listen = \"{}\"\n\n\
             [socket.websocket]\nlisten = \"{}\"\n\n[socket.mqtt]\nlisten = \"{}\"\n\n\
             [socket.tcp]\nlisten = \"{}\"\n\n[socket.udp]\nlisten = \"{}\"\n",
            self.ops, self.websocket, self.mqtt, self.tcp, self.udp
        )
    }
}
