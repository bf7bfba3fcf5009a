//! Commands through the API: ask for one, follow it to its terminal status,
//! list a device's recent ones.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use wharf_events::FailureReason;
use wharf_store::{CommandCursor, CommandRow, CommandStatus};

use super::devices::{active_device, no_device};
use super::envelope::{ApiError, ApiJson, ApiOk, ApiPath, ApiQuery, ApiResult, Reply};
use super::waiting::Sharing;
use super::{Api, CommandPageQuery, Page, page_limit, rfc3339, unknown_cursor};
use crate::clock;
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
    /// `requested`, `queued`, `dispatched`, (`awaiting_reply`,) then one
    /// of `delivered`, `succeeded`, `failed`, `rejected`, `expired`,
    /// `timed_out`.
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
    /// When it stops waiting for an offline device (or, while
    /// `awaiting_reply`, for the device's answer).
    pub expires_at: Option<String>,
    /// What the device answered (commands whose profile says `reply`):
    /// its result when `succeeded`, its error when `failed` with
    /// `device_error`.
    pub reply: Option<Value>,
}

/// `?wait=5s`: answer once the command ended, or when the wait runs out.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// How long to wait for the command's end (`500ms`, `10s`); at most
    /// `commander.api.max_wait` (a longer one waits that long).
    #[param(pattern = "^[1-9][0-9]{0,8}(ms|s|m|h)$")]
    pub wait: Option<String>,
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
            reply: row.reply.clone(),
        }
    }
}

#[utoipa::path(post, path = "/v1/devices/{id}/commands/{name}", tag = "commands",
    params(
        ("id" = String, Path, description = "Device id"),
        ("name" = String, Path, description = "Command name, as the model's profile declares it"),
        WaitQuery,
    ),
    request_body(content = CommandRequest, description = "Arguments and time to live; may be omitted"),
    responses(
        (status = 200, description = "With wait: the command ended in time (its status, and the device's reply for reply commands)", body = ApiOk<CommandView>),
        (status = 202, description = "Accepted: sent now, or queued until the device connects (with wait: it had not ended when the wait ran out; poll it)", body = ApiOk<CommandView>),
        (status = 424, description = "With wait: the device answered that it could not carry the command out (device_error; its error is in error.reply)", body = super::envelope::ApiErrorBody),
        (status = 400, description = "Bad body or ttl", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such device", body = super::envelope::ApiErrorBody),
        (status = 422, description = "Rejected (unknown_command, unsupported, invalid_argument): recorded with status rejected", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn send_command(
    State(api): State<Api>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    body: Option<ApiJson<CommandRequest>>,
) -> ApiResult<CommandView> {
    let request = body.map(|ApiJson(request)| request).unwrap_or_default();
    let ttl = request
        .ttl
        .as_deref()
        .map(|ttl| api.parse_ttl(ttl))
        .transpose()?;
    let wait = query
        .wait
        .as_deref()
        .map(|wait| api.waiting.parse_wait(wait))
        .transpose()?;
    // Taken before anything is sent: a request refused for want of room
    // leaves no command behind.
    let _slot = wait.map(|_| api.waiting.slot()).transpose()?;
    let device = active_device(&api.store, &id).await?;
    // One snapshot of the profiles for the whole request (a reload between
    // two reads could otherwise share by one profile and check by another).
    let profiles = api.profiles.current();
    let reply = profiles
        .command(&device.model, &name)
        .ok()
        .and_then(|profile| profile.reply());
    let command_id = match reply.filter(|reply| reply.idempotent) {
        Some(reply) => match api
            .waiting
            .share(&device.id, &name, &request.args, reply.cache)
        {
            Sharing::Join(shared) => {
                // Nobody waited for it to end (asked without `wait`), so the
                // entry could not know: an answer older than reply_cache is
                // not shared.
                let ended_long_ago = api.store.command(shared).await?.is_some_and(|row| {
                    row.status.is_terminal()
                        && clock::now_ms() > clock::after(row.updated_at_ms, reply.cache)
                });
                if ended_long_ago {
                    api.waiting
                        .ask_again(&device.id, &name, &request.args, reply.cache)
                } else {
                    api.metrics.coalesced_commands.inc();
                    return answer_shared(&api, shared, wait).await;
                }
            }
            Sharing::Ask(id) => id,
        },
        None => wharf_events::new_id(),
    };
    let shared_args = request.args.clone();
    let row = CommandRow::requested(
        command_id,
        command_id,
        &device.id,
        &device.model,
        &name,
        request.args,
        ttl.map(crate::clock::millis),
    );
    let firmware = device.metadata.get("firmware").and_then(Value::as_str);
    if let Err(rejection) = Desk::check(&profiles, &row, firmware) {
        api.waiting.unshare(&device.id, &name, &shared_args);
        api.desk
            .record_rejected(&api.store, &row, &rejection)
            .await?;
        api.after_write();
        let mut error = ApiError::unprocessable(rejection.reason.as_str(), rejection.detail);
        error.detail.command_id = Some(command_id);
        error.detail.argument = rejection.argument;
        return Err(error);
    }
    if let Err(error) = api.desk.record_request(&api.store, &row).await {
        api.waiting.unshare(&device.id, &name, &shared_args);
        return Err(error.into());
    }
    api.after_write();
    match wait {
        None => Ok(Reply(StatusCode::ACCEPTED, CommandView::from(&row))),
        Some(wait) => {
            let now = api
                .waiting
                .until_ended(&api.store, &api.desk, command_id, wait)
                .await?;
            answer(now.as_ref().unwrap_or(&row))
        }
    }
}

/// How long a request sharing a command waits for it to be recorded by the
/// request that asked for it, when it does not wait for its end.
const SHARED_RECORDING: Duration = Duration::from_secs(2);

/// The answer to a request that shares `id` with an identical one.
async fn answer_shared(api: &Api, id: Uuid, wait: Option<Duration>) -> ApiResult<CommandView> {
    let row = api
        .waiting
        .until_ended(&api.store, &api.desk, id, wait.unwrap_or(SHARED_RECORDING))
        .await?;
    let row = match row {
        Some(row) => row,
        // The request that asked for it has not recorded it yet.
        None => api
            .waiting
            .until_ended(&api.store, &api.desk, id, SHARED_RECORDING)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "an identical command is being asked for; retry",
                )
            })?,
    };
    if wait.is_none() && !row.status.is_terminal() {
        return Ok(Reply(StatusCode::ACCEPTED, CommandView::from(&row)));
    }
    answer(&row)
}

/// A waited-for command as the API answers it: 200 once it ended, 424 when
/// the device answered with its own error, 202 while it goes on.
fn answer(row: &CommandRow) -> ApiResult<CommandView> {
    if row.status == CommandStatus::Failed
        && row.reason.as_deref() == Some(FailureReason::DeviceError.as_str())
    {
        let mut error = ApiError::new(
            StatusCode::FAILED_DEPENDENCY,
            FailureReason::DeviceError.as_str(),
            row.detail.clone().unwrap_or_default(),
        );
        error.detail.command_id = Some(row.id);
        error.detail.reply = row.reply.clone().map(Box::new);
        return Err(error);
    }
    let status = if row.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(Reply(status, CommandView::from(row)))
}

#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = Uuid, Path, description = "Command id"), WaitQuery),
    responses(
        (status = 200, description = "The command", body = ApiOk<CommandView>),
        (status = 400, description = "Not a command id", body = super::envelope::ApiErrorBody),
        (status = 404, description = "No such command", body = super::envelope::ApiErrorBody),
    ))]
pub(super) async fn get_command(
    State(api): State<Api>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> ApiResult<Value> {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            format!("{id:?} is not a command id (a UUID)"),
        )
    })?;
    if let Some(wait) = query.wait.as_deref() {
        // A long poll: until the command ends, or the wait runs out.
        let wait = api.waiting.parse_wait(wait)?;
        let _slot = api.waiting.slot()?;
        if api.store.command(id).await?.is_none() {
            return Err(ApiError::not_found(format!("command {id} does not exist")));
        }
        let row = api
            .waiting
            .until_ended(&api.store, &api.desk, id, wait)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("command {id} does not exist")))?;
        let view = serde_json::to_value(CommandView::from(&row)).expect("API views serialize");
        return super::envelope::ok(view);
    }
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
