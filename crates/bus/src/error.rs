//! The bus's error type.

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bus url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("failed to create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("bus journal {path}: {reason}")]
    Journal { path: String, reason: String },
    #[error("the bus is shut down")]
    Closed,
}

/// The bus's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same operation later can succeed. For a commit,
    /// this includes the group having moved on in a rebalance: nothing is
    /// lost, the uncommitted records go to the partition's next owner.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka(error) => error.rdkafka_error_code().is_some_and(is_transient),
            Error::InvalidUrl { .. }
            | Error::CreateTopic { .. }
            | Error::Journal { .. }
            | Error::Closed => false,
        }
    }
}

fn is_transient(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::QueueFull
            | Code::MessageTimedOut
            | Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::RequestTimedOut
            | Code::NetworkException
            | Code::NotEnoughReplicas
            | Code::NotEnoughReplicasAfterAppend
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::CoordinatorNotAvailable
            | Code::NotCoordinator
            | Code::RebalanceInProgress
            | Code::UnknownTopicOrPartition
            // A commit refused because the group moved on (a rebalance):
            // the records are delivered again to their next owner.
            | Code::IllegalGeneration
            | Code::UnknownMemberId
            | Code::FencedInstanceId
            | Code::AssignmentLost
            | Code::State
    )
}
