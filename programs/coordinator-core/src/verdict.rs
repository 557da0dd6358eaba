//! Verdicts: verifiers judge the results of a closed round, and a quorum of them ejects a member
//! that faked one.
//!
//! The verifiers of round `s` are its elected witnesses: they hold every counted payload of the
//! round already. After the round closes, each screens the counted results (and scores and
//! recomputes those the seed drawn at the close chose: `Round::scored`, `Round::spot_checked`)
//! and sends one
//! [`Input::Verdict`](crate::Input::Verdict) per result it finds faked, with the finding and
//! the evidence a third party needs to recheck it from the committed payloads. The coordinator
//! checks everything it can without the payloads (the target's result counted, a copy's
//! original committed earlier, a repeat's earlier result counted, an overlap high enough to
//! mean anything), and counts each verifier once per target. When a verdict quorum (two thirds
//! of the round's witnesses, and at least two) agrees, the member is ejected: every point it
//! holds unpaid is slashed, its results in rounds that close from then on do not count, its
//! join deposit is forfeit, and it may not rejoin. A lone lying verifier is outvoted.

use crate::error::CoordinatorError;
use crate::state::{Coordinator, MAX_CLIENTS, MemberStatus, ROUNDS_KEPT};

/// The overlap (per mille of a result's picks) a copy or a repeat must reach: honest results
/// of one round, or of one client in consecutive rounds, share at most about half their picks
/// (docs/verification.md), and an exact copy shares all.
pub const SAME_SELECTION_PER_MILLE: u16 = 950;

/// How many hundredths of the round's median norm a result must reach to be outsized (ten
/// times): honest results of a round are within a few times of each other (docs/verification.md).
pub const OUTSIZED_PER_CENT: u16 = 1000;

/// The sign agreement (per mille of the coefficients the rest of the round also picked) below
/// which a result goes against the round: honest results agree with the rest more often than
/// not (docs/verification.md).
pub const CONTRARY_PER_MILLE: u16 = 400;

/// Rounds a sender's scores are judged over when every result is scored; a run that scores one
/// in `n` judges over `n` times as many, so a window holds about as many scores. No window is
/// full before a run's round `n · SCORE_WINDOW − 1`.
pub const SCORE_WINDOW: u64 = 16;

/// The mean score (per mille of the median sender's) under which a sender's results fall short:
/// an honest sender's window mean stays well above a quarter of the median one, noise and
/// updates trained on other data score about zero (docs/verification.md).
pub const LOW_SCORE_PER_MILLE: u16 = 250;

/// What a verifier found wrong with one result, and what anyone holding the committed payloads
/// rechecks it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Every value of the result is zero, though its participant was assigned samples.
    Zero,
    /// The result selects what the result member slot `of` committed earlier in the same round
    /// selects: `overlap` per mille of its picks.
    Copy { of: u16, overlap: u16 },
    /// The result selects what its participant's result of the round before selected.
    Stale { overlap: u16 },
    /// The result's values have `per_cent` hundredths of the norm of the round's median
    /// counted result: a scaled update.
    Outsized { per_cent: u16 },
    /// Only `agreement` per mille of the result's signs agree with the sum of the round's other
    /// counted results where they picked the same coefficients: a negated update.
    Contrary { agreement: u16 },
    /// The result was scored against data this round (`Round::scored`), and its sender's
    /// mean score over its window reached only `share` per mille of the median sender's (0
    /// for a mean at or under zero): noise, or an update trained on other batches than the
    /// assigned ones. Rechecked by scoring the window's results on the same batches.
    LowScore { share: u16 },
    /// The result was spot-checked this round (`Round::spot_checked`): recomputed from the
    /// momentum its sender committed to in the payload, on the model every replica held and the
    /// samples the round assigned, it gives another payload. Only `picked` per mille of the
    /// sent result's picks are among the recomputed result's (1000 when the picks agree and
    /// the values do not). Rechecked by the same recompute.
    Recomputed { picked: u16 },
    /// The result was spot-checked this round, and its sender did not serve the momentum its
    /// payload commits to while the verifier asked: a result nobody can recompute.
    Unserved,
    /// The result was spot-checked this round and recomputed, but its sender's counted result
    /// of the next round commits to another momentum than the one the recompute left: a sender
    /// that forges the momentum it starts each step from. Rechecked by the same recompute and
    /// the next round's payload.
    Unchained,
}

impl Finding {
    const ZERO: u8 = 1;
    const COPY: u8 = 2;
    const STALE: u8 = 3;
    const OUTSIZED: u8 = 4;
    const CONTRARY: u8 = 5;
    const LOW_SCORE: u8 = 6;
    const RECOMPUTED: u8 = 7;
    const UNSERVED: u8 = 8;
    const UNCHAINED: u8 = 9;
    /// Bytes of an encoded finding: a kind, then two u16 fields (zero where unused).
    pub const LEN: usize = 5;
    /// Every finding's [`Finding::name`], in kind order (for metrics that list them all).
    pub const NAMES: [&'static str; 9] = [
        "zero",
        "copy",
        "stale",
        "outsized",
        "contrary",
        "low-score",
        "recomputed",
        "unserved",
        "unchained",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Copy { .. } => "copy",
            Self::Stale { .. } => "stale",
            Self::Outsized { .. } => "outsized",
            Self::Contrary { .. } => "contrary",
            Self::LowScore { .. } => "low-score",
            Self::Recomputed { .. } => "recomputed",
            Self::Unserved => "unserved",
            Self::Unchained => "unchained",
        }
    }

    pub fn pack(&self) -> [u8; Self::LEN] {
        let (kind, first, second) = match *self {
            Self::Zero => (Self::ZERO, 0, 0),
            Self::Copy { of, overlap } => (Self::COPY, of, overlap),
            Self::Stale { overlap } => (Self::STALE, 0, overlap),
            Self::Outsized { per_cent } => (Self::OUTSIZED, 0, per_cent),
            Self::Contrary { agreement } => (Self::CONTRARY, 0, agreement),
            Self::LowScore { share } => (Self::LOW_SCORE, 0, share),
            Self::Recomputed { picked } => (Self::RECOMPUTED, 0, picked),
            Self::Unserved => (Self::UNSERVED, 0, 0),
            Self::Unchained => (Self::UNCHAINED, 0, 0),
        };
        let mut bytes = [kind, 0, 0, 0, 0];
        bytes[1..3].copy_from_slice(&first.to_le_bytes());
        bytes[3..5].copy_from_slice(&second.to_le_bytes());
        bytes
    }

    /// Decodes a finding; `None` for an unknown kind or a field set that the kind leaves unused
    /// (so every finding has exactly one encoding).
    pub fn unpack(bytes: &[u8; Self::LEN]) -> Option<Self> {
        let first = u16::from_le_bytes([bytes[1], bytes[2]]);
        let second = u16::from_le_bytes([bytes[3], bytes[4]]);
        match (bytes[0], first, second) {
            (Self::ZERO, 0, 0) => Some(Self::Zero),
            (Self::COPY, of, overlap) => Some(Self::Copy { of, overlap }),
            (Self::STALE, 0, overlap) => Some(Self::Stale { overlap }),
            (Self::OUTSIZED, 0, per_cent) => Some(Self::Outsized { per_cent }),
            (Self::CONTRARY, 0, agreement) => Some(Self::Contrary { agreement }),
            (Self::LOW_SCORE, 0, share) => Some(Self::LowScore { share }),
            (Self::RECOMPUTED, 0, picked) if picked <= 1000 => Some(Self::Recomputed { picked }),
            (Self::UNSERVED, 0, 0) => Some(Self::Unserved),
            (Self::UNCHAINED, 0, 0) => Some(Self::Unchained),
            _ => None,
        }
    }
}

type Result<T> = core::result::Result<T, CoordinatorError>;

impl Coordinator {
    /// Verifier `position` of round `step` judges `target`'s counted result of that round
    /// faked, by `finding`. The round must be closed and of the current epoch (verdicts come
    /// during the rounds after it, or the cooldown); the verifier must still be in the epoch. Ejects `target` when this verdict completes a verdict
    /// quorum.
    pub fn verdict(
        &mut self,
        id: [u8; 32],
        step: u64,
        position: u16,
        target: [u8; 32],
        finding: Finding,
        now: i64,
    ) -> Result<()> {
        self.check_clock(now)?;
        let round = self
            .closed_round(step)
            .ok_or(CoordinatorError::UnknownRound(step))?;
        let verifier = self.active_slot(&id)?;
        if round.elected(position) != Some(verifier) {
            return Err(CoordinatorError::NotAVerifier);
        }
        let accused = self
            .member_index(&target)
            .ok_or(CoordinatorError::NotAMember)?;
        if self.members[accused].status() == MemberStatus::Ejected {
            return Err(CoordinatorError::Ejected);
        }
        if round.counted(accused).is_none() {
            return Err(CoordinatorError::NotCounted);
        }
        if round
            .assignment(accused)
            .is_none_or(|samples| samples.is_empty())
        {
            return Err(CoordinatorError::FindingRefuted(
                "the participant was assigned no samples, so its result has nothing to fake",
            ));
        }
        match finding {
            Finding::Zero => {}
            Finding::Copy { of, overlap } => {
                let of = usize::from(of);
                if of >= MAX_CLIENTS || of == accused {
                    return Err(CoordinatorError::FindingRefuted(
                        "a copy names another member slot as its original",
                    ));
                }
                if !round.committed_before(of, accused) {
                    return Err(CoordinatorError::FindingRefuted(
                        "the original must have committed before the copy, or the copy could \
                         not have seen it",
                    ));
                }
                check_overlap(overlap)?;
            }
            Finding::Stale { overlap } => {
                let before = step
                    .checked_sub(1)
                    .and_then(|earlier| self.held_round(earlier))
                    .filter(|earlier| earlier.counted(accused).is_some());
                if before.is_none() {
                    return Err(CoordinatorError::FindingRefuted(
                        "a repeat needs the participant's counted result of the round before, \
                         still held",
                    ));
                }
                check_overlap(overlap)?;
            }
            Finding::Outsized { per_cent } => {
                if per_cent < OUTSIZED_PER_CENT {
                    return Err(CoordinatorError::FindingRefuted(
                        "a norm under ten times the round's median is within what honest \
                         results reach",
                    ));
                }
                check_judged_against_a_round(round)?;
            }
            Finding::Contrary { agreement } => {
                if agreement >= CONTRARY_PER_MILLE {
                    return Err(CoordinatorError::FindingRefuted(
                        "a sign agreement of 400 per mille or more is within what honest results \
                         reach",
                    ));
                }
                check_judged_against_a_round(round)?;
            }
            Finding::LowScore { share } => {
                if !round.scored(accused, self.config.score_one_in) {
                    return Err(CoordinatorError::FindingRefuted(
                        "the result was not among the round's scored results (the run's \
                         score_one_in and the round's seed choose them)",
                    ));
                }
                let span = SCORE_WINDOW * u64::from(self.config.score_one_in);
                if step + 1 < span {
                    return Err(CoordinatorError::FindingRefuted(
                        "no sender is judged before the run has scored for a whole window \
                         (score_one_in times 16 rounds)",
                    ));
                }
                if share >= LOW_SCORE_PER_MILLE {
                    return Err(CoordinatorError::FindingRefuted(
                        "a mean score of 250 per mille of the median sender's or more is \
                         within what honest senders reach",
                    ));
                }
            }
            Finding::Recomputed { .. } | Finding::Unserved | Finding::Unchained => {
                if !round.spot_checked(accused, self.config.spot_check_one_in) {
                    return Err(CoordinatorError::FindingRefuted(
                        "the result was not among the round's spot-checked results (the run's \
                         spot_check_one_in and the seed drawn at the round's close choose them)",
                    ));
                }
                let chained = step
                    .checked_add(1)
                    .and_then(|next| self.closed_round(next))
                    .is_some_and(|next| next.counted(accused).is_some());
                if finding == Finding::Unchained && !chained {
                    return Err(CoordinatorError::FindingRefuted(
                        "a broken chain needs the member's counted result of the next round, \
                         closed in the same epoch and still held",
                    ));
                }
            }
        }
        if round.accusations[accused] & (1 << position) != 0 {
            return Err(CoordinatorError::DuplicateVerdict);
        }
        let round = &mut self.rounds[step as usize % ROUNDS_KEPT];
        round.accusations[accused] |= 1 << position;
        let ejected = round.accusation_count(accused) >= round.verdict_quorum();
        if ejected {
            self.eject(accused);
        }
        self.last_update = now;
        Ok(())
    }

    /// Ejects member `slot`: it forfeits every point it holds (the treasurer pays `points −
    /// slashed − paid`, never below zero), earns nothing for the epoch, and is out of the run.
    /// Whatever its status, so withdrawing before the verdict escapes nothing.
    fn eject(&mut self, slot: usize) {
        let member = &mut self.members[slot];
        member.slashed = member.points;
        member.seen_rounds = 0;
        member.ready = 0;
        member.status = MemberStatus::Ejected as u8;
    }
}

/// A norm or a sign judged against the rest of the round needs a rest to stand for the honest
/// majority: at least three counted results (the screens' own bound).
fn check_judged_against_a_round(round: &crate::state::Round) -> Result<()> {
    let counted = (0..MAX_CLIENTS)
        .filter(|&slot| round.counted(slot).is_some())
        .count();
    if counted < 3 {
        return Err(CoordinatorError::FindingRefuted(
            "a result is judged against the rest of its round only when at least three counted",
        ));
    }
    Ok(())
}

fn check_overlap(overlap: u16) -> Result<()> {
    if !(SAME_SELECTION_PER_MILLE..=1000).contains(&overlap) {
        return Err(CoordinatorError::FindingRefuted(
            "an overlap below 950 per mille is within what honest results share (it is at most \
             1000)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finding_has_one_encoding() {
        for finding in [
            Finding::Zero,
            Finding::Copy {
                of: 3,
                overlap: 999,
            },
            Finding::Stale { overlap: 950 },
            Finding::Outsized { per_cent: 10_000 },
            Finding::Contrary { agreement: 120 },
            Finding::LowScore { share: 0 },
            Finding::Recomputed { picked: 1000 },
            Finding::Recomputed { picked: 3 },
            Finding::Unserved,
            Finding::Unchained,
        ] {
            assert_eq!(Finding::unpack(&finding.pack()), Some(finding));
            let kind = usize::from(finding.pack()[0]);
            assert_eq!(
                Finding::NAMES[kind - 1],
                finding.name(),
                "named in kind order"
            );
        }
        assert_eq!(Finding::unpack(&[0, 0, 0, 0, 0]), None, "no kind 0");
        assert_eq!(Finding::unpack(&[10, 0, 0, 0, 0]), None, "no kind 10");
        assert_eq!(
            Finding::unpack(&[7, 0, 0, 0xE9, 0x03]),
            None,
            "a share of picks is at most 1000 per mille"
        );
        assert_eq!(
            Finding::unpack(&[8, 0, 0, 1, 0]),
            None,
            "an unserved momentum carries no share"
        );
        assert_eq!(
            Finding::unpack(&[6, 2, 0, 0, 0]),
            None,
            "a score names no slot"
        );
        assert_eq!(
            Finding::unpack(&[4, 1, 0, 0, 0]),
            None,
            "a norm names no slot"
        );
        assert_eq!(
            Finding::unpack(&[1, 0, 0, 1, 0]),
            None,
            "a zero carries no overlap"
        );
        assert_eq!(
            Finding::unpack(&[3, 1, 0, 0, 0]),
            None,
            "a repeat names no slot"
        );
    }
}
