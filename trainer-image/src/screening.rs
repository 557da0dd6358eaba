//! Cheap screens of a round's results, from their selections alone: a result of all zeros, a
//! copy of another participant's, and a participant's previous result sent again. They need no
//! forward pass, so every replica can run them on every round; what they cannot see (a scaled,
//! flipped, random or wrongly trained update) needs scoring against data (docs/verification.md).

use std::collections::BTreeSet;

use tch::Kind;

use crate::demo::{SparseBlocks, SparseUpdate};

/// The share of picks two results must share (over all their blocks) to be the same selection:
/// honest results of one round, or of one client in consecutive rounds, share far fewer
/// (measured by the byzantine benchmark), and an exact copy shares all.
pub const SAME_SELECTION: f64 = 0.95;

/// What the screens found about one result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Every value is zero: the result moves nothing and cost nothing to make.
    pub zero: bool,
    /// It selects what an earlier result of the round selects (on chain: the earlier
    /// commitment; a copier must see the original before it can send it).
    pub copy: bool,
    /// It selects what the same participant selected the round before.
    pub stale: bool,
}

impl Flags {
    pub fn any(&self) -> bool {
        self.zero || self.copy || self.stale
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

/// Screens a round's `results` (in slot order), each against the others and against what the
/// same participant picked the round before (`previous`, by the same index). Returns the flags
/// and the results' picks, which the next round's screen takes as its `previous`.
pub fn screen(results: &[&SparseUpdate], previous: &[Option<Picks>]) -> (Vec<Flags>, Vec<Picks>) {
    let picks: Vec<Picks> = results.iter().map(|result| Picks::of(result)).collect();
    let flags = results
        .iter()
        .zip(&picks)
        .enumerate()
        .map(|(index, (result, own))| Flags {
            zero: result.tensors.iter().all(all_zero),
            copy: picks[..index]
                .iter()
                .any(|earlier| own.overlap(earlier) >= SAME_SELECTION),
            stale: previous
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|before| own.overlap(before) >= SAME_SELECTION),
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
        let (flags, _) = screen(&results, &[None, Some(Picks::of(&other)), None, None]);
        assert_eq!(flags[0], Flags::default(), "the original is not the copy");
        assert!(flags[1].stale && !flags[1].copy);
        assert!(flags[2].copy && !flags[2].stale);
        assert!(flags[3].zero && !flags[3].copy);
    }
}
