//! The window of a connection's frames handed to the bus and not yet
//! acknowledged: bounded, so a slow bus stops the connection's reading.

use std::collections::VecDeque;
use std::future::Future as _;

use wharf_bus::{Delivered, PendingAck};

/// Frames handed to the bus and not acknowledged yet, oldest first, each
/// with what to do once it is durable (an MQTT PUBACK to send, say).
pub(crate) struct Window<T> {
    frames: VecDeque<(PendingAck, T)>,
    limit: usize,
}

impl<T> Window<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Window {
            frames: VecDeque::new(),
            limit,
        }
    }

    pub(crate) fn push(&mut self, ack: PendingAck, then: T) {
        self.frames.push_back((ack, then));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether the Socket must stop reading until the oldest is acknowledged.
    pub(crate) fn is_full(&self) -> bool {
        self.frames.len() >= self.limit
    }

    /// Waits for the oldest frame's acknowledgement; never resolves when
    /// the window is empty. Cancel-safe: the frame leaves the window only
    /// once acknowledged.
    pub(crate) async fn oldest_acked(&mut self) -> (wharf_bus::Result<Delivered>, T) {
        let result = std::future::poll_fn(|cx| match self.frames.front_mut() {
            Some((ack, _)) => std::pin::Pin::new(ack).poll(cx),
            None => std::task::Poll::Pending,
        })
        .await;
        let (_, then) = self
            .frames
            .pop_front()
            .expect("a frame was just acknowledged");
        (result, then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledgements_come_back_in_order() {
        let mut window = Window::new(2);
        let delivered = |offset| {
            PendingAck::ready(Ok(Delivered {
                partition: 0,
                offset,
            }))
        };
        window.push(delivered(1), "first");
        assert!(!window.is_full());
        window.push(delivered(2), "second");
        assert!(window.is_full());
        let (result, then) = window.oldest_acked().await;
        assert_eq!((result.unwrap().offset, then), (1, "first"));
        let (_, then) = window.oldest_acked().await;
        assert_eq!(then, "second");
        assert!(window.is_empty());
        let never =
            tokio::time::timeout(std::time::Duration::from_millis(20), window.oldest_acked());
        assert!(never.await.is_err(), "an empty window never resolves");
    }
}
