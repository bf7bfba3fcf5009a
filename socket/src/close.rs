//! Why a connection ends: one reason, named in `DeviceDisconnected` and the
//! metrics, that each transport turns into what its device sees (a
//! WebSocket close code, a TCP status frame, an MQTT 5 reason code, a UDP
//! word).

/// Why a connection ended; named in `DeviceDisconnected` and the metrics,
/// and mapped by each transport to what the device sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The device said goodbye (WebSocket close, MQTT DISCONNECT).
    ClosedByDevice,
    /// The connection broke or ended without a goodbye.
    ConnectionLost,
    ShuttingDown,
    TakenOver,
    FrameTooLarge,
    RateLimited,
    IdleTimeout,
    /// The bus refused or lost a frame: the device should retry later.
    BusUnavailable,
    /// The device broke the protocol (or, MQTT v4, its ACL).
    ProtocolError,
    /// An MQTT v4 device published outside its topics (v4 has no way to
    /// refuse one publish).
    NotAuthorized,
    /// QoS 2 (MQTT).
    QosNotSupported,
    /// Writing to the device failed.
    WriteFailed,
    /// The device was deleted: its token no longer admits it.
    Revoked,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClosedByDevice => "closed by device",
            CloseReason::ConnectionLost => "connection lost",
            CloseReason::ShuttingDown => "socket shutting down",
            CloseReason::TakenOver => "session taken over",
            CloseReason::FrameTooLarge => "frame too large",
            CloseReason::RateLimited => "rate limit exceeded",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::BusUnavailable => "bus unavailable",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::NotAuthorized => "not authorized",
            CloseReason::QosNotSupported => "qos 2 not supported",
            CloseReason::WriteFailed => "write failed",
            CloseReason::Revoked => "device revoked",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::ClosedByDevice => "closed_by_device",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::ShuttingDown => "shutting_down",
            CloseReason::TakenOver => "taken_over",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::BusUnavailable => "bus_unavailable",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::NotAuthorized => "not_authorized",
            CloseReason::QosNotSupported => "qos_not_supported",
            CloseReason::WriteFailed => "write_failed",
            CloseReason::Revoked => "revoked",
        }
    }
}
