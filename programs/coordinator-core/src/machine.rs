//! The transitions. Every input is checked in full before anything changes, so a rejected input
//! leaves the state exactly as it was (the server relies on this; the program gets it anyway).
//!
//! ```text
//! Uninitialized ──init──► WaitingForMembers ──(init_min_clients joined, join window over)──► Warmup
//! Warmup ──(all ready, or warmup time-out with >= min_clients ready; armed, next tick)──► RoundTrain
//! Warmup ──(time-out with too few ready; armed, next tick)──► WaitingForMembers (aborted: no points)
//! RoundTrain ──(all witnesses reported, or train time-out)──► RoundWitness
//! RoundWitness ──(witness time-out; armed, next tick)──► RoundTrain    (next step)
//!                                 └──► Cooldown  (total steps, epoch time, too few healthy
//!                                                 members or witnesses, or a pause pending)
//! Cooldown ──(cooldown time-out; points to members a quorum saw)──► WaitingForMembers | Paused | Finished
//! WaitingForMembers | Warmup ──pause──► Paused ──resume──► WaitingForMembers
//! ```
//!
//! Verdicts (`verdict.rs`) change no run state: they eject members.

use bytemuck::Zeroable;

use crate::config::Config;
use crate::error::CoordinatorError;
use crate::state::{
    Coordinator, Endpoint, MAX_CLIENTS, Member, MemberStatus, ROUNDS_KEPT, RunState, WitnessReport,
};

type Result<T> = core::result::Result<T, CoordinatorError>;

fn elapsed(now: i64, since: i64, duration: u64) -> bool {
    i128::from(now) >= i128::from(since) + i128::from(duration)
}

impl Coordinator {
    /// Starts a run: `Uninitialized -> WaitingForMembers`.
    pub fn init(&mut self, run_id: [u8; 32], config: Config, now: i64) -> Result<()> {
        if self.run_state() != RunState::Uninitialized {
            return Err(CoordinatorError::AlreadyInitialized);
        }
        config.validate()?;
        // In place: the state is far larger than an on-chain stack frame (4 KB).
        bytemuck::bytes_of_mut(self).fill(0);
        self.run_id = run_id;
        self.config = config;
        self.last_update = now;
        self.enter_waiting(now);
        Ok(())
    }

    pub(crate) fn check_clock(&self, now: i64) -> Result<()> {
        if self.run_state() == RunState::Uninitialized {
            return Err(CoordinatorError::Uninitialized);
        }
        if now < self.last_update {
            return Err(CoordinatorError::ClockWentBackwards {
                now,
                last: self.last_update,
            });
        }
        Ok(())
    }

    fn set_state(&mut self, state: RunState, now: i64) {
        self.run_state = state as u8;
        self.state_started_at = now;
        self.transition_armed = 0;
    }

    /// For a transition that needs a seed nobody knew when it became due: `true` when it was
    /// armed already (this tick takes it); otherwise arms it if `due` (`false`: the next tick
    /// takes it), or answers `NothingDue`.
    fn armed_or_arm(&mut self, due: bool, now: i64) -> Result<bool> {
        if self.transition_armed == 1 {
            return Ok(true);
        }
        if !due {
            return Err(CoordinatorError::NothingDue);
        }
        self.transition_armed = 1;
        self.last_update = now;
        Ok(false)
    }

    fn set_status(&mut self, slot: usize, status: MemberStatus) {
        self.members[slot].status = status as u8;
    }

    fn update_join_window(&mut self, now: i64) {
        let enough = self.count(MemberStatus::Active) >= usize::from(self.config.init_min_clients);
        if enough && self.join_window_open == 0 {
            self.join_window_open = 1;
            self.join_window_started_at = now;
        } else if !enough {
            self.join_window_open = 0;
        }
    }

    fn enter_waiting(&mut self, now: i64) {
        for member in &mut self.members {
            if member.status() == MemberStatus::Pending {
                member.status = MemberStatus::Active as u8;
            }
            member.ready = 0;
        }
        self.join_window_open = 0;
        self.set_state(RunState::WaitingForMembers, now);
        self.update_join_window(now);
    }

    fn start_round(&mut self, now: i64, seed: &[u8; 32]) {
        // Written in place, like `init`: a round is 10 KB.
        let round = &mut self.rounds[self.step as usize % ROUNDS_KEPT];
        bytemuck::bytes_of_mut(round).fill(0);
        round.step = self.step;
        round.epoch = self.epoch;
        round.started_at = now;
        round.seed = *seed;
        round.data_start = self.data_position;
        round.batch_size = self.config.global_batch_size(self.step);
        for (slot, member) in self.members.iter().enumerate() {
            if member.status() == MemberStatus::Active {
                round.participants[slot / 8] |= 1 << (slot % 8);
                round.participant_count += 1;
            }
        }
        round.witness_count = self.config.witness_nodes.min(round.participant_count);
        round.in_use = 1;
        self.set_state(RunState::RoundTrain, now);
    }

    /// Adds a client serving its results at `endpoint` (or re-admits one that was dropped or
    /// withdrew, at its new endpoint). In WaitingForMembers it joins the coming epoch; otherwise
    /// the one after the current.
    ///
    /// A new client takes an empty slot, or else the slot of a member that was dropped or
    /// withdrew without ever earning a point and that no held round names: such a member has
    /// nothing to lose, and keeping its slot would let throwaway keys that join and never train
    /// fill the run for good. Members with points keep their slots for the run's life.
    pub fn join(&mut self, id: [u8; 32], endpoint: Endpoint, now: i64) -> Result<()> {
        self.check_clock(now)?;
        if self.run_state() == RunState::Finished {
            return Err(CoordinatorError::WrongState(RunState::Finished));
        }
        let slot = match self.member_index(&id) {
            Some(slot) => match self.members[slot].status() {
                MemberStatus::Pending | MemberStatus::Active => {
                    return Err(CoordinatorError::AlreadyJoined);
                }
                MemberStatus::Ejected => return Err(CoordinatorError::Ejected),
                _ => slot,
            },
            None => {
                let slot = self
                    .members
                    .iter()
                    .position(|m| m.status() == MemberStatus::Empty)
                    .or_else(|| (0..MAX_CLIENTS).find(|&slot| self.is_reclaimable(slot)))
                    .ok_or(CoordinatorError::RunFull)?;
                self.members[slot] = Member::zeroed();
                slot
            }
        };
        let waiting = self.run_state() == RunState::WaitingForMembers;
        let member = &mut self.members[slot];
        member.id = id;
        member.endpoint = endpoint;
        member.ready = 0;
        member.status = if waiting {
            MemberStatus::Active
        } else {
            MemberStatus::Pending
        } as u8;
        self.last_update = now;
        if waiting {
            self.update_join_window(now);
        }
        Ok(())
    }

    /// Whether a new client may take `slot`: its member was dropped or withdrew without a
    /// point, and no round still held names the slot (replicas that apply a held round look up
    /// its participants by slot, so the slot must keep its key until the round is gone).
    fn is_reclaimable(&self, slot: usize) -> bool {
        self.members[slot].is_reclaimable()
            && self
                .rounds
                .iter()
                .all(|round| round.in_use == 0 || !round.is_participant(slot))
    }

    /// A client leaves; it gets no further batches and no points for the current epoch.
    pub fn withdraw(&mut self, id: [u8; 32], now: i64) -> Result<()> {
        self.check_clock(now)?;
        let slot = self.member_index(&id).ok_or(CoordinatorError::NotAMember)?;
        if !matches!(
            self.members[slot].status(),
            MemberStatus::Pending | MemberStatus::Active
        ) {
            return Err(CoordinatorError::NotAMember);
        }
        self.set_status(slot, MemberStatus::Withdrawn);
        self.last_update = now;
        if self.run_state() == RunState::WaitingForMembers {
            self.update_join_window(now);
        }
        Ok(())
    }

    /// Advances on time-outs. A transition that starts a round (or closes one, which may start
    /// the next) takes two ticks: the first finds it due and arms it, the next takes it with
    /// its `seed`, which the host must draw so that nobody could know it when the transition
    /// was armed (on-chain: the hash of the arming slot, which does not exist until that slot
    /// ends; off-chain: the server's RNG). So no input, and no sender of one, chooses a round's
    /// seed. Returns the state after the tick, or [`CoordinatorError::NothingDue`].
    pub fn tick(&mut self, now: i64, seed: &[u8; 32]) -> Result<RunState> {
        self.check_clock(now)?;
        let config = self.config;
        match self.run_state() {
            RunState::WaitingForMembers => {
                if self.join_window_open == 0
                    || !elapsed(now, self.join_window_started_at, config.join_window)
                {
                    return Err(CoordinatorError::NothingDue);
                }
                for member in &mut self.members {
                    member.ready = 0;
                }
                self.epoch_started_at = now;
                self.epoch_rounds = 0;
                self.set_state(RunState::Warmup, now);
            }
            RunState::Warmup => {
                let due = elapsed(now, self.state_started_at, config.warmup_time);
                if !self.armed_or_arm(due, now)? {
                    return Ok(self.run_state());
                }
                for slot in 0..MAX_CLIENTS {
                    if self.members[slot].status() == MemberStatus::Active
                        && self.members[slot].ready == 0
                    {
                        self.set_status(slot, MemberStatus::Dropped);
                    }
                }
                if self.count(MemberStatus::Active) >= usize::from(config.min_clients) {
                    self.start_round(now, seed);
                } else {
                    self.enter_waiting(now);
                }
            }
            RunState::RoundTrain => {
                let round = &self.rounds[self.step as usize % ROUNDS_KEPT];
                if !elapsed(now, round.started_at, config.max_round_train_time) {
                    return Err(CoordinatorError::NothingDue);
                }
                self.set_state(RunState::RoundWitness, now);
            }
            RunState::RoundWitness => {
                let due = elapsed(now, self.state_started_at, config.round_witness_time);
                if !self.armed_or_arm(due, now)? {
                    return Ok(self.run_state());
                }
                self.close_round(now, seed)?;
            }
            RunState::Cooldown => {
                if !elapsed(now, self.state_started_at, config.cooldown_time) {
                    return Err(CoordinatorError::NothingDue);
                }
                self.end_epoch(now)?;
            }
            RunState::Paused | RunState::Finished | RunState::Uninitialized => {
                return Err(CoordinatorError::NothingDue);
            }
        }
        self.last_update = now;
        Ok(self.run_state())
    }

    fn close_round(&mut self, now: i64, seed: &[u8; 32]) -> Result<()> {
        let slot = self.step as usize % ROUNDS_KEPT;
        let round = &self.rounds[slot];
        let (batch_size, had_quorum) = (round.batch_size, round.report_count() >= round.quorum());
        let step = self
            .step
            .checked_add(1)
            .ok_or(CoordinatorError::Overflow("step"))?;
        let data_position = self
            .data_position
            .checked_add(batch_size)
            .ok_or(CoordinatorError::Overflow("data position"))?;
        let epoch_rounds = self
            .epoch_rounds
            .checked_add(1)
            .ok_or(CoordinatorError::Overflow("epoch rounds"))?;
        // A participant ejected while its round was under way had its result seen, perhaps,
        // but it counts for nothing: the round's record says so for every replica.
        for index in 0..MAX_CLIENTS {
            if self.rounds[slot].is_participant(index)
                && self.members[index].status() == MemberStatus::Ejected
            {
                self.rounds[slot].ejected[index / 8] |= 1 << (index % 8);
            }
        }
        self.rounds[slot].closed = 1;
        self.rounds[slot].close_seed = *seed;
        self.step = step;
        self.data_position = data_position;
        self.epoch_rounds = epoch_rounds;
        if had_quorum {
            self.count_evidence(slot);
        }
        let config = self.config;
        let end_epoch = step >= config.total_steps
            || self.pause_pending == 1
            || elapsed(now, self.epoch_started_at, config.epoch_time)
            || self.count(MemberStatus::Active) < usize::from(config.min_clients)
            || !had_quorum;
        if end_epoch {
            self.set_state(RunState::Cooldown, now);
        } else {
            self.start_round(now, seed);
        }
        Ok(())
    }

    /// A round closed with a witness quorum: evidence of training for the epoch, and for each
    /// participant still in it that the quorum saw. At most 256 participants times 32 reports
    /// of one bit each: the bound of a closing tick's work.
    fn count_evidence(&mut self, slot: usize) {
        self.epoch_quorum_rounds = self.epoch_quorum_rounds.saturating_add(1);
        let round = &self.rounds[slot];
        for (index, member) in self.members.iter_mut().enumerate() {
            if round.is_participant(index)
                && member.status() == MemberStatus::Active
                && round.was_seen(index)
            {
                member.seen_rounds = member.seen_rounds.saturating_add(1);
            }
        }
    }

    fn end_epoch(&mut self, now: i64) -> Result<()> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(CoordinatorError::Overflow("epoch"))?;
        let (per_epoch, evidence) = (self.config.points_per_epoch, self.epoch_quorum_rounds);
        // Points follow evidence: a member healthy through the epoch earns the share of
        // `points_per_epoch` that its rounds seen by a witness quorum are of the epoch's rounds
        // closed with one. An epoch without a quorum round pays nobody.
        let award = |member: &Member| -> u64 {
            if member.status() != MemberStatus::Active || evidence == 0 {
                return 0;
            }
            let seen = u128::from(member.seen_rounds.min(evidence));
            (u128::from(per_epoch) * seen / u128::from(evidence)) as u64
        };
        // All or nothing: check every balance before crediting any.
        if self
            .members
            .iter()
            .any(|m| m.points.checked_add(award(m)).is_none())
        {
            return Err(CoordinatorError::Overflow("points"));
        }
        for member in &mut self.members {
            member.points += award(member);
            member.seen_rounds = 0;
        }
        self.epoch = epoch;
        self.epoch_rounds = 0;
        self.epoch_quorum_rounds = 0;
        if self.step >= self.config.total_steps {
            self.set_state(RunState::Finished, now);
        } else if self.pause_pending == 1 {
            self.pause_pending = 0;
            self.set_state(RunState::Paused, now);
        } else {
            self.enter_waiting(now);
        }
        Ok(())
    }

    /// A member reports that it has loaded the model; when all have, the first round starts.
    pub fn warmup_witness(&mut self, id: [u8; 32], now: i64) -> Result<()> {
        self.check_clock(now)?;
        if self.run_state() != RunState::Warmup {
            return Err(CoordinatorError::WrongState(self.run_state()));
        }
        let slot = self.active_slot(&id)?;
        self.members[slot].ready = 1;
        self.last_update = now;
        let all_ready = self
            .members
            .iter()
            .filter(|m| m.status() == MemberStatus::Active)
            .all(|m| m.ready == 1);
        if all_ready && self.count(MemberStatus::Active) >= usize::from(self.config.min_clients) {
            self.transition_armed = 1;
        }
        Ok(())
    }

    pub(crate) fn active_slot(&self, id: &[u8; 32]) -> Result<usize> {
        let slot = self.member_index(id).ok_or(CoordinatorError::NotAMember)?;
        if self.members[slot].status() != MemberStatus::Active {
            return Err(CoordinatorError::NotInEpoch);
        }
        Ok(slot)
    }

    /// For an input about round `step`: that round is under way (training or witnessed).
    /// Returns the run's state.
    fn check_current_round(&self, step: u64) -> Result<RunState> {
        let state = self.run_state();
        if !matches!(state, RunState::RoundTrain | RunState::RoundWitness) {
            return Err(CoordinatorError::WrongState(state));
        }
        if step != self.step {
            return Err(CoordinatorError::WrongRound {
                step,
                current: self.step,
            });
        }
        Ok(state)
    }

    /// A participant of the current round commits to its result: the content hash of the
    /// payload it serves. Once only, so a witness's word that it holds the committed payload
    /// stays true, and every replica applies the same bytes.
    pub fn commit(&mut self, id: [u8; 32], step: u64, hash: [u8; 32], now: i64) -> Result<()> {
        self.check_clock(now)?;
        self.check_current_round(step)?;
        if hash == [0; 32] {
            return Err(CoordinatorError::EmptyCommitment);
        }
        let slot = self.active_slot(&id)?;
        let round = &mut self.rounds[self.step as usize % ROUNDS_KEPT];
        if !round.is_participant(slot) {
            return Err(CoordinatorError::NotAParticipant);
        }
        if round.commitment(slot).is_some() {
            return Err(CoordinatorError::AlreadyCommitted);
        }
        round.commitments[slot] = hash;
        // At most 256 participants commit once each, so the order fits a byte.
        round.commit_order[slot] = round.commit_count as u8;
        round.commit_count += 1;
        self.last_update = now;
        Ok(())
    }

    /// An elected witness reports what it saw in round `step`, proving its election by
    /// `position`. When every elected witness has reported during training, the witness phase
    /// starts. A report for any other round (one that arrives late) is rejected.
    pub fn witness(
        &mut self,
        id: [u8; 32],
        step: u64,
        position: u16,
        report: &WitnessReport,
        now: i64,
    ) -> Result<()> {
        self.check_clock(now)?;
        let state = self.check_current_round(step)?;
        let slot = self.member_index(&id).ok_or(CoordinatorError::NotAMember)?;
        // Elected is not enough: a witness that withdrew or was dropped since the election no
        // longer stands for the epoch, and its report would still count toward the quorum.
        if self.members[slot].status() != MemberStatus::Active {
            return Err(CoordinatorError::NotInEpoch);
        }
        let round = &mut self.rounds[self.step as usize % ROUNDS_KEPT];
        if round.elected(position) != Some(slot) {
            return Err(CoordinatorError::NotAWitness);
        }
        if round.reported & (1 << position) != 0 {
            return Err(CoordinatorError::DuplicateWitness);
        }
        // An exact set: only participants that committed can have been seen, so a report that
        // names any other slot (all ones, say) is false.
        if let Some(slot) = report
            .slots()
            .find(|&slot| round.commitment(slot).is_none())
        {
            return Err(CoordinatorError::ReportNamesUncommitted { slot: slot as u16 });
        }
        round.reports[usize::from(position)] = *report;
        round.reported |= 1 << position;
        let all_in = round.report_count() == round.witness_count;
        self.last_update = now;
        if state == RunState::RoundTrain && all_in {
            self.set_state(RunState::RoundWitness, now);
        }
        Ok(())
    }

    /// A member of the epoch shows that `target` trained in round `step` yet no witness quorum
    /// received its results: `target` is dropped for the rest of the epoch (no batches, no
    /// points). Checked against the round's reports, so a false accusation is rejected.
    pub fn health_check(
        &mut self,
        from: [u8; 32],
        step: u64,
        target: [u8; 32],
        now: i64,
    ) -> Result<()> {
        self.check_clock(now)?;
        self.active_slot(&from)?;
        let round = self
            .closed_round(step)
            .ok_or(CoordinatorError::UnknownRound(step))?;
        if round.report_count() < round.quorum() {
            return Err(CoordinatorError::NoQuorum(step));
        }
        let target_slot = self
            .member_index(&target)
            .ok_or(CoordinatorError::NotAMember)?;
        if !round.is_participant(target_slot) {
            return Err(CoordinatorError::NotAParticipant);
        }
        if round.was_seen(target_slot) {
            return Err(CoordinatorError::ClientWasSeen);
        }
        if self.members[target_slot].status() != MemberStatus::Active {
            return Err(CoordinatorError::NotInEpoch);
        }
        self.set_status(target_slot, MemberStatus::Dropped);
        self.last_update = now;
        Ok(())
    }

    /// The run authority pauses: at once before the first round of an epoch (an aborted warmup
    /// earns nothing), otherwise after the current round, through Cooldown.
    pub fn pause(&mut self, now: i64) -> Result<()> {
        self.check_clock(now)?;
        match self.run_state() {
            RunState::WaitingForMembers | RunState::Warmup => {
                for member in &mut self.members {
                    member.ready = 0;
                }
                self.set_state(RunState::Paused, now);
            }
            RunState::RoundTrain | RunState::RoundWitness | RunState::Cooldown => {
                if self.pause_pending == 1 {
                    return Err(CoordinatorError::AlreadyPaused);
                }
                self.pause_pending = 1;
            }
            RunState::Paused => return Err(CoordinatorError::AlreadyPaused),
            state @ (RunState::Finished | RunState::Uninitialized) => {
                return Err(CoordinatorError::WrongState(state));
            }
        }
        self.last_update = now;
        Ok(())
    }

    /// The run authority replaces the config while no epoch is under way (waiting for members,
    /// or paused). Members, points and progress are kept.
    pub fn update_config(&mut self, config: Config, now: i64) -> Result<()> {
        self.check_clock(now)?;
        let state = self.run_state();
        if !matches!(state, RunState::WaitingForMembers | RunState::Paused) {
            return Err(CoordinatorError::WrongState(state));
        }
        config.validate()?;
        if config.total_steps <= self.step {
            return Err(CoordinatorError::ConfigRange {
                field: "total_steps",
                value: config.total_steps,
                range: "more than the steps already completed",
            });
        }
        self.config = config;
        self.last_update = now;
        if state == RunState::WaitingForMembers {
            self.update_join_window(now);
        }
        Ok(())
    }

    /// The run authority resumes a paused run, or cancels a pause not yet taken.
    pub fn resume(&mut self, now: i64) -> Result<()> {
        self.check_clock(now)?;
        if self.pause_pending == 1 {
            self.pause_pending = 0;
        } else if self.run_state() == RunState::Paused {
            self.enter_waiting(now);
        } else {
            return Err(CoordinatorError::NotPaused);
        }
        self.last_update = now;
        Ok(())
    }
}
