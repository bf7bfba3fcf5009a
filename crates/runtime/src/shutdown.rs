//! The shutdown signal: SIGINT or SIGTERM cancels a token services watch.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        info!(signal, "shutting down");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs once");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

/// Requests to reload what can be reloaded without a restart (the
/// Commander's profiles): SIGHUP, or a [`ReloadTrigger`] in tests.
#[derive(Debug, Clone)]
pub struct Reload(tokio::sync::watch::Receiver<u64>);

/// Requests reloads by hand.
#[derive(Debug)]
pub struct ReloadTrigger(tokio::sync::watch::Sender<u64>);

impl Reload {
    /// A reload source driven by the returned trigger.
    pub fn manual() -> (ReloadTrigger, Reload) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (ReloadTrigger(tx), Reload(rx))
    }

    /// A source that never asks for a reload.
    pub fn never() -> Reload {
        let (trigger, reload) = Reload::manual();
        // Keep the sender alive for good: dropping it would end the stream.
        std::mem::forget(trigger);
        reload
    }

    /// Waits for the next request; `false` once none can come.
    pub async fn requested(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

impl ReloadTrigger {
    /// Asks for a reload.
    pub fn reload(&self) {
        self.0.send_modify(|count| *count += 1);
    }
}

/// Returns reload requests made by SIGHUP.
pub fn reload_on_hangup() -> Reload {
    let (trigger, reload) = Reload::manual();
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler installs once");
        while hangups.recv().await.is_some() {
            info!("SIGHUP: reloading");
            trigger.reload();
        }
    });
    #[cfg(not(unix))]
    std::mem::forget(trigger);
    reload
}
