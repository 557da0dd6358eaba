//! Cheap screens of a round's results, from their selections alone: a result of all zeros, a
//! copy of another participant's, and a participant's previous result sent again. They need no
//! forward pass, so every replica can run them on every round; what they cannot see (a scaled,
//! flipped, random or wrongly trained update) needs scoring against data (docs/verification.md).

use std::collections::BTreeSet;

use tch::Kind;

use demeter_coordinator_core::Finding;
use demeter_coordinator_core::verdict::SAME_SELECTION_PER_MILLE;

use crate::demo::{SparseBlocks, SparseUpdate};

/// The share of picks two results must share (over all their blocks) to be the same selection:
/// honest results of one round, or of one client in consecutive rounds, share far fewer
/// (measured by the byzantine benchmark), and an exact copy shares all. The coordinator's own
/// bound, so it refuses nothing a screen flags.
pub const SAME_SELECTION: f64 = SAME_SELECTION_PER_MILLE as f64 / 1000.0;

/// What the screens found about one result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flags {
    /// Every value is zero: the result moves nothing and cost nothing to make.
    pub zero: bool,
    /// It selects what an earlier result of the round selects: that result's index and the
    /// overlap (on chain, earlier is the commit order: a copier must see the original first).
    pub copy: Option<(usize, f64)>,
    /// It selects what the same participant selected the round before: the overlap.
    pub stale: Option<f64>,
}

impl Flags {
    pub fn any(&self) -> bool {
        self.zero || self.copy.is_some() || self.stale.is_some()
    }

    /// The finding a verifier reports, the strongest first (a zero result proves itself, a copy
    /// and a repeat by their overlap); `slot_of` maps a result's index to its member slot.
    pub fn finding(&self, slot_of: impl Fn(usize) -> usize) -> Option<Finding> {
        let per_mille = |overlap: f64| (overlap * 1000.0).round() as u16;
        if self.zero {
            Some(Finding::Zero)
        } else if let Some((index, overlap)) = self.copy {
            Some(Finding::Copy {
                of: slot_of(index) as u16,
                overlap: per_mille(overlap),
            })
        } else {
            self.stale.map(|overlap| Finding::Stale {
                overlap: per_mille(overlap),
            })
        }
    }
}

/// A result's picks: (tensor, block, position) of every coefficient it selected. Built once per
/// result, then compared with every other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picks(BTreeSet<(usize, usize, i64)>);

impl Picks {
    pub fn of(update: &SparseUpdate) -> Self {
        let mut picks = BTreeSet::new();
        for (tensor, blocks) in update.tensors.iter().enumerate() {
            let k = blocks.k().max(1);
            let indices = Vec::<i64>::try_from(blocks.indices.flatten(0, -1)).expect("i64 indices");
            for (at, index) in indices.into_iter().enumerate() {
                picks.insert((tensor, at / k, index));
            }
        }
        Self(picks)
    }

    /// The share of these picks that `other` also picks, in the same tensor and block.
    pub fn overlap(&self, other: &Picks) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.intersection(&other.0).count() as f64 / self.0.len() as f64
    }
}

fn all_zero(blocks: &SparseBlocks) -> bool {
    blocks
        .values
        .to_kind(Kind::Float)
        .abs()
        .max()
        .double_value(&[])
        == 0.0
}

/// Screens a round's `results` (in the order they were committed), each against the earlier
/// ones and against what the same participant picked the round before (`previous`, by the same
/// index). Returns the flags and the results' picks, which the next round's screen takes as its
/// `previous`.
pub fn screen(results: &[&SparseUpdate], previous: &[Option<&Picks>]) -> (Vec<Flags>, Vec<Picks>) {
    let picks: Vec<Picks> = results.iter().map(|result| Picks::of(result)).collect();
    let flags = results
        .iter()
        .zip(&picks)
        .enumerate()
        .map(|(index, (result, own))| Flags {
            zero: result.tensors.iter().all(all_zero),
            copy: picks[..index]
                .iter()
                .map(|earlier| own.overlap(earlier))
                .enumerate()
                .filter(|&(_, overlap)| overlap >= SAME_SELECTION)
                .max_by(|a, b| a.1.total_cmp(&b.1)),
            stale: previous
                .get(index)
                .copied()
                .flatten()
                .map(|before| own.overlap(before))
                .filter(|&overlap| overlap >= SAME_SELECTION),
        })
        .collect();
    (flags, picks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Tensor};

    fn update(rows: &[&[i64]], value: f32) -> SparseUpdate {
        let k = rows[0].len() as i64;
        let flat: Vec<i64> = rows.iter().flat_map(|row| row.iter().copied()).collect();
        let indices = Tensor::from_slice(&flat).view([rows.len() as i64, k]);
        SparseUpdate {
            values: crate::demo::ValueEncoding::F32,
            tensors: vec![SparseBlocks {
                values: Tensor::full(
                    [rows.len() as i64, k],
                    f64::from(value),
                    (Kind::Float, Device::Cpu),
                ),
                indices,
            }],
        }
    }

    #[test]
    fn overlap_counts_shared_picks_block_by_block() {
        let a = update(&[&[0, 1, 2, 3], &[0, 1, 2, 3]], 1.0);
        let b = update(&[&[0, 1, 9, 8], &[4, 5, 6, 7]], 1.0);
        let (a, b) = (Picks::of(&a), Picks::of(&b));
        assert_eq!(a.overlap(&b), 2.0 / 8.0, "the second block's picks differ");
        assert_eq!(a.overlap(&a), 1.0);
    }

    #[test]
    fn zeros_copies_and_repeats_are_flagged_and_distinct_results_are_not() {
        let honest = update(&[&[0, 1, 2, 3]], 1.0);
        let other = update(&[&[4, 5, 6, 7]], 1.0);
        let copy = update(&[&[0, 1, 2, 3]], 1.0);
        let zero = update(&[&[8, 9, 10, 11]], 0.0);
        let results = [&honest, &other, &copy, &zero];
        let before = Picks::of(&other);
        let (flags, _) = screen(&results, &[None, Some(&before), None, None]);
        assert_eq!(flags[0], Flags::default(), "the original is not the copy");
        assert_eq!((flags[1].stale, flags[1].copy), (Some(1.0), None));
        assert_eq!((flags[2].copy, flags[2].stale), (Some((0, 1.0)), None));
        assert!(flags[3].zero && flags[3].copy.is_none());

        // What a verifier reports, by member slot (here slot = 10 + index).
        let slot_of = |index: usize| 10 + index;
        assert_eq!(flags[0].finding(slot_of), None);
        assert_eq!(
            flags[1].finding(slot_of),
            Some(Finding::Stale { overlap: 1000 })
        );
        assert_eq!(
            flags[2].finding(slot_of),
            Some(Finding::Copy {
                of: 10,
                overlap: 1000
            })
        );
        assert_eq!(flags[3].finding(slot_of), Some(Finding::Zero));
    }
}
