//! The operations endpoint every service serves: `/healthz` (the process
//! answers), `/readyz` (every component is ready) and `/metrics`
//! (Prometheus text format).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The readiness of a process: ready when every registered flag is.
#[derive(Clone, Default)]
pub struct Readiness {
    flags: Arc<Mutex<Vec<(String, ReadyFlag)>>>,
}

/// One component's readiness; starts not ready.
#[derive(Clone, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    /// Marks the component ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the component is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Readiness {
    /// Registers a component under `name` and returns its flag.
    pub fn flag(&self, name: &str) -> ReadyFlag {
        let flag = ReadyFlag::default();
        self.flags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name.to_owned(), flag.clone()));
        flag
    }

    /// The names of the components that are not ready.
    pub fn not_ready(&self) -> Vec<String> {
        self.flags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, flag)| !flag.is_ready())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Serves the operations endpoint on `listener` until `shutdown`.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            readiness,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let waiting = state.readiness.not_ready();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("failed to encode metrics: {error}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let readiness = Readiness::default();
        let bus = readiness.flag("bus");
        let store = readiness.flag("store");
        assert_eq!(readiness.not_ready(), vec!["bus", "store"]);
        bus.set(true);
        store.set(true);
        assert!(readiness.not_ready().is_empty());
        store.set(false);
        assert_eq!(readiness.not_ready(), vec!["store"]);
    }
}
