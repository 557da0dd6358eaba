//! Cheap screens of a round's results, from the results alone: a result of all zeros, a copy of
//! another participant's, a participant's previous result sent again, a result far larger than
//! the round's others, and one whose signs go against the rest of the round's. They need no
//! forward pass, so every replica can run them on every round; what they cannot see (an update
//! trained on the wrong data, random signs at honest magnitudes) needs scoring against data
//! (docs/verification.md).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use demeter_coordinator_core::Finding;
use demeter_coordinator_core::verdict::{
    CONTRARY_PER_MILLE, OUTSIZED_PER_CENT, SAME_SELECTION_PER_MILLE,
};

use crate::demo::{SparseBlocks, SparseUpdate};

/// The share of picks two results must share (over all their blocks) to be the same selection:
/// honest results of one round, or of one client in consecutive rounds, share far fewer
/// (measured by the byzantine benchmark), and an exact copy shares all. The coordinator's own
/// bound, so it refuses nothing a screen flags.
pub const SAME_SELECTION: f64 = SAME_SELECTION_PER_MILLE as f64 / 1000.0;

/// How many times the round's median norm a result's values must reach to be outsized: honest
/// results of a round differ by far less (their gradients are clipped to one norm), and a
/// scaled one by its scale.
pub const OUTSIZED_RATIO: f64 = OUTSIZED_PER_CENT as f64 / 100.0;

/// The share of a result's signs (where the rest of the round picked the same coefficient) that
/// must agree with the sum of the rest for the result to stand: an honest result agrees with
/// its peers more often than not, a negated one less often than not.
pub const CONTRARY_AGREEMENT: f64 = CONTRARY_PER_MILLE as f64 / 1000.0;

/// Rounds in a row a participant's result must be contrary before a verifier acts on it: an
/// honest result's signs go against the round's now and then late in training (measured: a
/// few rounds in 300, never two in a row), a negated one's nearly every round.
pub const CONTRARY_ROUNDS: u32 = 3;

/// Results a round needs before the norm and sign screens judge one against the rest: with
/// fewer, the rest is too small to stand for the honest majority.
pub const SCREEN_QUORUM: usize = 3;

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
    /// Its values' norm over the round's median norm, when at least [`OUTSIZED_RATIO`].
    pub outsized: Option<f64>,
    /// The share of its signs that agree with the sum of the round's other results (where they
    /// picked the same coefficients), when below [`CONTRARY_AGREEMENT`].
    pub contrary: Option<f64>,
}

/// What the norm and sign screens measured of one result, flagged or not (for benchmarks and
/// for setting the bounds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measures {
    /// Its values' norm over the round's median norm.
    pub norm_ratio: f64,
    /// The share of its signs that agree with the sum of the round's other results, where they
    /// picked the same coefficients; `None` where no other result picked any of its
    /// coefficients.
    pub agreement: Option<f64>,
}

impl Flags {
    pub fn any(&self) -> bool {
        self.zero
            || self.copy.is_some()
            || self.stale.is_some()
            || self.outsized.is_some()
            || self.contrary.is_some()
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
        } else if let Some(overlap) = self.stale {
            Some(Finding::Stale {
                overlap: per_mille(overlap),
            })
        } else if let Some(ratio) = self.outsized {
            Some(Finding::Outsized {
                per_cent: (ratio * 100.0).round().min(f64::from(u16::MAX)) as u16,
            })
        } else {
            self.contrary.map(|agreement| Finding::Contrary {
                agreement: per_mille(agreement),
            })
        }
    }
}

/// Where a coefficient sits: (tensor, block, position in the block's coefficients).
type Pick = (u32, u32, i64);

/// A result as the screens read it: every coefficient it picked and its value, copied to the
/// host once and sorted by pick, so two results compare in one merge and the whole round's
/// signs in one pass, with no dense tensors and a handful of tensor reads per result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Picks {
    picks: Vec<Pick>,
    values: Vec<f32>,
}

impl Picks {
    pub fn of(update: &SparseUpdate) -> Self {
        // Two reads from the device per result, not two per tensor: small tensor operations
        // cost more than the bytes they move.
        let all = |part: &dyn Fn(&SparseBlocks) -> &Tensor| {
            let flat: Vec<Tensor> = update
                .tensors
                .iter()
                .map(|blocks| part(blocks).flatten(0, -1))
                .collect();
            Tensor::cat(&flat, 0)
        };
        let indices = Vec::<i64>::try_from(all(&|blocks| &blocks.indices)).expect("i64 indices");
        let values = Vec::<f32>::try_from(all(&|blocks| &blocks.values).to_kind(Kind::Float))
            .expect("f32 values");
        let mut entries: Vec<(Pick, f32)> = Vec::with_capacity(indices.len());
        let mut at = 0;
        for (tensor, blocks) in update.tensors.iter().enumerate() {
            let (k, len) = (blocks.k().max(1), blocks.indices.numel());
            entries.extend((0..len).map(|offset| {
                (
                    (tensor as u32, (offset / k) as u32, indices[at + offset]),
                    values[at + offset],
                )
            }));
            at += len;
        }
        // Tensors and blocks come in order already: this sorts each block's picks. A block
        // picks a coefficient once (top-k), so the order is total.
        entries.sort_unstable_by_key(|&(pick, _)| pick);
        let (picks, values) = entries.into_iter().unzip();
        Self { picks, values }
    }

    /// How many coefficients were picked.
    pub fn len(&self) -> usize {
        self.picks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// The share of these picks that `other` also picks, in the same tensor and block.
    pub fn overlap(&self, other: &Picks) -> f64 {
        if self.picks.is_empty() {
            return 0.0;
        }
        self.shared_values(other).count() as f64 / self.picks.len() as f64
    }

    /// The values of each coefficient both results pick, in pick order: (this one's, `other`'s).
    pub fn shared_values<'a>(&'a self, other: &'a Picks) -> impl Iterator<Item = (f32, f32)> + 'a {
        let (mut mine, mut theirs) = (
            self.picks.iter().zip(&self.values).peekable(),
            other.picks.iter().zip(&other.values).peekable(),
        );
        std::iter::from_fn(move || {
            loop {
                let (a, b) = (mine.peek()?, theirs.peek()?);
                match a.0.cmp(b.0) {
                    Ordering::Less => {
                        mine.next();
                    }
                    Ordering::Greater => {
                        theirs.next();
                    }
                    Ordering::Equal => {
                        let (a, b) = (*a.1, *b.1);
                        mine.next();
                        theirs.next();
                        return Some((a, b));
                    }
                }
            }
        })
    }

    /// Every value is zero (a NaN is not).
    fn all_zero(&self) -> bool {
        self.values.iter().all(|&value| value == 0.0)
    }

    /// The L2 norm of the values.
    fn norm(&self) -> f64 {
        self.values
            .iter()
            .map(|&value| f64::from(value) * f64::from(value))
            .sum::<f64>()
            .sqrt()
    }
}

/// -1, 0 or 1.
fn sign(value: f64) -> i8 {
    i8::from(value > 0.0) - i8::from(value < 0.0)
}

/// What one walk over a round's sorted picks counts: the picks every pair of results share, and
/// each result's sign agreement with the sum of the others.
struct Tally {
    /// By pair of results (both ways): the picks both made.
    shared: Vec<Vec<u32>>,
    /// By result: its signs that agree with the others' sum, and its picks where that sum is
    /// nonzero.
    signs: Vec<(u64, u64)>,
}

impl Tally {
    /// Walks every result's sorted picks together. At each coefficient, the results that
    /// picked it share it pairwise, and each one's value is compared in sign with the others'
    /// sum (in result order, so every replica gets the same bits) wherever that sum is nonzero.
    fn of(results: &[Picks]) -> Self {
        let n = results.len();
        let mut tally = Self {
            shared: vec![vec![0; n]; n],
            signs: vec![(0, 0); n],
        };
        let mut cursors = vec![0usize; n];
        let mut here: Vec<(usize, f64)> = Vec::with_capacity(n);
        loop {
            let next = results
                .iter()
                .zip(&cursors)
                .filter_map(|(result, &at)| result.picks.get(at))
                .min();
            let Some(&pick) = next else { break };
            here.clear();
            for (index, (result, at)) in results.iter().zip(&mut cursors).enumerate() {
                if result.picks.get(*at) == Some(&pick) {
                    here.push((index, f64::from(result.values[*at])));
                    *at += 1;
                }
            }
            for &(index, own) in &here {
                let mut others = 0.0;
                for &(other, value) in &here {
                    if other != index {
                        tally.shared[index][other] += 1;
                        others += value;
                    }
                }
                if others != 0.0 {
                    tally.signs[index].1 += 1;
                    tally.signs[index].0 += u64::from(sign(others) == sign(own));
                }
            }
        }
        tally
    }

    /// The share of result `index`'s picks that result `other` also made.
    fn overlap(&self, results: &[Picks], index: usize, other: usize) -> f64 {
        match results[index].picks.len() {
            0 => 0.0,
            picks => f64::from(self.shared[index][other]) / picks as f64,
        }
    }

    /// The share of result `index`'s signs that agree with the others' sum, where it is
    /// nonzero; `None` where no other result picked any of its coefficients.
    fn agreement(&self, index: usize) -> Option<f64> {
        let (agree, shared) = self.signs[index];
        (shared > 0).then(|| agree as f64 / shared as f64)
    }
}

/// The norm and sign measures of a round's results (see [`Measures`]); empty below
/// [`SCREEN_QUORUM`] results.
fn measure(results: &[Picks], tally: &Tally) -> Vec<Measures> {
    if results.len() < SCREEN_QUORUM {
        return Vec::new();
    }
    let norms: Vec<f64> = results.iter().map(Picks::norm).collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    norms
        .iter()
        .enumerate()
        .map(|(index, norm)| Measures {
            norm_ratio: if median > 0.0 { norm / median } else { 0.0 },
            agreement: tally.agreement(index),
        })
        .collect()
}

/// What the screens made of one round, by result.
#[derive(Debug)]
pub struct Screened {
    pub flags: Vec<Flags>,
    /// The norm and sign measures, flagged or not; empty below [`SCREEN_QUORUM`] results.
    pub measures: Vec<Measures>,
    /// The picks, which the next round's screen takes as its `previous`.
    pub picks: Vec<Picks>,
}

/// Screens a round's `results` (in the order they were committed), each against the earlier
/// ones and against what the same participant picked the round before (`previous`, by the same
/// index), and by its norm and signs against the whole round.
pub fn screen(results: &[&SparseUpdate], previous: &[Option<&Picks>]) -> Screened {
    let picks: Vec<Picks> = results.iter().map(|result| Picks::of(result)).collect();
    let tally = Tally::of(&picks);
    let measures = measure(&picks, &tally);
    let flags = picks
        .iter()
        .enumerate()
        .map(|(index, own)| {
            let measured = measures.get(index);
            Flags {
                zero: own.all_zero(),
                copy: (0..index)
                    .map(|earlier| (earlier, tally.overlap(&picks, index, earlier)))
                    .filter(|&(_, overlap)| overlap >= SAME_SELECTION)
                    .max_by(|a, b| a.1.total_cmp(&b.1)),
                stale: previous
                    .get(index)
                    .copied()
                    .flatten()
                    .map(|before| own.overlap(before))
                    .filter(|&overlap| overlap >= SAME_SELECTION),
                outsized: measured
                    .map(|m| m.norm_ratio)
                    .filter(|&ratio| ratio >= OUTSIZED_RATIO),
                contrary: measured
                    .and_then(|m| m.agreement)
                    .filter(|&agreement| agreement < CONTRARY_AGREEMENT),
            }
        })
        .collect();
    Screened {
        flags,
        measures,
        picks,
    }
}

/// Consecutive rounds each participant's result was contrary, so a verifier acts on a contrary
/// sign only once it persists ([`CONTRARY_ROUNDS`]). Keyed by whatever names a participant
/// (a member slot, a simulated worker).
#[derive(Clone, Debug, Default)]
pub struct Streaks<K: Ord>(BTreeMap<K, u32>);

impl<K: Ord + Copy> Streaks<K> {
    /// Takes one round's flags by participant and returns the flags a verifier acts on: all
    /// but a contrary sign that has not yet held for [`CONTRARY_ROUNDS`] rounds in a row. A
    /// participant missing from the round starts over.
    pub fn judge(&mut self, round: impl IntoIterator<Item = (K, Flags)>) -> Vec<(K, Flags)> {
        let mut streaks = BTreeMap::new();
        let judged = round
            .into_iter()
            .map(|(key, mut flags)| {
                let streak = if flags.contrary.is_some() {
                    self.0.get(&key).copied().unwrap_or(0) + 1
                } else {
                    0
                };
                streaks.insert(key, streak);
                if streak < CONTRARY_ROUNDS {
                    flags.contrary = None;
                }
                (key, flags)
            })
            .collect();
        self.0 = streaks;
        judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

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
    fn one_walk_over_the_round_counts_every_pair_s_shared_picks() {
        let results = [
            update(&[&[0, 1, 2, 3], &[4, 5, 6, 7]], 1.0),
            update(&[&[0, 1, 9, 8], &[4, 5, 6, 7]], -1.0),
            update(&[&[3, 2, 1, 0], &[0, 1, 2, 3]], 0.5),
            update(&[&[10, 11, 12, 13], &[7, 6, 5, 4]], 2.0),
        ];
        let picks: Vec<Picks> = results.iter().map(Picks::of).collect();
        let tally = Tally::of(&picks);
        for a in 0..picks.len() {
            for b in 0..picks.len() {
                if a != b {
                    assert_eq!(tally.overlap(&picks, a, b), picks[a].overlap(&picks[b]));
                }
            }
        }
        assert_eq!(tally.overlap(&picks, 0, 1), 6.0 / 8.0);
    }

    #[test]
    fn zeros_copies_and_repeats_are_flagged_and_distinct_results_are_not() {
        let honest = update(&[&[0, 1, 2, 3]], 1.0);
        let other = update(&[&[4, 5, 6, 7]], 1.0);
        let copy = update(&[&[0, 1, 2, 3]], 1.0);
        let zero = update(&[&[8, 9, 10, 11]], 0.0);
        let results = [&honest, &other, &copy, &zero];
        let before = Picks::of(&other);
        let flags = screen(&results, &[None, Some(&before), None, None]).flags;
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

    #[test]
    fn a_scaled_or_negated_result_stands_out_from_its_round() {
        // Overlapping picks, none the same selection as another's (that would be a copy).
        let honest = [
            update(&[&[0, 1, 2, 3]], 1.0),
            update(&[&[1, 2, 3, 4]], 1.2),
            update(&[&[2, 3, 4, 5]], 0.9),
        ];
        let scaled = update(&[&[0, 1, 2, 4]], 1000.0);
        let negated = update(&[&[0, 2, 3, 5]], -1.0);
        let mut results: Vec<&SparseUpdate> = honest.iter().collect();
        results.push(&scaled);
        results.push(&negated);
        let flags = screen(&results, &[]).flags;
        assert!(flags[..3].iter().all(|f| !f.any()), "{flags:?}");
        assert!(flags[3].outsized.is_some_and(|ratio| ratio > 800.0));
        assert_eq!(flags[4].contrary, Some(0.0), "every sign against the rest");
        assert_eq!(
            flags[4].finding(|i| i),
            Some(Finding::Contrary { agreement: 0 })
        );

        // Two results are no round to judge against.
        let flags = screen(&results[3..], &[]).flags;
        assert!(
            flags
                .iter()
                .all(|f| f.outsized.is_none() && f.contrary.is_none())
        );
    }

    #[test]
    fn a_contrary_sign_counts_once_it_persists() {
        let contrary = Flags {
            contrary: Some(0.2),
            ..Flags::default()
        };
        let zero = Flags {
            zero: true,
            ..Flags::default()
        };
        let mut streaks = Streaks::default();
        for round in 1..=CONTRARY_ROUNDS {
            let judged = streaks.judge([(7, contrary), (8, zero)]);
            assert_eq!(judged[0].1.contrary.is_some(), round == CONTRARY_ROUNDS);
            assert!(judged[1].1.zero, "other flags count at once");
        }
        // A round without the flag, or without the participant, starts it over.
        streaks.judge([(8, zero)]);
        assert!(streaks.judge([(7, contrary)])[0].1.contrary.is_none());
    }
}
