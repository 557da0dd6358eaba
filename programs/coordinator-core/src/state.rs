//! The run's state: fixed-size and plain old data, so it is the Solana run account's bytes and
//! the centralized server's snapshot file alike.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};
use core::ops::Range;

use bytemuck::{Pod, Zeroable};

use crate::attestation::Attestation;
use crate::config::Config;
use crate::shuffle::{derive_key, one_chance_in, one_in, permute};

/// Most members a run can have over its life (member records are kept for their points).
pub const MAX_CLIENTS: usize = 256;
/// Most witnesses per round.
pub const MAX_WITNESSES: usize = 32;
/// Rounds kept for witnesses, health checks and result checks; round `s` lives in slot `s % 4`.
pub const ROUNDS_KEPT: usize = 4;

const BATCH_DOMAIN: u64 = 0xBA7C;
const WITNESS_DOMAIN: u64 = 0x3117;
const SCORE_DOMAIN: u64 = 0x5C0E;
const SPOT_CHECK_DOMAIN: u64 = 0x5907;

/// Where a run is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Uninitialized = 0,
    WaitingForMembers = 1,
    Warmup = 2,
    RoundTrain = 3,
    RoundWitness = 4,
    Cooldown = 5,
    Finished = 6,
    Paused = 7,
}

impl RunState {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Uninitialized,
            1 => Self::WaitingForMembers,
            2 => Self::Warmup,
            3 => Self::RoundTrain,
            4 => Self::RoundWitness,
            5 => Self::Cooldown,
            6 => Self::Finished,
            7 => Self::Paused,
            _ => return None,
        })
    }
}

/// A member's standing in the run.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// An unused slot.
    Empty = 0,
    /// Joined during an epoch; trains from the next one.
    Pending = 1,
    /// In the current epoch and healthy.
    Active = 2,
    /// Dropped this epoch (not ready after warmup, or unseen by a witness quorum); must rejoin.
    Dropped = 3,
    /// Left the run; may rejoin.
    Withdrawn = 4,
    /// Judged by a quorum of verifiers to have faked a result: its unpaid points are slashed,
    /// none of its results count from then on, and it may never rejoin.
    Ejected = 5,
}

/// Where a member serves its results to peers, announced when it joins: an IPv6 address (IPv4
/// as mapped) and a port. All zero for none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    pub ip: [u8; 16],
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(address: SocketAddr) -> Self {
        let ip = match address.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Self {
            ip: ip.octets(),
            port: address.port(),
        }
    }
}

impl Endpoint {
    /// The address to reach the member at, if it announced one.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        if *self == Self::default() {
            return None;
        }
        let ip = Ipv6Addr::from(self.ip);
        let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
        Some(SocketAddr::new(ip, self.port))
    }
}

/// One client of the run, kept for the run's life once it has earned a point, so its points are
/// never lost (see [`Member::is_reclaimable`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Member {
    /// The client's ed25519 public key (its Solana wallet).
    pub id: [u8; 32],
    /// Points earned so far, only ever growing; the treasurer pays against them.
    pub points: u64,
    /// Where peers fetch its results.
    pub endpoint: Endpoint,
    pub status: u8,
    /// Reported ready during the current warmup.
    pub ready: u8,
    /// Rounds of the current epoch, closed with a witness quorum, in which that quorum saw this
    /// member's results: what its points for the epoch follow.
    pub seen_rounds: u32,
    /// Points taken back for cheating, never more than `points`: verification writes them
    /// (issue 15); the treasurer never pays for them.
    pub slashed: u64,
}

impl Member {
    /// Points the member may be paid for: earned and not slashed.
    pub fn payable_points(&self) -> u64 {
        self.points.saturating_sub(self.slashed)
    }

    /// Out of the run without a point earned: its slot may go to a new client. (An ejected
    /// member with no points has nothing left to slash, and its deposit is forfeit already.)
    pub fn is_reclaimable(&self) -> bool {
        matches!(
            self.status(),
            MemberStatus::Dropped | MemberStatus::Withdrawn | MemberStatus::Ejected
        ) && self.points == 0
    }

    pub fn status(&self) -> MemberStatus {
        match self.status {
            1 => MemberStatus::Pending,
            2 => MemberStatus::Active,
            3 => MemberStatus::Dropped,
            4 => MemberStatus::Withdrawn,
            5 => MemberStatus::Ejected,
            _ => MemberStatus::Empty,
        }
    }
}

/// What one witness saw in a round: the participants whose committed result it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WitnessReport {
    /// Bitmap over member slots: slot `s` is set when the witness holds the payload whose content
    /// hash is the commitment slot `s` made in the round. An exact set, so nothing outside it
    /// can be made to look seen (a Bloom filter's false positives could be ground).
    pub seen: [u8; 32],
}

impl WitnessReport {
    /// Marks member slot `slot` as seen.
    pub fn insert(&mut self, slot: usize) {
        self.seen[slot / 8] |= 1 << (slot % 8);
    }

    /// Whether member slot `slot` is marked seen.
    pub fn contains(&self, slot: usize) -> bool {
        slot < MAX_CLIENTS && self.seen[slot / 8] & (1 << (slot % 8)) != 0
    }

    /// The member slots marked seen, in order.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CLIENTS).filter(|&slot| self.contains(slot))
    }
}

/// One training round (one optimizer step).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Round {
    pub step: u64,
    pub epoch: u64,
    pub started_at: i64,
    /// Data position (global sample index) of the round's first sample.
    pub data_start: u64,
    /// Samples in the round, over all participants.
    pub batch_size: u64,
    pub seed: [u8; 32],
    /// The seed drawn when the round closed, all zero until then. Nobody knew it while the
    /// round trained and its results were committed, so it chooses which results are checked
    /// ([`Round::scored`], [`Round::spot_checked`]): a cheater cannot learn in advance which of
    /// its results go unchecked.
    pub close_seed: [u8; 32],
    /// Bitmap over member slots of the members training this round.
    pub participants: [u8; 32],
    pub participant_count: u16,
    /// Witnesses elected (positions `0..witness_count`).
    pub witness_count: u16,
    /// Bitmap over witness positions that have reported.
    pub reported: u32,
    pub in_use: u8,
    pub closed: u8,
    /// Commitments made this round so far.
    pub commit_count: u16,
    pub _padding: [u8; 4],
    pub reports: [WitnessReport; MAX_WITNESSES],
    /// By member slot: the content hash of the result the participant committed to this round,
    /// all zero until it commits. Written once, so what a witness vouched for cannot change
    /// afterwards, and every replica applies exactly the payload with this hash.
    pub commitments: [[u8; 32]; MAX_CLIENTS],
    /// By member slot: the order in which the participant committed (0 first), valid where it
    /// committed. A result can only be fetched by its committed hash, so a copy is always
    /// committed after its original: what tells a copier from the one it copied.
    pub commit_order: [u8; MAX_CLIENTS],
    /// Bitmap over member slots of participants ejected before the round closed: their results
    /// do not count, whatever the witnesses saw.
    pub ejected: [u8; 32],
    /// By member slot: a bitmap over verifier (witness) positions that judged the participant's
    /// result faked (`Input::Verdict`). A verdict quorum of them ejects it.
    pub accusations: [u32; MAX_CLIENTS],
}

impl Round {
    /// Whether member slot `slot` trains in this round.
    pub fn is_participant(&self, slot: usize) -> bool {
        slot < MAX_CLIENTS && self.participants[slot / 8] & (1 << (slot % 8)) != 0
    }

    /// The member slot of the `rank`-th participant (in slot order).
    pub fn participant_at(&self, rank: u64) -> Option<usize> {
        (0..MAX_CLIENTS)
            .filter(|&slot| self.is_participant(slot))
            .nth(rank as usize)
    }

    /// A participant's rank among the participants (in slot order).
    pub fn rank_of(&self, slot: usize) -> Option<u64> {
        self.is_participant(slot)
            .then(|| (0..slot).filter(|&s| self.is_participant(s)).count() as u64)
    }

    /// The data positions `slot` trains this round: a contiguous share of the round's samples,
    /// in an order shuffled by the round seed. Empty when there are more participants than
    /// samples; `None` for non-participants.
    pub fn assignment(&self, slot: usize) -> Option<Range<u64>> {
        let rank = self.rank_of(slot)?;
        let n = u64::from(self.participant_count);
        let position = u128::from(permute(derive_key(&self.seed, BATCH_DOMAIN), rank, n));
        let share = |p: u128| (p * u128::from(self.batch_size) / u128::from(n)) as u64;
        Some(self.data_start + share(position)..self.data_start + share(position + 1))
    }

    /// The member slot elected as witness `position`, if `position` is below the witness count.
    pub fn elected(&self, position: u16) -> Option<usize> {
        if position >= self.witness_count {
            return None;
        }
        let n = u64::from(self.participant_count);
        self.participant_at(permute(
            derive_key(&self.seed, WITNESS_DOMAIN),
            u64::from(position),
            n,
        ))
    }

    /// Whether participant `slot`'s result is one of those scored against data this round
    /// (`Config::score_one_in`): a choice of one in `one_in` of the participants seeded by the
    /// round's close, so every verifier scores the same results, the coordinator can tell a
    /// verdict about an unscored one, and no sender knew while training whether it would be
    /// scored. `false` until the round closes.
    pub fn scored(&self, slot: usize, score_one_in: u16) -> bool {
        self.closed == 1
            && self.rank_of(slot).is_some_and(|rank| {
                one_in(
                    derive_key(&self.close_seed, SCORE_DOMAIN),
                    rank,
                    u64::from(self.participant_count),
                    u64::from(score_one_in),
                )
            })
    }

    /// Whether participant `slot`'s result is one of those its verifiers recompute this round
    /// (`Config::spot_check_one_in`): each result independently, with a chance of one in
    /// `spot_check_one_in` drawn from the seed of the round's close (so a round may check none,
    /// and no sender knew while training whether it would be checked). `false` until the round
    /// closes, and for every result when `spot_check_one_in` is 0.
    pub fn spot_checked(&self, slot: usize, spot_check_one_in: u16) -> bool {
        self.closed == 1
            && self.rank_of(slot).is_some_and(|rank| {
                one_chance_in(
                    derive_key(&self.close_seed, SPOT_CHECK_DOMAIN),
                    rank,
                    u64::from(spot_check_one_in),
                )
            })
    }

    /// The witness position of member slot `slot`, if it was elected: its proof.
    pub fn witness_position(&self, slot: usize) -> Option<u16> {
        (0..self.witness_count).find(|&position| self.elected(position) == Some(slot))
    }

    /// Witness reports received.
    pub fn report_count(&self) -> u16 {
        self.reported.count_ones() as u16
    }

    /// Reports needed for a decision: two thirds of the elected witnesses, rounded up.
    pub fn quorum(&self) -> u16 {
        (2 * self.witness_count).div_ceil(3)
    }

    /// The content hash participant `slot` committed to this round, if it has.
    pub fn commitment(&self, slot: usize) -> Option<&[u8; 32]> {
        self.commitments.get(slot).filter(|hash| **hash != [0; 32])
    }

    /// How many reports mark `slot` as seen.
    fn reports_seeing(&self, slot: usize) -> u16 {
        (0..self.witness_count)
            .filter(|&position| self.reported & (1 << position) != 0)
            .filter(|&position| self.reports[usize::from(position)].contains(slot))
            .count() as u16
    }

    /// Whether a witness quorum holds participant `slot`'s committed result.
    pub fn was_seen(&self, slot: usize) -> bool {
        self.witness_count > 0 && self.reports_seeing(slot) >= self.quorum()
    }

    /// Whether participant `slot` was ejected before the round closed.
    pub fn was_ejected(&self, slot: usize) -> bool {
        slot < MAX_CLIENTS && self.ejected[slot / 8] & (1 << (slot % 8)) != 0
    }

    /// The content hash of participant `slot`'s result if it counts: committed, held by a
    /// witness quorum, and not ejected by the close. Every client applies exactly the payloads
    /// with these hashes, so a result is only ever forged by a second preimage of SHA-256.
    pub fn counted(&self, slot: usize) -> Option<&[u8; 32]> {
        (self.was_seen(slot) && !self.was_ejected(slot))
            .then(|| self.commitment(slot))
            .flatten()
    }

    /// Whether `earlier` committed before `later` in this round (both having committed).
    pub fn committed_before(&self, earlier: usize, later: usize) -> bool {
        self.commitment(earlier).is_some()
            && self.commitment(later).is_some()
            && self.commit_order[earlier] < self.commit_order[later]
    }

    /// Verifiers that judged participant `slot`'s result faked.
    pub fn accusation_count(&self, slot: usize) -> u16 {
        self.accusations
            .get(slot)
            .map_or(0, |a| a.count_ones() as u16)
    }

    /// Verdicts that eject a participant: a witness quorum, and never fewer than two, so no
    /// single verifier can eject anyone (a run with one witness ejects nobody).
    pub fn verdict_quorum(&self) -> u16 {
        self.quorum().max(2)
    }
}

/// One run: its settings, progress, members and recent rounds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Coordinator {
    pub run_id: [u8; 32],
    pub config: Config,
    /// When the current state was entered.
    pub state_started_at: i64,
    /// When the current epoch's warmup began.
    pub epoch_started_at: i64,
    /// When enough members had joined (valid while `join_window_open`).
    pub join_window_started_at: i64,
    /// The latest time any accepted input carried; time never goes back past it.
    pub last_update: i64,
    /// Completed steps (rounds); only grows.
    pub step: u64,
    /// Samples consumed by completed rounds.
    pub data_position: u64,
    pub epoch: u64,
    /// Rounds completed in the current epoch.
    pub epoch_rounds: u64,
    pub run_state: u8,
    pub pause_pending: u8,
    pub join_window_open: u8,
    /// The current state's next transition (a round's start, or a round's close, which may
    /// start the next) is due and waits for the next tick: its seed must be one nobody could
    /// know when the transition became due, so the input that made it due cannot choose it.
    pub transition_armed: u8,
    /// Rounds of the current epoch that closed with a witness quorum: the only evidence of
    /// training, and the denominator of each member's share of the epoch's points.
    pub epoch_quorum_rounds: u32,
    pub members: [Member; MAX_CLIENTS],
    pub rounds: [Round; ROUNDS_KEPT],
    /// The model the witnesses attested at the latest epoch's end: what a catching-up client
    /// checks a peer's snapshot against.
    pub checkpoint: Attestation,
}

impl Coordinator {
    /// A state from its bytes as stored or sent (any alignment), on the heap: `None` when the
    /// length is not a state's. Copies, because a state is too big for a stack.
    pub fn boxed_from_bytes(bytes: &[u8]) -> Option<Box<Self>> {
        if bytes.len() != core::mem::size_of::<Self>() {
            return None;
        }
        let mut state: Box<Self> = bytemuck::zeroed_box();
        bytemuck::bytes_of_mut(&mut *state).copy_from_slice(bytes);
        Some(state)
    }

    /// Where the run is.
    pub fn run_state(&self) -> RunState {
        RunState::from_byte(self.run_state).unwrap_or(RunState::Uninitialized)
    }

    /// The slot of the member with key `id`.
    pub fn member_index(&self, id: &[u8; 32]) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.status() != MemberStatus::Empty && &m.id == id)
    }

    /// Members with the given status.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members.iter().filter(|m| m.status() == status).count()
    }

    /// The round being trained or witnessed, in RoundTrain and RoundWitness.
    pub fn current_round(&self) -> Option<&Round> {
        matches!(
            self.run_state(),
            RunState::RoundTrain | RunState::RoundWitness
        )
        .then(|| &self.rounds[self.step as usize % ROUNDS_KEPT])
    }

    /// Seconds from the last closed round's start to the next round's start, when both are
    /// of one epoch: how long a round takes, as clients and the operator report it.
    pub fn last_round_seconds(&self) -> Option<u64> {
        let closed = self.held_round(self.step.checked_sub(1)?)?;
        let next = self.current_round()?;
        (next.epoch == closed.epoch && next.step == closed.step + 1)
            .then(|| u64::try_from(next.started_at.saturating_sub(closed.started_at)).unwrap_or(0))
    }

    /// A closed round still held (the last four), of any epoch: what a client applies.
    pub fn held_round(&self, step: u64) -> Option<&Round> {
        let round = &self.rounds[step as usize % ROUNDS_KEPT];
        (round.in_use == 1 && round.closed == 1 && round.step == step).then_some(round)
    }

    /// A closed round of the current epoch still held.
    pub fn closed_round(&self, step: u64) -> Option<&Round> {
        let round = &self.rounds[step as usize % ROUNDS_KEPT];
        (round.in_use == 1 && round.closed == 1 && round.step == step && round.epoch == self.epoch)
            .then_some(round)
    }
}
