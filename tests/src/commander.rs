//! A Commander started as a process: free ports and an API key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::api::ApiClient;
use crate::env::free_port;

/// Where a Commander process listens, and the API key it accepts.
#[derive(Debug, Clone)]
pub struct CommanderPorts {
    pub ops: SocketAddr,
    pub api: SocketAddr,
    pub key: String,
}

impl CommanderPorts {
    pub fn free() -> Self {
        CommanderPorts {
            ops: ([127, 0, 0, 1], free_port()).into(),
            api: ([127, 0, 0, 1], free_port()).into(),
            key: wharf_auth::generate_api_key(),
        }
    }

    /// The `[commander]` section, with the shipped profiles.
    pub fn toml(&self) -> String {
        format!(
            "[commander]\nprofiles_dir = \"{}\"\nops_listen = \"{}\"\n\n\
             [commander.api]\nlisten = \"{}\"\nkeys = [\"{}\"]\n",
            shipped_profiles().display(),
            self.ops,
            self.api,
            wharf_auth::hash_api_key(&self.key)
        )
    }

    /// A client of this Commander's API.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.api, &self.key)
    }
}

/// The profiles directory the repository ships (`commander/profiles`).
pub fn shipped_profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../commander/profiles")
}
