//! `/v1/devices`: the device registry, device tokens, revocation, and the
//! twin (reported state from the Receiver, desired state set here).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use wharf_events::{DesiredStateChanged, DeviceRevoked, Envelope, Event};
use wharf_store::{Created, DeviceRow, unix_millis};

use super::envelope::{ApiError, ApiJson, ApiOk, ApiPath, ApiQuery, ApiResult, Reply, ok};
use super::{Api, DevicePageQuery, Page, page_limit, rfc3339, unknown_cursor};
use crate::desk::emit;

/// A registered device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub model: String,
    /// Free-form JSON for apps; `firmware` (a version like `2.1.0`) is
    /// checked against profiles' firmware requirements.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&DeviceRow> for DeviceView {
    fn from(row: &DeviceRow) -> Self {
        DeviceView {
            id: row.id.clone(),
            model: row.model.clone(),
            metadata: row.metadata.clone(),
            created_at: rfc3339(row.created_at_ms),
            updated_at: rfc3339(row.updated_at_ms),
        }
    }
}

/// A device to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Letters, digits, `.`, `_`, `:` and `-`; at most 128 characters.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: String,
    /// A model with a profile.
    pub model: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// A device's new model and metadata (the model cannot change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    pub model: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// A registered device and the token it connects with.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCreated {
    pub device: DeviceView,
    /// Present it at the handshake (WebSocket `Authorization: Bearer`,
    /// MQTT password, first TCP frame, UDP `HELLO`).
    pub token: String,
    pub token_expires_at: String,
}

/// A deleted device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDeleted {
    pub id: String,
    /// Tokens issued before this no longer connect; live connections close.
    pub tokens_issued_before: String,
}

/// What the device reports, what it should have, and what it still lacks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TwinView {
    pub device: String,
    #[schema(value_type = Object)]
    pub reported: Map<String, Value>,
    #[schema(value_type = Object)]
    pub desired: Map<String, Value>,
    /// Desired keys whose reported value differs.
    #[schema(value_type = Object)]
    pub delta: Map<String, Value>,
    pub connected: bool,
    pub last_seen: Option<String>,
    pub message_count: i64,
}

/// A desired-state change accepted for the Receiver.
#[derive(Debug, Serialize, ToSchema)]
pub struct DesiredAccepted {
    pub device: String,
    /// The patch: each key set to its value, `null` removes it.
    #[schema(value_type = Object)]
    pub desired: Map<String, Value>,
}

#[utoipa::path(post, path = "/v1/devices", tag = "devices",
    request_body = NewDevice,
    responses(
        (status = 201, description = "Registered", body = ApiOk<DeviceCreated>),
        (status = 400, description = "Invalid id or body", body = super::envelope::ApiErrorBody),
        (status = 409, description = "A device with this id exists", body = super::envelope::ApiErrorBody),
        (status = 422, description = "No profile for the model", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn create_device(
    State(api): State<Api>,
    ApiJson(new): ApiJson<NewDevice>,
) -> ApiResult<DeviceCreated> {
    check_device_id(&new.id)?;
    api.check_model(&new.model)?;
    check_metadata(&new.metadata)?;
    let row = DeviceRow {
        id: new.id,
        model: new.model,
        metadata: new.metadata,
        ..DeviceRow::default()
    };
    let mut tx = api.store.begin().await?;
    let Created::Created { revoked_at_ms } = tx.create_device(&row).await? else {
        return Err(ApiError::conflict(format!(
            "device {} already exists",
            row.id
        )));
    };
    tx.commit().await?;
    api.cache.clear();
    // A device created again after a deletion gets tokens issued after it:
    // the Socket refuses every token issued before the revocation.
    let now = unix_secs(SystemTime::now());
    let issued_at = revoked_at_ms.map_or(now, |ms| now.max(revocation_second(ms)));
    let expires_at = issued_at + api.config.token_ttl.as_secs();
    let token = api
        .issuer
        .issue_at(&row.id, &row.model, issued_at, expires_at)
        .map_err(|error| ApiError::bad_request("invalid_device", error.to_string()))?;
    let stored = api.store.device(&row.id).await?.unwrap_or(row);
    Ok(Reply(
        StatusCode::CREATED,
        DeviceCreated {
            device: DeviceView::from(&stored),
            token,
            token_expires_at: rfc3339(expires_at as i64 * 1000),
        },
    ))
}

#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    params(DevicePageQuery),
    responses(
        (status = 200, description = "A page of devices, by id", body = ApiOk<Page<DeviceView>>),
        (status = 400, description = "Bad limit or cursor", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn list_devices(
    State(api): State<Api>,
    ApiQuery(page): ApiQuery<DevicePageQuery>,
) -> ApiResult<Value> {
    let limit = page_limit(page.limit)?;
    let after = page.cursor;
    if let Some(cursor) = &after {
        check_device_id(cursor).map_err(|_| unknown_cursor())?;
    }
    let key = format!("devices:{limit}:{}", after.as_deref().unwrap_or(""));
    api.coalesced(key, |store| async move {
        let rows = store.devices(limit + 1, after.as_deref()).await?;
        let next = (rows.len() > limit as usize).then(|| rows[limit as usize - 1].id.clone());
        let items: Vec<DeviceView> = rows
            .iter()
            .take(limit as usize)
            .map(DeviceView::from)
            .collect();
        Ok(Page::new(items, next))
    })
    .await
}

#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The device", body = ApiOk<DeviceView>),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn get_device(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Value> {
    api.coalesced(format!("device:{id}"), |store| async move {
        let row = active_device(&store, &id).await?;
        Ok(DeviceView::from(&row))
    })
    .await
}

#[utoipa::path(put, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = DeviceUpdate,
    responses(
        (status = 200, description = "Updated", body = ApiOk<DeviceView>),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
        (status = 409, description = "The model would change", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn update_device(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
    ApiJson(update): ApiJson<DeviceUpdate>,
) -> ApiResult<DeviceView> {
    check_metadata(&update.metadata)?;
    let existing = active_device(&api.store, &id).await?;
    if existing.model != update.model {
        return Err(ApiError::conflict(format!(
            "device {id} is a {:?}; the model cannot change (delete the device and create it again)",
            existing.model
        )));
    }
    let mut tx = api.store.begin().await?;
    if !tx
        .update_device(&id, &update.model, &update.metadata)
        .await?
    {
        return Err(no_device(&id));
    }
    tx.commit().await?;
    api.cache.clear();
    let row = active_device(&api.store, &id).await?;
    ok(DeviceView::from(&row))
}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "Deleted: its tokens stop working, its connection closes", body = ApiOk<DeviceDeleted>),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn delete_device(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<DeviceDeleted> {
    let Some(current) = api
        .store
        .device(&id)
        .await?
        .filter(|row| row.revoked_at_ms.is_none())
    else {
        return Err(no_device(&id));
    };
    let revoked_at_ms = revocation_moment(unix_millis(SystemTime::now()), current.created_at_ms);
    let tokens_issued_before = UNIX_EPOCH + Duration::from_secs(revocation_second(revoked_at_ms));
    let mut tx = api.store.begin().await?;
    if !tx.revoke_device(&id, revoked_at_ms).await? {
        return Err(no_device(&id));
    }
    let revoked = Envelope::new(
        id.clone(),
        api.desk.instance.clone(),
        Event::DeviceRevoked(DeviceRevoked {
            tokens_issued_before,
        }),
    );
    emit(
        &mut tx,
        &api.desk.instance,
        &api.desk.topics.revocations(),
        &revoked,
    )
    .await?;
    tx.commit().await?;
    api.after_write();
    ok(DeviceDeleted {
        id,
        tokens_issued_before: humantime::format_rfc3339_millis(tokens_issued_before).to_string(),
    })
}

#[utoipa::path(get, path = "/v1/devices/{id}/twin", tag = "twin",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The twin", body = ApiOk<TwinView>),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn get_twin(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Value> {
    api.coalesced(format!("twin:{id}"), |store| async move {
        active_device(&store, &id).await?;
        let state = store.load_device_state(&id).await?.unwrap_or_default();
        let twin = TwinView {
            delta: state.delta(),
            device: id,
            reported: state.reported,
            desired: state.desired,
            connected: state.connected,
            last_seen: state.last_seen_ms.map(rfc3339),
            message_count: state.message_count,
        };
        Ok(twin)
    })
    .await
}

#[utoipa::path(put, path = "/v1/devices/{id}/twin/desired", tag = "twin",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Object, description = "A patch: each key set to its value, null removes it"),
    responses(
        (status = 202, description = "Accepted: the Receiver applies it and sends the delta", body = ApiOk<DesiredAccepted>),
        (status = 400, description = "Not a non-empty JSON object", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn put_desired(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<DesiredAccepted> {
    let Value::Object(desired) = patch else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the desired state must be a JSON object of keys to set (null removes a key)",
        ));
    };
    if desired.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the desired state patch is empty",
        ));
    }
    active_device(&api.store, &id).await?;
    let change = Envelope::new(
        id.clone(),
        api.desk.instance.clone(),
        Event::DesiredStateChanged(DesiredStateChanged {
            desired: desired.clone(),
        }),
    );
    let mut tx = api.store.begin().await?;
    emit(
        &mut tx,
        &api.desk.instance,
        &api.desk.topics.device_events(),
        &change,
    )
    .await?;
    tx.commit().await?;
    api.after_write();
    Ok(Reply(
        StatusCode::ACCEPTED,
        DesiredAccepted {
            device: id,
            desired,
        },
    ))
}

/// The device with `id`, unless it does not exist or was deleted.
pub(super) async fn active_device(
    store: &wharf_store::Store,
    id: &str,
) -> Result<DeviceRow, ApiError> {
    store
        .device(id)
        .await?
        .filter(|row| row.revoked_at_ms.is_none())
        .ok_or_else(|| no_device(id))
}

pub(super) fn no_device(id: &str) -> ApiError {
    ApiError::not_found(format!("device {id} does not exist"))
}

/// Device ids travel in MQTT topics, Kafka keys and URLs.
fn check_device_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_device_id",
            format!("device id {id:?} must be 1 to 128 letters, digits, '.', '_', ':' or '-'"),
        ))
    }
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    match metadata.get("firmware") {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_body",
            format!("metadata.firmware must be a version string like \"2.1.0\", not {other}"),
        )),
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first whole second after `ms`: tokens issued (whole seconds)
/// before it predate the revocation.
fn revocation_second(ms: i64) -> u64 {
    (ms.max(0) as u64) / 1000 + 1
}

/// When a device created at `created_at_ms` counts as revoked, for a delete
/// at `now_ms`: tokens issued before [`revocation_second`] of it stop
/// working. Usually `now_ms`. But tokens of a device created again after a
/// deletion are dated up to the second after that deletion, and its
/// creation is dated no earlier than the deletion (the store sees to it):
/// every token of the device is dated at most `revocation_second` of its
/// creation, and the revocation is moved past that. So revoking is
/// monotonic even when deletes and creations fall within one second.
fn revocation_moment(now_ms: i64, created_at_ms: i64) -> i64 {
    now_ms.max(revocation_second(created_at_ms) as i64 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_covers_every_token_issued_so_far_even_within_one_second() {
        // Created long ago, deleted at 100.1 s: tokens with iat < 101 refused.
        let mut revoked_at = revocation_moment(100_100, 5_000);
        assert_eq!(revocation_second(revoked_at), 101);
        // Deleted and created again, five times within the same second.
        for now in [100_200, 100_400, 100_600, 100_800, 100_900] {
            // Created again (the store dates it no earlier than the deletion);
            // its token is dated after the revocation (create_device).
            let created_at = now.max(revoked_at);
            let token_iat = (now as u64 / 1000).max(revocation_second(revoked_at));
            // Deleted again a moment later: that token is refused too.
            revoked_at = revocation_moment(now + 50, created_at);
            assert!(
                revocation_second(revoked_at) > token_iat,
                "token dated {token_iat} survives a revocation at {revoked_at}"
            );
        }
    }

    #[test]
    fn a_device_created_long_ago_is_revoked_now() {
        assert_eq!(revocation_moment(500_700, 100_300), 500_700);
    }
}
