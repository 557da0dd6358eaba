//! Why the coordinator refused an input: a rejection leaves the state exactly as it was.

/// A rejected input. The on-chain program returns these as custom program errors.
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
    #[error(
        "the run has 256 members, none of them a dropped member without points: no slot is free"
    )]
    RunFull,
    #[error("this client has joined already")]
    AlreadyJoined,
    #[error("this client is not a member of the run")]
    NotAMember,
    #[error("this client is not in the current epoch")]
    NotInEpoch,
    #[error("this client is not an elected witness of the current round")]
    NotAWitness,
    #[error("this report is for round {step}, but the current round is {current}")]
    WrongRound { step: u64, current: u64 },
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
    #[error(
        "the witness report marks member slot {slot} as seen, but that slot committed no result \
         this round: a witness can only hold a committed result"
    )]
    ReportNamesUncommitted { slot: u16 },
    #[error("this participant has committed to a result for the round already")]
    AlreadyCommitted,
    #[error("an all-zero hash commits to nothing: commit the payload's content hash")]
    EmptyCommitment,
    #[error("this client is not an elected witness, and so not a verifier, of that round")]
    NotAVerifier,
    #[error("that result did not count in the round: there is nothing to judge")]
    NotCounted,
    #[error("the finding cannot be true: {0}")]
    FindingRefuted(&'static str),
    #[error("this verifier has judged that result already")]
    DuplicateVerdict,
    #[error("this client was ejected from the run for a faked result and cannot take part again")]
    Ejected,
    #[error(
        "this client is not an elected witness of the last round before the checkpoint, so it \
         does not attest it"
    )]
    NotAnAttester,
    #[error("an all-zero hash attests nothing: send the model's weights hash")]
    EmptyAttestation,
    #[error("this witness has attested the checkpoint already")]
    DuplicateAttestation,
}

impl CoordinatorError {
    /// The error's stable number: the on-chain program returns it as `Custom(code)`, and the
    /// centralized server sends it beside the message. Never renumber; only append.
    pub fn code(&self) -> u32 {
        match self {
            Self::ConfigZero { .. } => 0,
            Self::ConfigRange { .. } => 1,
            Self::AlreadyInitialized => 2,
            Self::Uninitialized => 3,
            Self::WrongState(_) => 4,
            Self::NothingDue => 5,
            Self::ClockWentBackwards { .. } => 6,
            Self::RunFull => 7,
            Self::AlreadyJoined => 8,
            Self::NotAMember => 9,
            Self::NotInEpoch => 10,
            Self::NotAWitness => 11,
            Self::DuplicateWitness => 12,
            Self::UnknownRound(_) => 13,
            Self::NoQuorum(_) => 14,
            Self::NotAParticipant => 15,
            Self::ClientWasSeen => 16,
            Self::AlreadyPaused => 17,
            Self::NotPaused => 18,
            Self::Overflow(_) => 19,
            Self::WrongRound { .. } => 20,
            // 21 was a Bloom report's density bound, retired with the Bloom reports.
            Self::ReportNamesUncommitted { .. } => 22,
            Self::AlreadyCommitted => 23,
            Self::EmptyCommitment => 24,
            Self::NotAVerifier => 25,
            Self::NotCounted => 26,
            Self::FindingRefuted(_) => 27,
            Self::DuplicateVerdict => 28,
            Self::Ejected => 29,
            Self::NotAnAttester => 30,
            Self::EmptyAttestation => 31,
            Self::DuplicateAttestation => 32,
        }
    }
}

/// Why a host refused who sent an input or which accounts came with it, where the runtime's own
/// `ProgramError` variants (missing signature, illegal owner, invalid seeds, ...) do not say it.
/// The program returns them as `Custom(code)`, the centralized server beside the message;
/// numbered from 1000 so they never meet [`CoordinatorError`]'s codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the signer is not the run authority")]
    NotRunAuthority,
    #[error("the signer is not the run's join authority, or the run is permissionless")]
    NotJoinAuthority,
    #[error("the run is gated: the join needs the join authority's grant for this client")]
    JoinNotGranted,
    #[error("the account belongs to another run")]
    RunMismatch,
    #[error("a run closes only when paused or finished: pause it first")]
    RunNotClosable,
    #[error(
        "the account is not the sysvar the instruction needs there (clock, rent or slot hashes)"
    )]
    WrongSysvar,
    #[error(
        "the run's members hold points not yet paid out: closing would erase what they are owed"
    )]
    PointsOwed,
    #[error(
        "members hold join deposits in the run account: they get them back when they withdraw, \
         so a run closes once every member has withdrawn"
    )]
    DepositsHeld,
}

impl AccessError {
    /// The error's stable number (see [`CoordinatorError::code`]).
    pub fn code(&self) -> u32 {
        1000 + *self as u32
    }
}

/// The code of an input that does not decode (a truncated or oversized witness report, an
/// unknown tag): numbered apart from both enums above. The program answers the runtime's own
/// `InvalidInstructionData` instead.
pub const MALFORMED_INPUT: u32 = 2001;
