//! Deliveries: this instance's `deliveries.<instance>` topic carries the
//! `CommandDispatched` events for the devices it holds. Each frame is handed
//! to the device's session task, and the outcome (`CommandDelivered` or
//! `CommandFailed`) is published before the delivery's offset is committed.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use wharf_bus::{BusConsumer, Consumer as _, Message};
use wharf_events::{CommandDispatched, Envelope, Event, FailureReason};

use crate::Shared;
use crate::live::Outbound;

/// Delivers until `shutdown`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut consumer: BusConsumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let message = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => message.context("failed to read the deliveries topic")?,
        };
        deliver(&shared, &message).await?;
        consumer
            .commit(&[message.next_position()])
            .await
            .context("failed to commit a delivery")?;
    }
}

async fn deliver(shared: &Shared, message: &Message) -> anyhow::Result<()> {
    let envelope = match Envelope::from_json(&message.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            count(shared, "undecodable");
            warn!(%error, partition = message.partition, offset = message.offset, "skipping an undecodable delivery");
            return Ok(());
        }
    };
    let Event::CommandDispatched(command) = &envelope.event else {
        count(shared, "unexpected");
        warn!(
            kind = envelope.kind(),
            offset = message.offset,
            "skipping an event that is not a delivery"
        );
        return Ok(());
    };
    let outcome = write_to_device(shared, &envelope.device, command).await;
    count(
        shared,
        if outcome.is_ok() {
            "delivered"
        } else {
            "failed"
        },
    );
    shared
        .events
        .delivery_outcome(&envelope, command, outcome)
        .await
        .context("failed to publish a delivery outcome")
}

async fn write_to_device(
    shared: &Shared,
    device: &str,
    command: &CommandDispatched,
) -> Result<(), (FailureReason, String)> {
    let instance = &shared.config.instance_id;
    let Some(connection) = shared.live.get(device) else {
        return Err((
            FailureReason::DeviceNotConnected,
            format!("{device} is not connected to socket instance {instance}"),
        ));
    };
    let (written, outcome) = oneshot::channel();
    let command = Outbound {
        payload: command.frame.clone(),
        written,
    };
    let attempt = async {
        connection
            .outbound
            .send(command)
            .await
            .map_err(|_| "the connection closed".to_owned())?;
        outcome
            .await
            .map_err(|_| "the connection closed".to_owned())?
    };
    let timeout = shared.config.delivery_timeout;
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err((
            FailureReason::WriteFailed,
            format!("writing to {device} failed: {error}"),
        )),
        Err(_) => Err((
            FailureReason::WriteFailed,
            format!(
                "writing to {device} took longer than delivery_timeout ({})",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

fn count(shared: &Shared, outcome: &'static str) {
    shared
        .metrics
        .deliveries
        .get_or_create(&[("outcome", outcome)])
        .inc();
}
