//! The REST API apps use, on port 8088: devices and their tokens, twins,
//! commands. Every answer is the envelope of [`envelope`]; every route but
//! `/openapi.json` needs `Authorization: Bearer <api key>`; identical
//! concurrent GETs share one database read ([`coalesce`]). The OpenAPI
//! document is generated from the handlers.

pub mod coalesce;
pub mod commands;
pub mod devices;
mod document;
pub mod envelope;
pub(crate) mod waiting;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_auth::{ApiKeys, TokenIssuer};
use wharf_store::Store;

use crate::config::ApiConfig;
use crate::desk::Desk;
use crate::metrics::CommanderMetrics;
use crate::profiles::LiveProfiles;
use crate::relay::OutboxWaker;
use envelope::ApiError;

/// What every handler works with.
pub(crate) struct ApiState {
    pub(crate) store: Store,
    pub(crate) profiles: LiveProfiles,
    pub(crate) desk: Arc<Desk>,
    pub(crate) issuer: TokenIssuer,
    pub(crate) keys: ApiKeys,
    pub(crate) waker: OutboxWaker,
    pub(crate) cache: coalesce::Coalescer,
    pub(crate) waiting: waiting::Waiting,
    pub(crate) metrics: CommanderMetrics,
    pub(crate) config: ApiConfig,
}

/// The shared state, as handlers extract it.
#[derive(Clone)]
pub(crate) struct Api(pub(crate) Arc<ApiState>);

impl Deref for Api {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.0
    }
}

impl ApiState {
    /// After a write: answers may have changed, and the outbox has work.
    fn after_write(&self) {
        self.cache.clear();
        self.waker.wake();
    }

    /// A GET's answer through the coalescer: `read` runs, and counts as a
    /// database read, only when no identical read is in flight or fresh.
    async fn coalesced<T, F, Fut>(&self, key: String, read: F) -> envelope::ApiResult<Value>
    where
        T: Serialize,
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let store = self.store.clone();
        let reads = self.metrics.api_store_reads.clone();
        let answer = self
            .cache
            .read(key, || async move {
                reads.inc();
                let view = read(store).await?;
                Ok(serde_json::to_value(view).expect("API views serialize"))
            })
            .await?;
        envelope::ok(answer)
    }

    fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if self.profiles.current().knows_model(model) {
            Ok(())
        } else {
            Err(ApiError::unprocessable(
                "unknown_model",
                format!("no profile for device model {model:?}"),
            ))
        }
    }

    fn parse_ttl(&self, text: &str) -> Result<Duration, ApiError> {
        // Longer than commander.max_ttl waits max_ttl: the answer's
        // expires_at shows what applies.
        bounded_duration("ttl", text, "30s", self.desk.max_ttl)
    }
}

/// Paging through devices: `?limit=50&cursor=…`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DevicePageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (the id of its last device).
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub cursor: Option<String>,
}

/// Paging through a device's commands, newest first: `?limit=50&cursor=…`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommandPageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (`<requested at, Unix ms>_<command id>`).
    #[param(
        pattern = "^[0-9]{1,15}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The page size asked for, or why it is refused.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        other => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {other} must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// The answer to a cursor this API never returned.
fn unknown_cursor() -> ApiError {
    ApiError::bad_request("invalid_query", "cursor is not one this API returned")
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn new(items: Vec<T>, next_cursor: Option<String>) -> Self {
        Page { items, next_cursor }
    }
}

/// A duration parameter `name` (`30s`, `2h`): more than zero, and at most
/// `max` (a longer one is taken as `max`); refused 400 `invalid_<name>`
/// with `example` in the message.
pub(crate) fn bounded_duration(
    name: &str,
    text: &str,
    example: &str,
    max: Duration,
) -> Result<Duration, ApiError> {
    let code = format!("invalid_{name}");
    let duration = humantime::parse_duration(text).map_err(|error| {
        ApiError::bad_request(
            &code,
            format!("{name} {text:?}: {error} (like \"{example}\")"),
        )
    })?;
    if duration.is_zero() {
        return Err(ApiError::bad_request(
            &code,
            format!("{name} {text:?} must be more than 0s"),
        ));
    }
    Ok(duration.min(max))
}

/// Unix milliseconds as RFC 3339.
pub(crate) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(crate::clock::system_time(ms)).to_string()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wharf Commander API",
        description = "Devices, their twins and commands. Every answer is `{\"ok\":true,\"result\":…}` or `{\"ok\":false,\"error\":{\"code\":…,\"message\":…}}`.",
    ),
    modifiers(&BearerKey),
    security(("api_key" = [])),
    tags(
        (name = "devices", description = "The device registry and device tokens"),
        (name = "twin", description = "Reported and desired state"),
        (name = "commands", description = "Commands and their lifecycle"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `wharf api-key new` makes one"))
                    .build(),
            ),
        );
    }
}

/// The API's routes and its OpenAPI document.
fn router(api: Api) -> (axum::Router, utoipa::openapi::OpenApi) {
    let max_body = api.config.max_body_bytes;
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(devices::create_device, devices::list_devices))
        .routes(routes!(
            devices::get_device,
            devices::update_device,
            devices::delete_device
        ))
        .routes(routes!(devices::get_twin))
        .routes(routes!(devices::put_desired))
        .routes(routes!(commands::send_command))
        .routes(routes!(commands::list_device_commands))
        .routes(routes!(commands::get_command))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_api_key,
        ))
        .with_state(api.clone())
        .split_for_parts();
    let document = Arc::new(document::Document::new(&openapi));
    let profiles = api.profiles.clone();
    let router = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                let current = profiles.current();
                let mut models: Vec<&str> = current.models().collect();
                models.sort_unstable();
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    document.render(&models),
                )
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(api, count_responses));
    (router, openapi)
}

async fn require_api_key(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        None => ApiError::unauthorized("send an API key as Authorization: Bearer <api key>")
            .into_response(),
        Some(key) if !api.keys.verify(key.trim()) => {
            ApiError::unauthorized("the API key is not one this Commander accepts").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

async fn count_responses(State(api): State<Api>, request: Request, next: Next) -> Response {
    // This runs before authentication: a label from the request itself
    // must come from a closed set, or anyone could mint metric series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    api.metrics
        .api_responses
        .get_or_create(&[
            ("method", method),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not answer {method}", uri.path()),
    )
}

/// The API, bound and ready to serve.
pub(crate) struct ApiServer {
    listener: TcpListener,
    router: axum::Router,
    config: ApiConfig,
}

impl ApiServer {
    pub(crate) async fn bind(listen: SocketAddr, state: ApiState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| anyhow::anyhow!("failed to bind the API on {listen}: {error}"))?;
        let config = state.config.clone();
        let (router, _) = router(Api(Arc::new(state)));
        Ok(ApiServer {
            listener,
            router,
            config,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then finishes the requests in progress.
    ///
    /// Its own accept loop rather than `axum::serve`, for what a public
    /// listener needs: at most `max_connections` at once (past it, new
    /// connections wait in the backlog), and a client that does not send
    /// its headers within `header_timeout` (or leaves a keep-alive
    /// connection idle that long) is disconnected.
    pub(crate) async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::warn!(%error, "failed to accept an API connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(self.router.clone());
            let header_timeout = self.config.header_timeout;
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
                drop(slot);
            });
            // Reap the connections that ended, so the set stays small.
            while connections.try_join_next().is_some() {}
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Reads the request's body within `body_timeout` (408 otherwise) and at
/// most `max_body_bytes` of it (413), before anything else sees it: a
/// client trickling a body cannot hold a handler, or a connection slot, for
/// longer than that.
async fn read_body_in_time(State(api): State<Api>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = api.config.max_body_bytes;
    match tokio::time::timeout(api.config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => envelope::too_large().into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within commander.api.body_timeout ({})",
                humantime::format_duration(api.config.body_timeout)
            ),
        )
        .into_response(),
    }
}
