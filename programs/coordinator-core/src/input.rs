//! The run's inputs: the one type every host applies, and its one wire encoding.
//!
//! A member joins, commits to its results, reports, judges others' results, attests checkpoints
//! and withdraws; anyone ticks; the run authority pauses, resumes and changes the config. The
//! Solana program's instructions carry these bytes after their tag (the program adds only the
//! instructions that manage accounts: creating and closing a run, join grants), and the
//! centralized server's requests carry the same bytes, so a new input is written here once: its
//! variant, its encoding and its transition in [`Coordinator::apply`].
//!
//! Encoding: one tag byte, then the fields in order, little-endian; a `Config` and a
//! `WitnessReport` are their fixed-size bytes. Trailing bytes are an error, so every input has
//! exactly one encoding.

use crate::config::Config;
use crate::error::CoordinatorError;
use crate::state::{Coordinator, Endpoint, WitnessReport};
use crate::verdict::Finding;

/// One input to a run, from one signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Replaces the config while the run waits for members or is paused. Run authority only.
    UpdateConfig { config: Config },
    /// Pauses the run: at once before an epoch's first round, otherwise after the round. Run
    /// authority only.
    Pause,
    /// Resumes a paused run, or cancels a pending pause. Run authority only.
    Resume,
    /// The signer joins the run, serving its results to peers at `endpoint`.
    Join { endpoint: Endpoint },
    /// The signer leaves the run.
    Withdraw,
    /// Advances the run on time-outs; anyone may send it.
    Tick,
    /// The signer has loaded the model during warmup.
    WarmupWitness,
    /// The signer, a participant of round `step`, commits to its result: the content hash of
    /// the payload it serves. Once per round; what witnesses vouch for and replicas apply.
    Commit { step: u64, hash: [u8; 32] },
    /// The signer, elected witness `position` of round `step`, reports what it saw.
    Witness {
        step: u64,
        position: u16,
        report: WitnessReport,
    },
    /// The signer shows that `target` trained in round `step` unseen by a witness quorum.
    HealthCheck { step: u64, target: [u8; 32] },
    /// The signer, elected witness `position` of closed round `step` and so its verifier,
    /// judges `target`'s counted result of that round faked, by `finding`.
    Verdict {
        step: u64,
        position: u16,
        target: [u8; 32],
        finding: Finding,
    },
    /// The signer, elected witness `position` of round `step - 1` (the last before the run
    /// stopped training), attests that the model after `step` rounds has weights hash `hash`.
    Attest {
        step: u64,
        position: u16,
        hash: [u8; 32],
    },
}

/// The tags of the inputs. The program's own instructions use the numbers in between (0, 4, 5,
/// 12), so an instruction's tag is either an input's or the program's, never both.
pub mod tag {
    pub const UPDATE_CONFIG: u8 = 1;
    pub const PAUSE: u8 = 2;
    pub const RESUME: u8 = 3;
    pub const JOIN: u8 = 6;
    pub const WITHDRAW: u8 = 7;
    pub const TICK: u8 = 8;
    pub const WARMUP_WITNESS: u8 = 9;
    pub const WITNESS: u8 = 10;
    pub const HEALTH_CHECK: u8 = 11;
    pub const COMMIT: u8 = 13;
    pub const VERDICT: u8 = 14;
    pub const ATTEST: u8 = 15;
}

/// Bytes that are not an input's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedInput {
    #[error("empty input")]
    Empty,
    #[error("unknown input tag {0}")]
    UnknownTag(u8),
    #[error("a verdict's finding is not one the coordinator knows (kind {0})")]
    UnknownFinding(u8),
    #[error("input tag {tag}: {len} bytes of fields, {expected} expected")]
    WrongLength {
        tag: u8,
        len: usize,
        expected: usize,
    },
}

impl Input {
    /// Whether only the run authority may send it; the host checks who signed.
    pub fn needs_run_authority(&self) -> bool {
        matches!(self, Self::UpdateConfig { .. } | Self::Pause | Self::Resume)
    }

    /// Whether it may start a round, and so needs a seed from the host: only a tick, and only
    /// one that takes a transition an earlier input armed (see `Coordinator::tick`).
    pub fn needs_seed(&self) -> bool {
        matches!(self, Self::Tick)
    }

    /// The input's name, for logs (a witness report's bytes are too many to print).
    pub fn name(&self) -> &'static str {
        match self {
            Self::UpdateConfig { .. } => "UpdateConfig",
            Self::Pause => "Pause",
            Self::Resume => "Resume",
            Self::Join { .. } => "Join",
            Self::Withdraw => "Withdraw",
            Self::Tick => "Tick",
            Self::WarmupWitness => "WarmupWitness",
            Self::Commit { .. } => "Commit",
            Self::Witness { .. } => "Witness",
            Self::HealthCheck { .. } => "HealthCheck",
            Self::Verdict { .. } => "Verdict",
            Self::Attest { .. } => "Attest",
        }
    }

    pub fn tag(&self) -> u8 {
        match self {
            Self::UpdateConfig { .. } => tag::UPDATE_CONFIG,
            Self::Pause => tag::PAUSE,
            Self::Resume => tag::RESUME,
            Self::Join { .. } => tag::JOIN,
            Self::Withdraw => tag::WITHDRAW,
            Self::Tick => tag::TICK,
            Self::WarmupWitness => tag::WARMUP_WITNESS,
            Self::Commit { .. } => tag::COMMIT,
            Self::Witness { .. } => tag::WITNESS,
            Self::HealthCheck { .. } => tag::HEALTH_CHECK,
            Self::Verdict { .. } => tag::VERDICT,
            Self::Attest { .. } => tag::ATTEST,
        }
    }

    /// Decodes an input.
    pub fn unpack(data: &[u8]) -> Result<Self, MalformedInput> {
        let (&tag, fields) = data.split_first().ok_or(MalformedInput::Empty)?;
        let expected = Self::fields_len(tag).ok_or(MalformedInput::UnknownTag(tag))?;
        if fields.len() != expected {
            return Err(MalformedInput::WrongLength {
                tag,
                len: fields.len(),
                expected,
            });
        }
        let u64_at = |at: usize| u64::from_le_bytes(fields[at..at + 8].try_into().expect("8"));
        let u16_at = |at: usize| u16::from_le_bytes(fields[at..at + 2].try_into().expect("2"));
        Ok(match tag {
            tag::UPDATE_CONFIG => Self::UpdateConfig {
                config: bytemuck::pod_read_unaligned(fields),
            },
            tag::PAUSE => Self::Pause,
            tag::RESUME => Self::Resume,
            tag::JOIN => Self::Join {
                endpoint: Endpoint {
                    ip: fields[..16].try_into().expect("16"),
                    port: u16_at(16),
                },
            },
            tag::WITHDRAW => Self::Withdraw,
            tag::TICK => Self::Tick,
            tag::WARMUP_WITNESS => Self::WarmupWitness,
            tag::COMMIT => Self::Commit {
                step: u64_at(0),
                hash: fields[8..].try_into().expect("32"),
            },
            tag::WITNESS => Self::Witness {
                step: u64_at(0),
                position: u16_at(8),
                report: bytemuck::pod_read_unaligned(&fields[10..]),
            },
            tag::HEALTH_CHECK => Self::HealthCheck {
                step: u64_at(0),
                target: fields[8..].try_into().expect("32"),
            },
            tag::VERDICT => {
                let finding: &[u8; Finding::LEN] = fields[42..].try_into().expect("5");
                Self::Verdict {
                    step: u64_at(0),
                    position: u16_at(8),
                    target: fields[10..42].try_into().expect("32"),
                    finding: Finding::unpack(finding)
                        .ok_or(MalformedInput::UnknownFinding(finding[0]))?,
                }
            }
            tag::ATTEST => Self::Attest {
                step: u64_at(0),
                position: u16_at(8),
                hash: fields[10..].try_into().expect("32"),
            },
            _ => unreachable!("fields_len knows every tag"),
        })
    }

    /// The length of an input's fields after its tag; `None` for a tag that is no input's.
    fn fields_len(tag: u8) -> Option<usize> {
        Some(match tag {
            tag::UPDATE_CONFIG => size_of::<Config>(),
            tag::PAUSE | tag::RESUME | tag::WITHDRAW | tag::TICK | tag::WARMUP_WITNESS => 0,
            tag::JOIN => 16 + 2,
            tag::WITNESS => 8 + 2 + size_of::<WitnessReport>(),
            tag::HEALTH_CHECK | tag::COMMIT => 8 + 32,
            tag::VERDICT => 8 + 2 + 32 + Finding::LEN,
            tag::ATTEST => 8 + 2 + 32,
            _ => return None,
        })
    }

    /// Encodes the input.
    pub fn pack(&self) -> Vec<u8> {
        let mut data = vec![self.tag()];
        match self {
            Self::UpdateConfig { config } => data.extend_from_slice(bytemuck::bytes_of(config)),
            Self::Join { endpoint } => {
                data.extend_from_slice(&endpoint.ip);
                data.extend_from_slice(&endpoint.port.to_le_bytes());
            }
            Self::Witness {
                step,
                position,
                report,
            } => {
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(&position.to_le_bytes());
                data.extend_from_slice(bytemuck::bytes_of(report));
            }
            Self::Commit { step, hash } => {
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(hash);
            }
            Self::HealthCheck { step, target } => {
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(target);
            }
            Self::Verdict {
                step,
                position,
                target,
                finding,
            } => {
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(&position.to_le_bytes());
                data.extend_from_slice(target);
                data.extend_from_slice(&finding.pack());
            }
            Self::Attest {
                step,
                position,
                hash,
            } => {
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(&position.to_le_bytes());
                data.extend_from_slice(hash);
            }
            Self::Pause | Self::Resume | Self::Withdraw | Self::Tick | Self::WarmupWitness => {}
        }
        data
    }
}

impl Coordinator {
    /// Applies `input` from `signer` at `now`. `seed` seeds a round the input starts: the host
    /// supplies one when [`Input::needs_seed`] (any value otherwise). The host has checked what
    /// only it can: the signature, and the run authority for [`Input::needs_run_authority`].
    /// A refused input leaves the state exactly as it was.
    pub fn apply(
        &mut self,
        signer: [u8; 32],
        input: &Input,
        now: i64,
        seed: &[u8; 32],
    ) -> Result<(), CoordinatorError> {
        match *input {
            Input::UpdateConfig { config } => self.update_config(config, now),
            Input::Pause => self.pause(now),
            Input::Resume => self.resume(now),
            Input::Join { endpoint } => self.join(signer, endpoint, now),
            Input::Withdraw => self.withdraw(signer, now),
            Input::Tick => self.tick(now, seed).map(|_| ()),
            Input::WarmupWitness => self.warmup_witness(signer, now),
            Input::Commit { step, hash } => self.commit(signer, step, hash, now),
            Input::Witness {
                step,
                position,
                ref report,
            } => self.witness(signer, step, position, report, now),
            Input::HealthCheck { step, target } => self.health_check(signer, step, target, now),
            Input::Verdict {
                step,
                position,
                target,
                finding,
            } => self.verdict(signer, step, position, target, finding, now),
            Input::Attest {
                step,
                position,
                hash,
            } => self.attest(signer, step, position, hash, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn every_input_round_trips_and_rejects_other_lengths() {
        let mut report = WitnessReport::zeroed();
        report.insert(200);
        let inputs = [
            Input::UpdateConfig {
                config: Config::zeroed(),
            },
            Input::Pause,
            Input::Resume,
            Input::Join {
                endpoint: Endpoint {
                    ip: [9; 16],
                    port: 7300,
                },
            },
            Input::Withdraw,
            Input::Tick,
            Input::WarmupWitness,
            Input::Commit {
                step: 3,
                hash: [7; 32],
            },
            Input::Witness {
                step: 3,
                position: 1,
                report,
            },
            Input::HealthCheck {
                step: u64::MAX,
                target: [4; 32],
            },
            Input::Verdict {
                step: 9,
                position: 2,
                target: [5; 32],
                finding: Finding::Zero,
            },
            Input::Verdict {
                step: 9,
                position: 2,
                target: [5; 32],
                finding: Finding::Copy {
                    of: 7,
                    overlap: 990,
                },
            },
            Input::Verdict {
                step: 9,
                position: 0,
                target: [5; 32],
                finding: Finding::Stale { overlap: 1000 },
            },
            Input::Attest {
                step: 40,
                position: 31,
                hash: [6; 32],
            },
        ];
        for input in inputs {
            let data = input.pack();
            assert_eq!(Input::unpack(&data), Ok(input));
            let mut longer = data.clone();
            longer.push(0);
            assert!(matches!(
                Input::unpack(&longer),
                Err(MalformedInput::WrongLength { .. })
            ));
            if data.len() > 1 {
                assert!(matches!(
                    Input::unpack(&data[..data.len() - 1]),
                    Err(MalformedInput::WrongLength { .. })
                ));
            }
        }
        assert_eq!(Input::unpack(&[]), Err(MalformedInput::Empty));
        for tag in [0, 4, 5, 12, 16, 255] {
            assert_eq!(Input::unpack(&[tag]), Err(MalformedInput::UnknownTag(tag)));
        }
    }
}
