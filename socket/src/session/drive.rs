//! The one loop every device connection runs, whatever its transport, from
//! the moment its session is open until it is closed:
//!
//! - the oldest frame's acknowledgement from the bus is awaited (and, where
//!   the protocol has one, acknowledged to the device);
//! - commands come from the mailbox and are written, or the mailbox says
//!   to close (taken over, revoked, the Socket shutting down);
//! - the device is read, within its idle timeout, but only while the window
//!   of frames on their way to the bus has room: backpressure; a device
//!   silent for its idle timeout is closed;
//! - then the goodbye the transport can say, the window drained, and the
//!   session closed with one [`CloseReason`].
//!
//! What differs between transports is behind [`Link`]: how a connection is
//! read and written, what a frame's acknowledgement tells the device, and
//! how it says goodbye. The handshake before the session (WebSocket
//! upgrade, TCP token frame, MQTT CONNECT, UDP `HELLO`) stays with each
//! transport.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{Session, Window, frame_lost};
use crate::close::CloseReason;
use crate::live::{Outbound, Signal};

/// A frame read from a device, for the bus.
pub(crate) struct Frame<T> {
    /// The MQTT topic it was published on; other transports have one channel.
    pub(crate) channel: Option<String>,
    pub(crate) bytes: Bytes,
    /// What to do once the bus has it ([`Link::Then`]).
    pub(crate) then: T,
}

impl Frame<()> {
    /// A frame on the transport's one channel, with nothing to do once the
    /// bus has it.
    pub(crate) fn of(bytes: Bytes) -> Self {
        Frame {
            channel: None,
            bytes,
            then: (),
        }
    }
}

/// One transport's side of a device connection, as [`drive`] uses it.
///
/// `read` must be cancel-safe (it is dropped whenever another event comes
/// first); the other methods run to completion. Steps that are large and
/// rare should box their state, so that an idle connection's task stays
/// small.
pub(crate) trait Link: Send {
    /// Remembered with each frame until the bus has it: what to tell the
    /// device then (MQTT: the packet id of a QoS 1 PUBLISH to acknowledge).
    type Then: Send;
    /// What one read brings (a frame, an MQTT packet).
    type Inbound: Send;

    /// Connectionless (UDP): a frame the bus lost or the rate limit refused
    /// is dropped and counted, and the session goes on; there is no
    /// connection whose closing would tell the device.
    const CONNECTIONLESS: bool = false;

    /// Frames are acknowledged to the device (MQTT PUBACK): at close, the
    /// frames the bus still acknowledges are, before the goodbye. Other
    /// transports say goodbye first, so a slow bus does not delay it.
    const ACKNOWLEDGES_FRAMES: bool = false;

    /// How long the device may stay silent.
    fn idle_timeout(&self) -> Duration;

    /// Whether commands may be written now (MQTT: once the device
    /// subscribed); until then they wait in the mailbox.
    fn takes_commands(&self) -> bool {
        true
    }

    /// When something the link waits for is due (MQTT: the first command
    /// PUBACK past its deadline).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// The time [`next_deadline`](Self::next_deadline) named has come.
    fn deadline_passed(&mut self) {}

    /// Reads what the device sends next. Cancel-safe.
    fn read(&mut self) -> impl Future<Output = Result<Self::Inbound, CloseReason>> + Send;

    /// Handles what was read: a frame for the bus, nothing (a keep-alive,
    /// a packet answered here), or a reason to close.
    fn handle(
        &mut self,
        inbound: Self::Inbound,
        session: &Session,
    ) -> impl Future<Output = Result<Option<Frame<Self::Then>>, CloseReason>> + Send;

    /// Writes a command and answers its delivery (or, MQTT QoS 1, keeps it
    /// until the device's PUBACK).
    fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send;

    /// The bus has the frame that left `then`; most transports have
    /// nothing to tell the device.
    fn frame_acked(
        &mut self,
        then: Self::Then,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send {
        drop(then);
        std::future::ready(Ok(()))
    }

    /// Tells the device why the connection ends, as the protocol allows,
    /// and closes the connection.
    fn goodbye(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;

    /// Settles what the link still holds (MQTT: commands waiting for a
    /// PUBACK) and hands back the device's last will, when it is to be
    /// published (topic, message).
    fn finish(&mut self, reason: CloseReason) -> Option<(String, Vec<u8>)> {
        let _ = reason;
        None
    }
}

/// Runs `session` over `link` in a task of its own, holding the
/// connection's `slot` until it ends. The handshake's task ends here, so an
/// idle connection's memory is the driver's state alone, not the
/// handshake's too.
pub(crate) fn spawn<L: Link + 'static>(session: Session, link: L, slot: OwnedSemaphorePermit) {
    let tasks = session.gateway().connection_tasks.clone();
    tasks.spawn(drive(session, link, slot).instrument(tracing::Span::current()));
}

/// Runs `session` over `link` until it ends, then closes it: the one loop
/// of every transport.
///
/// An idle connection's task is this loop waiting, so what it holds while
/// waiting is what every connection costs: one timer (for the idle timeout
/// and the link's deadline together, reset only when it fires or a deadline
/// comes earlier), the mailbox's wait, the bus's acknowledgement and the
/// link's read. Shutdown arrives through the mailbox, like a takeover.
//
// Not an `async fn`: its arguments would be kept in the future twice (as
// arguments and as the locals they move into); the block uses them in place.
#[allow(clippy::manual_async_fn)]
fn drive<L: Link>(
    mut session: Session,
    mut link: L,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut window = Window::new(session.gateway().config.max_in_flight);
        let idle = link.idle_timeout();
        // The device's silence ends this connection at `silent_until`; each
        // read moves it, without touching the timer.
        let mut silent_until = Instant::now() + idle;
        let timer = tokio::time::sleep_until(silent_until);
        tokio::pin!(timer);
        let reason = loop {
            if let Some(deadline) = link.next_deadline()
                && deadline < timer.deadline()
            {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                (result, then) = window.oldest_acked(), if !window.is_empty() => match result {
                    Ok(_) => {
                        if let Err(reason) = link.frame_acked(then).await {
                            break reason;
                        }
                    }
                    Err(error) => {
                        frame_lost(session.gateway(), &session.who, &error);
                        if !L::CONNECTIONLESS {
                            break CloseReason::BusUnavailable;
                        }
                    }
                },
                signal = session.mailbox().next(link.takes_commands()) => match signal {
                    Signal::Command(command) => {
                        // Boxed: a write's state exists only while it runs.
                        let written = Box::pin(link.write_command(command, &session));
                        if let Err(reason) = written.await {
                            break reason;
                        }
                    }
                    Signal::Close(reason) => break reason,
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if link.next_deadline().is_some_and(|deadline| deadline <= now) {
                        link.deadline_passed();
                    }
                    if now >= silent_until {
                        // While the window is full the device is not read, so
                        // its silence says nothing: it gets a fresh period.
                        if !window.is_full() {
                            break CloseReason::IdleTimeout;
                        }
                        silent_until = now + idle;
                    }
                    let wake = link
                        .next_deadline()
                        .map_or(silent_until, |deadline| deadline.min(silent_until));
                    timer.as_mut().reset(wake);
                }
                read = link.read(), if !window.is_full() => {
                    silent_until = Instant::now() + idle;
                    let inbound = match read {
                        Err(reason) => break reason,
                        Ok(inbound) => inbound,
                    };
                    let frame = match link.handle(inbound, &session).await {
                        Ok(Some(frame)) => frame,
                        Ok(None) => continue,
                        Err(reason) => break reason,
                    };
                    match session.publish(frame.channel, &frame.bytes).await {
                        Ok(ack) => window.push(ack, frame.then),
                        // Over the rate, a datagram is dropped (and counted), not the session.
                        Err(CloseReason::RateLimited) if L::CONNECTIONLESS => {}
                        Err(reason) => break reason,
                    }
                }
            }
        };
        // Boxed: closing happens once, and its state need not be part of every
        // idle connection's task.
        Box::pin(close(session, link, window, reason)).await;
        drop(slot);
    }
}

/// Says goodbye, drains the window and closes the session.
async fn close<L: Link>(
    session: Session,
    mut link: L,
    mut window: Window<L::Then>,
    reason: CloseReason,
) {
    let gateway = session.gateway();
    if L::ACKNOWLEDGES_FRAMES {
        let connected = !matches!(
            reason,
            CloseReason::ConnectionLost | CloseReason::WriteFailed
        );
        while !window.is_empty() {
            match window.oldest_acked().await {
                (Err(error), _) => frame_lost(gateway, &session.who, &error),
                (Ok(_), then) if connected => {
                    let _ = link.frame_acked(then).await;
                }
                (Ok(_), _) => {}
            }
        }
    }
    link.goodbye(reason).await;
    while !window.is_empty() {
        if let (Err(error), _) = window.oldest_acked().await {
            frame_lost(gateway, &session.who, &error);
        }
    }
    let will = link.finish(reason);
    session.close(reason, will).await;
}
