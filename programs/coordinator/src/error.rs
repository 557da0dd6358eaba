//! Why the coordinator refused an input. Every variant is a rejection with the state unchanged.

/// A rejected input. The on-chain program maps these to custom program errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{field} = 0: must be at least 1")]
    ConfigZero { field: &'static str },
    #[error("{field} = {value}: must be {range}")]
    ConfigRange {
        field: &'static str,
        value: u64,
        range: &'static str,
    },
    #[error("the run is already initialized")]
    AlreadyInitialized,
    #[error("the run is not initialized")]
    Uninitialized,
    #[error("this input is not accepted while the run is {0:?}")]
    WrongState(crate::RunState),
    #[error("nothing is due yet: tick again later")]
    NothingDue,
    #[error("time went backwards: {now} is before {last}")]
    ClockWentBackwards { now: i64, last: i64 },
    #[error("the run has 256 members already")]
    RunFull,
    #[error("this client has joined already")]
    AlreadyJoined,
    #[error("this client is not a member of the run")]
    NotAMember,
    #[error("this client is not in the current epoch")]
    NotInEpoch,
    #[error("this client is not an elected witness of the current round")]
    NotAWitness,
    #[error("this witness has reported for the round already")]
    DuplicateWitness,
    #[error("round {0} is not a closed round of this epoch that the coordinator still holds")]
    UnknownRound(u64),
    #[error("round {0} had no witness quorum: there is no evidence to judge health by")]
    NoQuorum(u64),
    #[error("the client was not a participant of that round")]
    NotAParticipant,
    #[error("a witness quorum saw that client: it is healthy")]
    ClientWasSeen,
    #[error("the run is already paused or pausing")]
    AlreadyPaused,
    #[error("the run is not paused")]
    NotPaused,
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
}
