//! A whole Wharf in the test process (the `wharf up` wiring: in-process bus,
//! SQLite), on free ports, for scenarios about devices.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_auth::TokenIssuer;
use wharf_cli::embedded::{self, Embedded, UpSettings};
use wharf_runtime::{Reload, ReloadTrigger};
use wharf_socket::Addresses;
use wharf_store::{DeviceStateRow, Store, StoreConfig};

use crate::{temp_dir, wait_until};

/// A running in-process Wharf.
pub struct TestWharf {
    wharf: Option<Embedded>,
    shutdown: CancellationToken,
    pub addresses: Addresses,
    pub data_dir: PathBuf,
    secret: String,
}

impl TestWharf {
    /// Starts Wharf with the demo model and rule; `customize` adjusts the
    /// settings (limits, framing…) before it starts.
    pub async fn start(customize: impl FnOnce(&mut UpSettings)) -> Self {
        Self::start_with(customize, Reload::never()).await
    }

    /// [`TestWharf::start`], with a trigger that reloads the profiles as
    /// SIGHUP does.
    pub async fn start_reloadable(
        customize: impl FnOnce(&mut UpSettings),
    ) -> (ReloadTrigger, Self) {
        let (trigger, reload) = Reload::manual();
        (trigger, Self::start_with(customize, reload).await)
    }

    async fn start_with(customize: impl FnOnce(&mut UpSettings), reload: Reload) -> Self {
        let data_dir = temp_dir("wharf-test");
        let mut settings = UpSettings::default();
        settings.use_data_dir(data_dir.clone());
        crate::socket::on_free_ports(&mut settings.socket);
        settings.up.ops_listen = ([127, 0, 0, 1], 0).into();
        settings.commander.api.listen = ([127, 0, 0, 1], 0).into();
        settings.receiver.flush_interval = Duration::from_millis(100);
        customize(&mut settings);
        let shutdown = CancellationToken::new();
        let checked = wharf_runtime::Checked::new(settings).expect("valid settings");
        let wharf = embedded::start_with_reload(checked, shutdown.clone(), reload)
            .await
            .expect("wharf starts");
        TestWharf {
            addresses: wharf.addresses,
            secret: wharf.secret.clone(),
            wharf: Some(wharf),
            shutdown,
            data_dir,
        }
    }

    /// A token for `device` of the demo model.
    pub fn token(&self, device: &str) -> String {
        TokenIssuer::new(&self.secret)
            .issue(device, "demo-thermostat", Duration::from_secs(3600))
            .unwrap()
    }

    /// A token signed with a secret this Wharf does not know.
    pub fn forged_token(&self, device: &str) -> String {
        TokenIssuer::new("a-secret-this-wharf-never-configured")
            .issue(device, "demo-thermostat", Duration::from_secs(3600))
            .unwrap()
    }

    /// The command-status topic as an operator tailing it sees it, from
    /// its beginning. Read as it is written: the in-process bus drops
    /// records once every committing group has read them, and a tail
    /// does not commit.
    pub async fn command_status(
        &self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<wharf_events::Envelope> {
        use wharf_bus::{Consumer as _, Subscriber as _};
        let bus = &self.wharf.as_ref().expect("running").bus;
        let mut consumer = bus
            .connection
            .subscribe_from_start("status", &[bus.topics.command_status()])
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(message) = consumer.recv().await {
                let envelope = wharf_events::Envelope::from_json(&message.payload)
                    .expect("the command-status topic holds events");
                if tx.send(envelope).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Publishes `envelope` to `topic` of this Wharf's bus (a topic named
    /// by `topics`), as another service would, and waits until it is stored.
    pub async fn publish(
        &self,
        topic: impl FnOnce(&wharf_events::Topics) -> String,
        envelope: &wharf_events::Envelope,
    ) {
        use wharf_bus::Publisher as _;
        let bus = &self.wharf.as_ref().expect("running").bus;
        let record = wharf_bus::Record::event(topic(&bus.topics), envelope);
        bus.connection
            .enqueue(record)
            .await
            .expect("the bus takes the record")
            .await
            .expect("the bus stores the record");
    }

    /// A client of the REST API with the development key.
    pub fn api(&self) -> crate::api::ApiClient {
        let wharf = self.wharf.as_ref().expect("running");
        crate::api::ApiClient::new(
            wharf.api_addr,
            wharf.api_key.as_deref().expect("the development API key"),
        )
    }

    /// Where the operations endpoint listens.
    pub fn ops(&self) -> std::net::SocketAddr {
        self.wharf.as_ref().expect("running").ops_addr
    }

    /// The store this Wharf writes device states to.
    pub async fn store(&self) -> Store {
        Store::connect(&StoreConfig {
            url: format!("sqlite://{}/wharf.db", self.data_dir.display()),
            ..StoreConfig::default()
        })
        .await
        .unwrap()
    }

    /// Waits until `device` has `frames` frames stored, and returns its state.
    pub async fn state_after(&self, device: &str, frames: i64) -> DeviceStateRow {
        let store = self.store().await;
        wait_until(Duration::from_secs(30), "the device's state", || async {
            let row = store.load_device_state(device).await.unwrap()?;
            (row.message_count >= frames).then_some(row)
        })
        .await
    }

    /// Stops Wharf and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(wharf) = self.wharf.take() {
            wharf.wait().await.expect("wharf stops cleanly");
        }
    }
}

impl Drop for TestWharf {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
