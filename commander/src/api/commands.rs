//! Commands through the API: ask for one, follow it to its terminal status,
//! list a device's recent ones.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use wharf_store::{CommandCursor, CommandRow};

use super::devices::{active_device, no_device};
use super::envelope::{ApiError, ApiJson, ApiOk, ApiPath, ApiQuery, ApiResult, Reply};
use super::{Api, CommandPageQuery, Page, page_limit, rfc3339, unknown_cursor};
use crate::desk::Desk;

/// A command to send.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The command's arguments, as its profile declares them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    /// How long it may wait for an offline device (`30s`, `2h`); the
    /// profile's default when absent; at most `commander.max_ttl` (a longer
    /// one waits that long).
    #[schema(pattern = "^[1-9][0-9]{0,8}(ms|s|m|h|d)$")]
    pub ttl: Option<String>,
}

/// A command and where it is in its lifecycle.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandView {
    pub id: Uuid,
    pub device: String,
    pub command: String,
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    /// `requested`, `queued`, `dispatched`, then one of `delivered`,
    /// `failed`, `rejected`, `expired`.
    pub status: String,
    /// Whether `status` is final.
    pub terminal: bool,
    /// Why it failed, was rejected or expired.
    pub reason: Option<String>,
    pub argument: Option<String>,
    pub detail: Option<String>,
    /// The Socket instance it went through.
    pub instance: Option<String>,
    pub requested_at: String,
    pub updated_at: String,
    /// When it stops waiting for an offline device.
    pub expires_at: Option<String>,
}

impl From<&CommandRow> for CommandView {
    fn from(row: &CommandRow) -> Self {
        CommandView {
            id: row.id,
            device: row.device.clone(),
            command: row.command.clone(),
            args: row.args.clone(),
            status: row.status.as_str().to_owned(),
            terminal: row.status.is_terminal(),
            reason: row.reason.clone(),
            argument: row.argument.clone(),
            detail: row.detail.clone(),
            instance: row.instance.clone(),
            requested_at: rfc3339(row.requested_at_ms),
            updated_at: rfc3339(row.updated_at_ms),
            expires_at: row.expires_at_ms.map(rfc3339),
        }
    }
}

#[utoipa::path(post, path = "/v1/devices/{id}/commands/{name}", tag = "commands",
    params(
        ("id" = String, Path, description = "Device id"),
        ("name" = String, Path, description = "Command name, as the model's profile declares it"),
    ),
    request_body(content = CommandRequest, description = "Arguments and time to live; may be omitted"),
    responses(
        (status = 202, description = "Accepted: sent now, or queued until the device connects", body = ApiOk<CommandView>),
        (status = 400, description = "Bad body or ttl", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
        (status = 422, description = "Rejected (unknown_command, unsupported, invalid_argument): recorded with status rejected", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn send_command(
    State(api): State<Api>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: Option<ApiJson<CommandRequest>>,
) -> ApiResult<CommandView> {
    let request = body.map(|ApiJson(request)| request).unwrap_or_default();
    let ttl = request
        .ttl
        .as_deref()
        .map(|ttl| api.parse_ttl(ttl))
        .transpose()?;
    let device = active_device(&api.store, &id).await?;
    let command_id = wharf_events::new_id();
    let row = CommandRow::requested(
        command_id,
        command_id,
        &device.id,
        &device.model,
        &name,
        request.args,
        ttl.map(|ttl| ttl.as_millis().min(i64::MAX as u128) as i64),
    );
    let firmware = device.metadata.get("firmware").and_then(Value::as_str);
    if let Err(rejection) = Desk::check(&api.profiles.current(), &row, firmware) {
        api.desk
            .record_rejected(&api.store, &row, &rejection)
            .await?;
        api.after_write();
        let mut error = ApiError::unprocessable(rejection.reason.as_str(), rejection.detail);
        error.detail.command_id = Some(command_id);
        error.detail.argument = rejection.argument;
        return Err(error);
    }
    api.desk.record_request(&api.store, &row).await?;
    api.after_write();
    Ok(Reply(StatusCode::ACCEPTED, CommandView::from(&row)))
}

#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id")),
    responses(
        (status = 200, description = "The command", body = ApiOk<CommandView>),
        (status = 400, description = "Not a command id", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such command", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn get_command(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Value> {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            format!("{id:?} is not a command id (a UUID)"),
        )
    })?;
    api.coalesced(format!("command:{id}"), |store| async move {
        let row = store
            .command(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("command {id} does not exist")))?;
        Ok(CommandView::from(&row))
    })
    .await
}

#[utoipa::path(get, path = "/v1/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "Device id"), CommandPageQuery),
    responses(
        (status = 200, description = "The device's commands, newest first", body = ApiOk<Page<CommandView>>),
        (status = 400, description = "Bad limit or cursor", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn list_device_commands(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<CommandPageQuery>,
) -> ApiResult<Value> {
    let limit = page_limit(page.limit)?;
    let before = page
        .cursor
        .as_deref()
        .map(parse_command_cursor)
        .transpose()?;
    let key = format!(
        "commands:{id}:{limit}:{}",
        page.cursor.as_deref().unwrap_or("")
    );
    api.coalesced(key, |store| async move {
        let rows = store
            .device_commands(&id, limit + 1, before.as_ref())
            .await?;
        // Devices that were never registered still have commands (rules
        // ask for them); a device with neither is unknown, and a deleted
        // one is gone, its history with it.
        match store.device(&id).await? {
            Some(device) if device.revoked_at_ms.is_some() => return Err(no_device(&id)),
            None if rows.is_empty() && before.is_none() => return Err(no_device(&id)),
            _ => {}
        }
        let next = (rows.len() > limit as usize).then(|| {
            let last = &rows[limit as usize - 1];
            format!("{}_{}", last.requested_at_ms, last.id)
        });
        let items: Vec<CommandView> = rows
            .iter()
            .take(limit as usize)
            .map(CommandView::from)
            .collect();
        Ok(Page::new(items, next))
    })
    .await
}

fn parse_command_cursor(text: &str) -> Result<CommandCursor, ApiError> {
    let parsed = text.split_once('_').and_then(|(at, id)| {
        Some(CommandCursor {
            requested_at_ms: at.parse().ok()?,
            id: id.parse().ok()?,
        })
    });
    parsed.ok_or_else(unknown_cursor)
}
