//! The all-in-one wiring behind `wharf up`: the Socket, the Receiver and the
//! Commander in one process, sharing one bus (in-process and durable under
//! the data directory by default), one
//! store (SQLite under the data directory by default) and one operations
//! endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;
use wharf_auth::AuthConfig;
use wharf_auth::{ApiKeys, TokenIssuer, TokenVerifier};
use wharf_bus::{BusConfig, BusHandle};
use wharf_commander::{Commander, CommanderConfig, CommanderParts, LiveProfiles, Profiles};
use wharf_receiver::rules::Rules;
use wharf_receiver::{Receiver, ReceiverConfig, ReceiverParts};
use wharf_runtime::{Checked, ConfigError, LogConfig, OpsEndpoint, Reload, Reporting, Validate};
use wharf_socket::{Socket, SocketConfig, SocketParts};
use wharf_store::{DeviceRow, Store, StoreConfig};

use crate::{demo, secret};

/// A service's run future, boxed so the three can share one supervisor.
type ServiceRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Everything `wharf up` reads. The same sections as the separate
/// services, plus `[up]`; the defaults run without any file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpSettings {
    pub bus: BusConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub socket: SocketConfig,
    pub receiver: ReceiverConfig,
    pub commander: CommanderConfig,
    pub up: UpConfig,
}

/// The `[up]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpConfig {
    /// Where the SQLite database and the generated secret live.
    pub data_dir: PathBuf,
    /// One operations endpoint for all three services.
    pub ops_listen: SocketAddr,
    /// Add the demo profile and rule (`demo-thermostat`, `fan`).
    pub demo: bool,
    /// Serve every event of the in-process bus at `/v1/tail` on the
    /// operations port, for `wharf tail`.
    pub event_stream: bool,
}

impl Default for UpConfig {
    fn default() -> Self {
        UpConfig {
            data_dir: "data".into(),
            ops_listen: ([127, 0, 0, 1], 9100).into(),
            demo: true,
            event_stream: true,
        }
    }
}

impl Default for UpSettings {
    fn default() -> Self {
        UpSettings {
            bus: BusConfig {
                url: default_bus_url(&UpConfig::default().data_dir),
                ..BusConfig::default()
            },
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            socket: SocketConfig::default(),
            receiver: ReceiverConfig {
                // Everything shares the machine's cores in one process: a
                // short write-back period keeps each write small, so it
                // never holds a core away from the connections for long
                // (measured on one core at 20,000 QoS 1 msg/s: PUBACK p99
                // 9.6 ms with 100 ms, 81 ms with 1 s; docs/BENCHMARKS.md).
                flush_interval: std::time::Duration::from_millis(100),
                ..ReceiverConfig::default()
            },
            commander: CommanderConfig::default(),
            up: UpConfig::default(),
        }
    }
}

/// The durable in-process bus, journaled under `data_dir/bus`.
fn default_bus_url(data_dir: &std::path::Path) -> String {
    format!("file://{}", data_dir.join("bus").display())
}

impl UpSettings {
    /// Puts the database and the bus's journal under `data_dir` unless a
    /// store or bus URL was configured.
    pub fn use_data_dir(&mut self, data_dir: PathBuf) {
        if self.store.url == StoreConfig::default().url {
            self.store.url = format!("sqlite://{}/wharf.db", data_dir.display());
        }
        if self.bus.url == default_bus_url(&self.up.data_dir) {
            self.bus.url = default_bus_url(&data_dir);
        }
        self.up.data_dir = data_dir;
    }

    /// The demo profile (when enabled) plus every profile in
    /// `commander.profiles_dir`, when that directory exists.
    fn profiles(&self) -> Result<Profiles, ConfigError> {
        load_profiles(self.up.demo, &self.commander.profiles_dir)
    }
}

/// The demo profile (when `demo`) plus every profile in `dir`, when that
/// directory exists (a shipped copy of the demo profile is left out);
/// called again on every reload.
fn load_profiles(demo: bool, dir: &std::path::Path) -> Result<Profiles, ConfigError> {
    let builtin: &[(String, String)] =
        &[("built-in demo profile".to_owned(), demo::PROFILE.to_owned())];
    Profiles::load(if demo { builtin } else { &[] }, dir, true)
}

/// What checking `wharf up`'s configuration parsed.
#[derive(Debug, Clone)]
pub struct UpParsed {
    /// The configured rules, and the demo's when it is on.
    pub rules: Rules,
    /// The demo profile (when on) and the profiles directory's.
    pub profiles: Profiles,
    /// The configured API key hashes (`wharf up` adds its own key when
    /// there are none).
    pub api_keys: ApiKeys,
}

impl Validate for UpSettings {
    type Parsed = UpParsed;

    fn check(&self) -> Result<UpParsed, Vec<String>> {
        let mut problems = self.bus.problems();
        problems.extend(self.store.problems());
        if !self.auth.secret.is_empty() {
            problems.extend(self.auth.problems());
        }
        problems.extend(self.log.problems());
        problems.extend(self.socket.problems());
        // The demo's rule is checked with the configured ones: a rule of
        // the same name is a problem here, not at start.
        let mut receiver = self.receiver.clone();
        if self.up.demo {
            receiver.rules.push(demo::fan_rule());
        }
        let profiles = self.profiles().map_err(|found| {
            let name = |problem| format!("profiles: {problem}");
            found.problems.into_iter().map(name).collect()
        });
        let parts = wharf_runtime::both(
            wharf_runtime::both(receiver.check(), self.commander.check()),
            profiles,
        );
        wharf_runtime::with_part(problems, parts).map(|((rules, api_keys), profiles)| UpParsed {
            rules,
            profiles,
            api_keys,
        })
    }
}

/// A running all-in-one Wharf.
pub struct Embedded {
    /// Where devices connect, per transport.
    pub addresses: wharf_socket::Addresses,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_addr: SocketAddr,
    /// The secret device tokens are signed with.
    pub secret: String,
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    /// The development API key kept in the data directory; `None` when
    /// `commander.api.keys` is configured.
    pub api_key: Option<String>,
    /// The bus the services share (to watch its topics).
    pub bus: BusHandle,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Embedded {
    /// Waits until every service has stopped; the first error, if any.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("wharf up panicked")?
    }
}

/// Starts all three services; they stop when `shutdown` is cancelled or
/// one of them fails. The Socket stops first, so the disconnects it
/// publishes reach the others before they stop.
pub async fn start(
    checked: Checked<UpSettings>,
    shutdown: CancellationToken,
) -> anyhow::Result<Embedded> {
    start_with_reload(checked, shutdown, Reload::never()).await
}

/// [`start`], reloading the Commander's profiles when `reload` says so.
pub async fn start_with_reload(
    checked: Checked<UpSettings>,
    shutdown: CancellationToken,
    reload: Reload,
) -> anyhow::Result<Embedded> {
    let Checked {
        settings,
        parsed:
            UpParsed {
                rules,
                profiles,
                mut api_keys,
            },
    } = checked;
    let secret = secret::load_or_create(&settings.auth.secret, &settings.up.data_dir)?;
    let (demo_enabled, profiles_dir) = (settings.up.demo, settings.commander.profiles_dir.clone());
    let profiles =
        LiveProfiles::loaded(profiles, move || load_profiles(demo_enabled, &profiles_dir));
    let api_key = if api_keys.is_empty() {
        let key = secret::load_or_create_api_key(&settings.up.data_dir)?;
        api_keys = api_keys.with_key(&key);
        Some(key)
    } else {
        None
    };
    // The demo's rule is among `rules` already (the check compiled it).
    let logic = wharf_receiver::twin_logic(&settings.receiver, rules);
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let store = Store::connect(&settings.store)
        .await
        .context("failed to open the store")?;
    if settings.up.demo {
        register_demo_device(&store).await?;
    }
    let ops = OpsEndpoint::bind(settings.up.ops_listen).await?;
    let mut reporting = Reporting::default();
    let socket_parts = SocketParts {
        verifier: TokenVerifier::new(&secret),
        bus: bus.clone(),
    };
    let socket = Socket::bind(settings.socket, socket_parts, &mut reporting).await?;
    let receiver_parts = ReceiverParts {
        logic: Box::new(logic),
        bus: bus.clone(),
        store: store.clone(),
    };
    let receiver = Receiver::bind(settings.receiver, receiver_parts, &mut reporting).await?;
    let commander_parts = CommanderParts {
        profiles,
        bus: bus.clone(),
        store: store.clone(),
        issuer: TokenIssuer::new(&secret),
        api_keys,
    };
    let commander = Commander::bind(settings.commander, commander_parts, &mut reporting).await?;
    let api_addr = commander.api_addr()?;
    let addresses = socket.addresses();
    let ops_addr = ops.local_addr()?;

    let socket_stop = CancellationToken::new();
    let rest_stop = CancellationToken::new();
    let all_services = supervise(
        shutdown,
        vec![(
            "socket",
            Box::pin(socket.run(socket_stop.clone())) as ServiceRun,
            socket_stop,
        )],
        vec![
            (
                "receiver",
                Box::pin(receiver.run(rest_stop.clone())) as ServiceRun,
                rest_stop.clone(),
            ),
            (
                "commander",
                Box::pin(commander.run(rest_stop.clone(), reload)),
                rest_stop,
            ),
        ],
        store,
    );
    // The ops port also serves the in-process bus's records to `wharf tail
    // --from` (the bus lives in this process); open streams end once the
    // services have stopped, so they cannot hold the shutdown.
    let streams_stop = CancellationToken::new();
    let ops = if settings.up.event_stream {
        ops.with_routes(wharf_tail::stream::router(
            bus.connection.clone(),
            bus.topics.clone(),
            streams_stop.clone(),
        ))
    } else {
        ops
    };
    let all_services = async move {
        let result = all_services.await;
        streams_stop.cancel();
        result
    };
    let task = tokio::spawn(ops.serve_while(reporting, all_services));
    Ok(Embedded {
        bus,
        addresses,
        ops_addr,
        secret,
        api_addr,
        api_key,
        task,
    })
}

/// A service as [`supervise`] runs it: its name, its run future, and the
/// token that asks it to stop.
type Service = (&'static str, ServiceRun, CancellationToken);

/// Runs the services until `shutdown`, or until any of them ends on its
/// own: with an error, a panic, or early. Then stops the `first` ones (the
/// Socket, so the disconnects it publishes reach the others), then the
/// `rest`, and closes the store. The first failure is the result.
async fn supervise(
    shutdown: CancellationToken,
    first: Vec<Service>,
    rest: Vec<Service>,
    store: Store,
) -> anyhow::Result<()> {
    let failed = CancellationToken::new();
    let spawn = |(name, run, stop): Service| {
        let failed = failed.clone();
        let asked = stop.clone();
        let task = tokio::spawn(async move {
            let result = match tokio::spawn(run).await {
                Ok(Ok(())) if !asked.is_cancelled() => {
                    Err(anyhow::anyhow!("the {name} stopped on its own"))
                }
                Ok(result) => result,
                Err(join) => Err(anyhow::anyhow!("the {name} panicked: {join}")),
            };
            if let Err(error) = &result {
                error!(
                    service = name,
                    error = format!("{error:#}"),
                    "service failed; stopping wharf up"
                );
                failed.cancel();
            }
            result
        });
        (stop, task)
    };
    let groups: Vec<Vec<_>> = [first, rest]
        .into_iter()
        .map(|group| group.into_iter().map(spawn).collect())
        .collect();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = failed.cancelled() => {}
    }
    let mut outcome = Ok(());
    for group in groups {
        for (stop, _) in &group {
            stop.cancel();
        }
        for (_, task) in group {
            let result = task
                .await
                .unwrap_or_else(|join| Err(anyhow::anyhow!("{join}")));
            if outcome.is_ok() {
                outcome = result;
            }
        }
    }
    store.close().await;
    outcome
}

/// Registers the demo device, so the API shows it, unless it exists (or
/// was deleted: that stays the user's choice).
async fn register_demo_device(store: &Store) -> anyhow::Result<()> {
    if store.device(demo::DEVICE).await?.is_some() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    tx.create_device(&DeviceRow {
        id: demo::DEVICE.into(),
        model: demo::MODEL.into(),
        ..DeviceRow::default()
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scratch_store() -> Store {
        let dir = std::env::temp_dir().join(format!("wharf-supervise-{}", std::process::id()));
        Store::connect(&StoreConfig {
            url: format!("sqlite://{}/wharf.db", dir.display()),
            ..StoreConfig::default()
        })
        .await
        .unwrap()
    }

    /// A service that runs until asked to stop; it reports that it was.
    fn well_behaved(stop: CancellationToken, stopped: CancellationToken) -> ServiceRun {
        Box::pin(async move {
            stop.cancelled().await;
            stopped.cancel();
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_panicking_service_stops_the_others_and_fails() {
        let (socket_stop, rest_stop) = (CancellationToken::new(), CancellationToken::new());
        let socket_stopped = CancellationToken::new();
        let panicking: ServiceRun = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("a bug in the receiver");
        });
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            supervise(
                CancellationToken::new(),
                vec![(
                    "socket",
                    well_behaved(socket_stop.clone(), socket_stopped.clone()),
                    socket_stop,
                )],
                vec![("receiver", panicking, rest_stop)],
                scratch_store().await,
            ),
        )
        .await
        .expect("wharf up stops by itself");
        let error = format!("{:#}", result.expect_err("and fails"));
        assert!(error.contains("the receiver panicked"), "{error}");
        assert!(socket_stopped.is_cancelled(), "the socket was stopped");
    }

    #[tokio::test]
    async fn a_service_ending_early_stops_wharf_up() {
        let rest_stop = CancellationToken::new();
        let ended: ServiceRun = Box::pin(async { Ok(()) });
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            supervise(
                CancellationToken::new(),
                vec![],
                vec![("commander", ended, rest_stop)],
                scratch_store().await,
            ),
        )
        .await
        .expect("wharf up stops by itself");
        let error = format!("{:#}", result.expect_err("and fails"));
        assert!(
            error.contains("the commander stopped on its own"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_every_service_cleanly() {
        let (socket_stop, rest_stop) = (CancellationToken::new(), CancellationToken::new());
        let (socket_stopped, rest_stopped) = (CancellationToken::new(), CancellationToken::new());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(supervise(
            shutdown.clone(),
            vec![(
                "socket",
                well_behaved(socket_stop.clone(), socket_stopped.clone()),
                socket_stop,
            )],
            vec![(
                "receiver",
                well_behaved(rest_stop.clone(), rest_stopped.clone()),
                rest_stop,
            )],
            scratch_store().await,
        ));
        shutdown.cancel();
        running.await.unwrap().expect("a clean stop");
        assert!(socket_stopped.is_cancelled() && rest_stopped.is_cancelled());
    }
}
