//! The Socket's state that every listener and connection task uses: its
//! configuration, the token check, the live connections, the events it
//! publishes, its metrics and its connection slots.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use wharf_auth::{AuthError, DeviceClaims, TokenVerifier};

use crate::config::SocketConfig;
use crate::events_out::EventsOut;
use crate::live::LiveConnections;
use crate::metrics::SocketMetrics;
use crate::revocations::Revocations;

/// What every task of the Socket shares.
pub(crate) struct Gateway {
    pub(crate) config: SocketConfig,
    pub(crate) verifier: TokenVerifier,
    pub(crate) revocations: Revocations,
    pub(crate) live: LiveConnections,
    pub(crate) events: EventsOut,
    pub(crate) metrics: SocketMetrics,
    /// One permit per connection (UDP: per session), `max_connections` in all.
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Every connection's task (UDP: every session's), awaited at shutdown.
    pub(crate) connection_tasks: TaskTracker,
    /// Set when the Socket stops: a session opening after every live one
    /// was told to close closes at once ([`Gateway::stop_sessions`]).
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Devices admitted so far: numbers each admission ([`Admitted`]).
    pub(crate) admissions: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// Checks a token at a handshake over `transport` (a metrics label):
    /// signed with our secret, not expired, naming `device` when the
    /// transport says which device connects, and not revoked. Refusals are
    /// counted by reason.
    pub(crate) fn authenticate(
        &self,
        transport: &'static str,
        token: &str,
        device: Option<&str>,
    ) -> Result<Admitted, AuthError> {
        let verified = match device {
            Some(device) => self.verifier.verify_for(token, device),
            None => self.verifier.verify(token),
        }
        .and_then(
            |claims| match self.revocations.is_revoked(&claims.sub, claims.iat) {
                true => Err(AuthError::Revoked),
                false => Ok(claims),
            },
        );
        if let Err(error) = &verified {
            self.metrics
                .auth_failures
                .get_or_create(&[("transport", transport), ("reason", error.label())])
                .inc();
            tracing::debug!(%error, transport, "refused a device");
        }
        verified.map(|claims| Admitted {
            claims,
            order: self
                .admissions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

impl Gateway {
    /// Tells every session to close with "going away", and every session
    /// still opening to close as soon as it is registered.
    pub(crate) fn stop_sessions(&self) {
        // Before the sweep: a session registered after it sees the flag
        // (the live map's lock orders the two).
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.live.close_all(crate::close::CloseReason::ShuttingDown);
    }

    /// Counts a connection that ended before its device was authenticated
    /// (`reason`: timeout, too_large, protocol).
    pub(crate) fn handshake_failed(&self, transport: &'static str, reason: &'static str) {
        self.metrics
            .handshake_failures
            .get_or_create(&[("transport", transport), ("reason", reason)])
            .inc();
    }
}

/// A device whose token was accepted, numbered in the order the Socket
/// accepted them: of two connections of one device, the one admitted later
/// is the newer, whichever of the two registers first afterwards.
pub(crate) struct Admitted {
    pub(crate) claims: DeviceClaims,
    pub(crate) order: u64,
}

impl std::ops::Deref for Admitted {
    type Target = DeviceClaims;

    fn deref(&self) -> &DeviceClaims {
        &self.claims
    }
}
