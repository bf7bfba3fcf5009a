//! The events the Socket publishes, and where each goes.

use std::time::Duration;

use tracing::warn;
use uuid::Uuid;
use wharf_bus::{Bus, PendingAck, Publisher as _, Record};
use wharf_events::{
    CommandDelivered, CommandDispatched, CommandFailed, CommandReplied, DeviceConnected,
    DeviceDisconnected, Envelope, Event, FrameReceived, Payload, Topics, Transport,
};

use crate::live::{DeliveryFailure, Outcome};
use crate::replies::Answer;

/// How long shutdown waits for the bus to take what was published.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the Socket's events and publishes them.
pub(crate) struct EventsOut {
    bus: Bus,
    topics: Topics,
    instance: String,
}

/// Who a connection belongs to, as the events describe it.
pub(crate) struct DeviceIdentity {
    pub(crate) device: String,
    pub(crate) model: String,
    pub(crate) transport: Transport,
    pub(crate) connection: Uuid,
}

impl EventsOut {
    pub(crate) fn new(bus: Bus, topics: Topics, instance: String) -> Self {
        EventsOut {
            bus,
            topics,
            instance,
        }
    }

    /// Publishes `DeviceConnected` to the device events and presence topics
    /// and waits until both are durable.
    pub(crate) async fn connected(
        &self,
        who: &DeviceIdentity,
        remote: Option<String>,
    ) -> wharf_bus::Result<()> {
        let event = Event::DeviceConnected(DeviceConnected {
            model: who.model.clone(),
            transport: who.transport,
            instance: self.instance.clone(),
            connection: who.connection,
            remote,
        });
        self.to_events_and_presence(Envelope::new(&who.device, &self.instance, event))
            .await
    }

    /// Publishes `DeviceDisconnected` to the device events and presence topics.
    pub(crate) async fn disconnected(
        &self,
        who: &DeviceIdentity,
        reason: &str,
    ) -> wharf_bus::Result<()> {
        let event = Event::DeviceDisconnected(DeviceDisconnected {
            model: who.model.clone(),
            transport: who.transport,
            instance: self.instance.clone(),
            connection: who.connection,
            reason: reason.to_owned(),
        });
        self.to_events_and_presence(Envelope::new(&who.device, &self.instance, event))
            .await
    }

    /// Queues a `FrameReceived`; the returned ack resolves once it is durable.
    pub(crate) async fn frame(
        &self,
        who: &DeviceIdentity,
        channel: Option<String>,
        bytes: &[u8],
    ) -> wharf_bus::Result<PendingAck> {
        let event = Event::FrameReceived(FrameReceived {
            model: who.model.clone(),
            channel,
            payload: Payload::from_bytes(bytes),
        });
        let envelope = Envelope::new(&who.device, &self.instance, event);
        let ack = self
            .bus
            .enqueue(Record::event(self.topics.device_events(), &envelope))
            .await;
        wharf_runtime::otlp::export_event(&envelope, envelope.time);
        ack
    }

    /// Queues a device's answer to a command, as `CommandReplied`, on the
    /// command-status topic (the Commander settles the command) and the
    /// device-events topic (business logic sees it); the returned ack
    /// resolves once both are durable.
    pub(crate) async fn reply(
        &self,
        who: &DeviceIdentity,
        answer: Answer,
    ) -> wharf_bus::Result<PendingAck> {
        let event = Event::CommandReplied(CommandReplied {
            command_id: answer.command_id,
            ok: answer.ok,
            result: answer.result,
            error: answer.error,
            instance: self.instance.clone(),
        });
        let envelope = Envelope::new(&who.device, &self.instance, event);
        let status = self
            .bus
            .enqueue(Record::event(self.topics.command_status(), &envelope))
            .await?;
        let events = self
            .bus
            .enqueue(Record::event(self.topics.device_events(), &envelope))
            .await?;
        Ok(PendingAck::from_future(async move {
            status.await?;
            events.await
        }))
    }

    /// Publishes the outcome of a delivery to the command-status topic.
    pub(crate) async fn delivery_outcome(
        &self,
        dispatch: &Envelope,
        command: &CommandDispatched,
        outcome: Outcome,
    ) -> wharf_bus::Result<()> {
        let envelope = match outcome {
            Ok(()) => dispatch.derive(
                "delivered",
                &self.instance,
                Event::CommandDelivered(CommandDelivered {
                    command_id: command.command_id,
                    instance: self.instance.clone(),
                }),
            ),
            Err(DeliveryFailure { reason, detail }) => dispatch.derive(
                "failed",
                &self.instance,
                Event::CommandFailed(CommandFailed {
                    command_id: command.command_id,
                    reason,
                    detail,
                }),
            ),
        };
        self.bus
            .publish(Record::event(self.topics.command_status(), &envelope))
            .await?;
        // From the dispatch (made by the Commander) to its outcome.
        wharf_runtime::otlp::export_event(&envelope, dispatch.time);
        Ok(())
    }

    async fn to_events_and_presence(&self, envelope: Envelope) -> wharf_bus::Result<()> {
        let events = self
            .bus
            .enqueue(Record::event(self.topics.device_events(), &envelope))
            .await?;
        let presence = self
            .bus
            .enqueue(Record::event(self.topics.presence(), &envelope))
            .await?;
        events.await?;
        presence.await?;
        Ok(())
    }

    /// Waits for everything published to be durable (shutdown).
    pub(crate) async fn flush(&self) {
        if let Err(error) = self.bus.flush(FLUSH_TIMEOUT).await {
            warn!(%error, "events may not all have reached the bus before exit");
        }
    }
}
