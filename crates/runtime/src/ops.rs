//! The operations endpoint every service serves: `/healthz` (the process
//! answers), `/readyz` (every component is ready) and `/metrics`
//! (Prometheus text format).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

    /// Every component and whether it is ready.
    pub fn components(&self) -> Vec<(String, bool)> {
        self.flags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, flag)| (name.clone(), flag.is_ready()))
            .collect()
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

/// What the services of one process report through its operations
/// endpoint: metrics and readiness. Every service's `bind` registers into it.
#[derive(Default)]
pub struct Reporting {
    pub registry: Registry,
    pub readiness: Readiness,
}

/// The operations endpoint of one process, bound before its services start.
pub struct OpsEndpoint {
    listener: TcpListener,
    routes: Router,
}

impl OpsEndpoint {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr}"))?;
        Ok(OpsEndpoint {
            listener,
            routes: Router::new(),
        })
    }

    /// Serves `routes` beside the standard ones (`wharf up`'s event stream).
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// The address the endpoint serves on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the endpoint while `service` runs, so `/readyz` and `/metrics`
    /// answer through the service's drain; returns the service's result.
    pub async fn serve_while(
        self,
        reporting: Reporting,
        service: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_ops(
            self.listener,
            reporting.registry,
            reporting.readiness,
            self.routes,
            stop.clone(),
        ));
        let result = service.await;
        stop.cancel();
        let _ = server.await;
        result
    }
}

/// `component="receiver"`.
type ComponentLabel = [(&'static str, String); 1];

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
    /// What `/readyz` answers, per component, as a metric.
    ready: Family<ComponentLabel, Gauge>,
}

/// Serves the operations endpoint on `listener` until `shutdown`. Besides
/// `registry`'s metrics, `/metrics` exports `wharf_ready{component}`: 1 when
/// the component is ready, as `/readyz` says. `routes` are served beside.
pub async fn serve_ops(
    listener: TcpListener,
    mut registry: Registry,
    readiness: Readiness,
    routes: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ready = Family::<ComponentLabel, Gauge>::default();
    registry.register(
        "wharf_ready",
        "1 when the component is ready (what /readyz answers), by component",
        ready.clone(),
    );
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry: Arc::new(registry),
            readiness,
            ready,
        })
        .merge(routes);
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
    for (component, ready) in state.readiness.components() {
        state
            .ready
            .get_or_create(&[("component", component)])
            .set(i64::from(ready));
    }
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
