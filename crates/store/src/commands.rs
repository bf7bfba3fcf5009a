//! The `commands` table: every command, its arguments and where it is in
//! its lifecycle. Status changes are compare-and-set, so two Commander
//! instances never both send (or both expire) one command.

use std::time::SystemTime;

use serde_json::{Map, Value};
use sqlx::Row as _;
use uuid::Uuid;

use crate::{Error, Result, Store, StoreTx, unix_millis};

/// Where a command is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Recorded, not handled yet.
    Requested,
    /// Waiting for its offline device.
    Queued,
    /// Sent to the Socket instance holding the device.
    Dispatched,
    /// Delivered, and the device's answer is awaited until `expires_at_ms`
    /// (commands whose profile says `reply = true`).
    AwaitingReply,
    Delivered,
    /// The device answered `ok`.
    Succeeded,
    Failed,
    Rejected,
    Expired,
    /// No answer came within the profile's `reply_timeout`.
    TimedOut,
}

impl CommandStatus {
    /// The name stored and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Requested => "requested",
            CommandStatus::Queued => "queued",
            CommandStatus::Dispatched => "dispatched",
            CommandStatus::AwaitingReply => "awaiting_reply",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::TimedOut => "timed_out",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "requested" => CommandStatus::Requested,
            "queued" => CommandStatus::Queued,
            "dispatched" => CommandStatus::Dispatched,
            "awaiting_reply" => CommandStatus::AwaitingReply,
            "delivered" => CommandStatus::Delivered,
            "succeeded" => CommandStatus::Succeeded,
            "timed_out" => CommandStatus::TimedOut,
            "failed" => CommandStatus::Failed,
            "rejected" => CommandStatus::Rejected,
            "expired" => CommandStatus::Expired,
            _ => return None,
        })
    }

    /// Whether the command is settled for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CommandStatus::Delivered
                | CommandStatus::Succeeded
                | CommandStatus::TimedOut
                | CommandStatus::Failed
                | CommandStatus::Rejected
                | CommandStatus::Expired
        )
    }
}

/// One command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub id: Uuid,
    pub device: String,
    pub model: String,
    pub command: String,
    /// The first event of the chain that asked for the command.
    pub correlation: Uuid,
    pub args: Map<String, Value>,
    pub status: CommandStatus,
    /// Why it failed, was rejected or expired (a stable code).
    pub reason: Option<String>,
    /// The argument at fault, for `invalid_argument`.
    pub argument: Option<String>,
    /// A sentence for humans.
    pub detail: Option<String>,
    /// The Socket instance it went through.
    pub instance: Option<String>,
    /// The time to live asked for; the profile's default when `None`.
    pub ttl_ms: Option<i64>,
    /// When the command's time to live ends (set once it is queued or
    /// dispatched): a queued command expires then, and a Socket does not
    /// write a dispatched one after it.
    pub expires_at_ms: Option<i64>,
    pub requested_at_ms: i64,
    pub updated_at_ms: i64,
    /// What the device answered (its result, or its error), for commands
    /// that expect a reply.
    pub reply: Option<Value>,
}

impl CommandRow {
    /// A command just requested.
    pub fn requested(
        id: Uuid,
        correlation: Uuid,
        device: &str,
        model: &str,
        command: &str,
        args: Map<String, Value>,
        ttl_ms: Option<i64>,
    ) -> Self {
        let now = unix_millis(SystemTime::now());
        CommandRow {
            id,
            device: device.to_owned(),
            model: model.to_owned(),
            command: command.to_owned(),
            correlation,
            args,
            status: CommandStatus::Requested,
            reason: None,
            argument: None,
            detail: None,
            instance: None,
            ttl_ms,
            expires_at_ms: None,
            requested_at_ms: now,
            updated_at_ms: now,
            reply: None,
        }
    }
}

/// A status change and what it records beside the status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub status: CommandStatus,
    pub reason: Option<String>,
    pub argument: Option<String>,
    pub detail: Option<String>,
    /// Kept as it was when `None`.
    pub instance: Option<String>,
    /// Kept as it was when `None`.
    pub expires_at_ms: Option<i64>,
    /// The device's answer; kept as it was when `None`.
    pub reply: Option<Value>,
}

impl StatusChange {
    /// A change to `status` recording nothing else.
    pub fn to(status: CommandStatus) -> Self {
        StatusChange {
            status,
            reason: None,
            argument: None,
            detail: None,
            instance: None,
            expires_at_ms: None,
            reply: None,
        }
    }

    /// The same change with a reason and a detail.
    pub fn because(mut self, reason: &str, detail: impl Into<String>) -> Self {
        self.reason = Some(reason.to_owned());
        self.detail = Some(detail.into());
        self
    }
}

/// Where a page of a device's commands ends: the next page starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCursor {
    pub requested_at_ms: i64,
    pub id: Uuid,
}

const SELECT: &str = "SELECT id, device, model, command, correlation, args, status, reason, argument, detail, \
                      instance, ttl_ms, expires_at_ms, requested_at_ms, updated_at_ms, reply FROM commands";

impl Store {
    /// The command with `id`.
    pub async fn command(&self, id: Uuid) -> Result<Option<CommandRow>> {
        self.count_statements(1);
        let sql = format!("{SELECT} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| decode(&row)).transpose()
    }

    /// Up to `limit` of `device`'s commands, newest first, older than
    /// `before` when given.
    pub async fn device_commands(
        &self,
        device: &str,
        limit: u32,
        before: Option<&CommandCursor>,
    ) -> Result<Vec<CommandRow>> {
        self.count_statements(1);
        let order = format!("ORDER BY requested_at_ms DESC, id DESC LIMIT {limit}");
        let rows = match before {
            None => {
                let sql = format!("{SELECT} WHERE device = $1 {order}");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(device)
                    .fetch_all(self.pool())
                    .await?
            }
            Some(cursor) => {
                let sql = format!(
                    "{SELECT} WHERE device = $1 AND (requested_at_ms < $2 \
                     OR (requested_at_ms = $3 AND id < $4)) {order}"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(device)
                    .bind(cursor.requested_at_ms)
                    .bind(cursor.requested_at_ms)
                    .bind(cursor.id.to_string())
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(decode).collect()
    }

    /// Up to `limit` queued commands whose time to live has passed at
    /// `now_ms`, oldest first.
    pub async fn expired_queued(&self, now_ms: i64, limit: u32) -> Result<Vec<CommandRow>> {
        self.oldest_in_status(CommandStatus::Queued, "expires_at_ms", now_ms, limit)
            .await
    }

    /// Up to `limit` commands dispatched at or before `dispatched_before_ms`
    /// that are still waiting for their outcome, oldest first.
    pub async fn overdue_dispatched(
        &self,
        dispatched_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRow>> {
        self.oldest_in_status(
            CommandStatus::Dispatched,
            "updated_at_ms",
            dispatched_before_ms,
            limit,
        )
        .await
    }

    /// Up to `limit` commands whose device's answer was due at or before
    /// `now_ms` and has not come, oldest deadline first.
    pub async fn overdue_replies(&self, now_ms: i64, limit: u32) -> Result<Vec<CommandRow>> {
        self.oldest_in_status(CommandStatus::AwaitingReply, "expires_at_ms", now_ms, limit)
            .await
    }

    /// Up to `limit` commands in `status` whose `column` (a time, a
    /// constant of this module) is at or before `until_ms`, oldest first.
    async fn oldest_in_status(
        &self,
        status: CommandStatus,
        column: &'static str,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRow>> {
        self.count_statements(1);
        let sql = format!(
            "{SELECT} WHERE status = $1 AND {column} <= $2 ORDER BY {column} LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(until_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Every device with queued commands, read in pages of `page` devices
    /// (keyset pagination by device id, so a large backlog never becomes
    /// one huge result).
    pub async fn devices_with_queued_commands(&self, page: u32) -> Result<Vec<String>> {
        let mut devices: Vec<String> = Vec::new();
        loop {
            self.count_statements(1);
            let sql = format!(
                "SELECT DISTINCT device FROM commands WHERE status = 'queued' AND device > $1 \
                 ORDER BY device LIMIT {page}"
            );
            let after = devices.last().cloned().unwrap_or_default();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .fetch_all(self.pool())
                .await?;
            let count = rows.len();
            for row in &rows {
                devices.push(row.try_get("device")?);
            }
            if count < page as usize {
                return Ok(devices);
            }
        }
    }
}

impl StoreTx {
    /// Records `row` unless a command with its id exists; whether it was new.
    pub async fn insert_command(&mut self, row: &CommandRow) -> Result<bool> {
        self.statements += 1;
        let result = sqlx::query(
            "INSERT INTO commands (id, device, model, command, correlation, args, status, reason, \
             argument, detail, instance, ttl_ms, expires_at_ms, requested_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(row.id.to_string())
        .bind(row.device.clone())
        .bind(row.model.clone())
        .bind(row.command.clone())
        .bind(row.correlation.to_string())
        .bind(Value::Object(row.args.clone()).to_string())
        .bind(row.status.as_str())
        .bind(row.reason.clone())
        .bind(row.argument.clone())
        .bind(row.detail.clone())
        .bind(row.instance.clone())
        .bind(row.ttl_ms)
        .bind(row.expires_at_ms)
        .bind(row.requested_at_ms)
        .bind(row.updated_at_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The command with `id`, as this transaction sees it.
    pub async fn command(&mut self, id: Uuid) -> Result<Option<CommandRow>> {
        self.statements += 1;
        let sql = format!("{SELECT} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|row| decode(&row)).transpose()
    }

    /// Applies `change` if the command's status is still `from`; whether it
    /// did. Concurrent transactions cannot both succeed.
    pub async fn transition(
        &mut self,
        id: Uuid,
        from: CommandStatus,
        change: &StatusChange,
    ) -> Result<bool> {
        self.statements += 1;
        let result = sqlx::query(
            "UPDATE commands SET status = $1, reason = $2, argument = $3, detail = $4, \
             instance = COALESCE($5, instance), expires_at_ms = COALESCE($6, expires_at_ms), \
             updated_at_ms = $7, reply = COALESCE($10, reply) WHERE id = $8 AND status = $9",
        )
        .bind(change.status.as_str())
        .bind(change.reason.clone())
        .bind(change.argument.clone())
        .bind(change.detail.clone())
        .bind(change.instance.clone())
        .bind(change.expires_at_ms)
        .bind(unix_millis(SystemTime::now()))
        .bind(id.to_string())
        .bind(from.as_str())
        .bind(change.reply.as_ref().map(Value::to_string))
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// `device`'s queued commands, oldest first.
    pub async fn queued_commands(&mut self, device: &str) -> Result<Vec<CommandRow>> {
        self.oldest_queued(device, u32::MAX).await
    }

    /// `device`'s `limit` oldest queued commands, oldest first.
    pub async fn oldest_queued(&mut self, device: &str, limit: u32) -> Result<Vec<CommandRow>> {
        self.statements += 1;
        let sql = format!(
            "{SELECT} WHERE device = $1 AND status = 'queued' ORDER BY requested_at_ms, id LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// How many commands `device` has queued.
    pub async fn queued_count(&mut self, device: &str) -> Result<u64> {
        self.statements += 1;
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) AS queued FROM commands WHERE device = $1 AND status = 'queued'",
        )
        .bind(device)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("queued")?;
        Ok(count.max(0) as u64)
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<CommandRow> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str, reason: &str| Error::Corrupt {
        what: format!("commands.{what} of {id}"),
        reason: reason.to_owned(),
    };
    let args: String = row.try_get("args")?;
    let args = match serde_json::from_str(&args) {
        Ok(Value::Object(map)) => map,
        _ => return Err(corrupt("args", "not a JSON object")),
    };
    let status: String = row.try_get("status")?;
    let correlation: String = row.try_get("correlation")?;
    Ok(CommandRow {
        correlation: correlation
            .parse()
            .map_err(|_| corrupt("correlation", "not a UUID"))?,
        id: id.parse().map_err(|_| corrupt("id", "not a UUID"))?,
        status: CommandStatus::parse(&status).ok_or_else(|| corrupt("status", "unknown status"))?,
        device: row.try_get("device")?,
        model: row.try_get("model")?,
        command: row.try_get("command")?,
        args,
        reason: row.try_get("reason")?,
        argument: row.try_get("argument")?,
        detail: row.try_get("detail")?,
        instance: row.try_get("instance")?,
        ttl_ms: row.try_get("ttl_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        requested_at_ms: row.try_get("requested_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        reply: match row.try_get::<Option<String>, _>("reply")? {
            None => None,
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|_| corrupt("reply", "not JSON"))?)
            }
        },
    })
}
