//! A run as `demeter run show` and `demeter rewards show` print it: its state, its members'
//! points, slashed points and what its reward pool paid and owes them.

use std::fmt;

use demeter_coordinator_core::MemberStatus;
use demeter_coordinator_core::accounts::RunAccount;
use demeter_treasurer::client::PoolSnapshot;
use serde::Serialize;
use solana_sdk::pubkey::Pubkey;

use super::table::Table;

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RunView {
    pub run_account: String,
    pub authority: String,
    pub run_id: String,
    pub state: String,
    pub epoch: u64,
    pub step: u64,
    pub total_steps: u64,
    /// The model the run's witnesses attested last: late joiners accept only its snapshots.
    pub attested: Option<AttestedView>,
    /// What the run checks of its clients' results beyond the screens every client runs:
    /// what a client joining it must be ready for.
    pub verification: VerificationView,
    pub members: Vec<MemberView>,
    pub pool: Option<PoolView>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct MemberView {
    pub key: String,
    pub status: String,
    pub points: u64,
    pub slashed: u64,
    /// Token units the pool paid this member (with a pool).
    pub paid: Option<u64>,
    /// Token units the pool still owes it (with a pool).
    pub owed: Option<u64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AttestedView {
    /// The rounds applied to it.
    pub step: u64,
    /// SHA-256 of its weights, hex.
    pub weights_hash: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct VerificationView {
    /// One in this many results scored against data; 0 none.
    pub score_one_in: u16,
    /// One in this many results recomputed; 0 none.
    pub spot_check_one_in: u16,
    /// How far, per mille, a recompute may stray; 0 bit for bit.
    pub spot_check_tolerance: u16,
}

impl fmt::Display for VerificationView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "screens")?;
        if self.score_one_in > 0 {
            write!(f, "; scores one in {} against data", self.score_one_in)?;
        }
        match (self.spot_check_one_in, self.spot_check_tolerance) {
            (0, _) => Ok(()),
            (one_in, 0) => write!(
                f,
                "; recomputes one in {one_in}, bit for bit (clients serve their momenta, on one \
                 kind of device)"
            ),
            (one_in, per_mille) => write!(
                f,
                "; recomputes one in {one_in}, within {per_mille} per mille (clients serve their \
                 momenta)"
            ),
        }
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PoolView {
    pub address: String,
    pub mint: String,
    pub tokens_per_point: u64,
    pub claim_grace_seconds: u64,
    pub escrow_balance: u64,
    pub total_paid: u64,
    pub owed: u64,
}

impl RunView {
    pub fn new(
        run_account: Pubkey,
        run: &RunAccount,
        pool: Option<&PoolSnapshot>,
    ) -> anyhow::Result<Self> {
        let state = &run.coordinator;
        let members = state
            .members
            .iter()
            .enumerate()
            .filter(|(_, member)| member.status() != MemberStatus::Empty)
            .map(|(slot, member)| {
                let owed = pool.map(|pool| pool.pool.owed(state, slot)).transpose()?;
                Ok(MemberView {
                    key: Pubkey::new_from_array(member.id).to_string(),
                    status: format!("{:?}", member.status()),
                    points: member.points,
                    slashed: member.slashed,
                    paid: pool.map(|pool| pool.pool.paid[slot]),
                    owed,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let pool = pool
            .map(|snapshot| -> anyhow::Result<PoolView> {
                let pool = &snapshot.pool;
                Ok(PoolView {
                    address: snapshot.address.to_string(),
                    mint: Pubkey::new_from_array(pool.mint).to_string(),
                    tokens_per_point: pool.tokens_per_point,
                    claim_grace_seconds: pool.claim_grace,
                    escrow_balance: snapshot.escrow_balance,
                    total_paid: pool.total_paid,
                    owed: pool.total_owed(state)?,
                })
            })
            .transpose()?;
        let name_end = state.run_id.iter().position(|&b| b == 0).unwrap_or(32);
        Ok(Self {
            run_account: run_account.to_string(),
            authority: Pubkey::new_from_array(run.authority).to_string(),
            run_id: String::from_utf8_lossy(&state.run_id[..name_end]).into_owned(),
            state: format!("{:?}", state.run_state()),
            epoch: state.epoch,
            step: state.step,
            total_steps: state.config.total_steps,
            attested: state
                .checkpoint
                .attested()
                .map(|(step, hash)| AttestedView {
                    step,
                    weights_hash: hex::encode(hash),
                }),
            verification: VerificationView {
                score_one_in: state.config.score_one_in,
                spot_check_one_in: state.config.spot_check_one_in,
                spot_check_tolerance: state.config.spot_check_tolerance,
            },
            members,
            pool,
        })
    }
}

impl fmt::Display for RunView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut run = Table::new(&["run", "value"]);
        let mut fields = vec![
            ("name", self.run_id.clone()),
            ("run account", self.run_account.clone()),
            ("authority", self.authority.clone()),
            ("state", self.state.clone()),
            (
                "epoch, step",
                format!("{}, {} of {}", self.epoch, self.step, self.total_steps),
            ),
            (
                "attested model",
                self.attested.as_ref().map_or("none yet".to_owned(), |a| {
                    format!("step {}, weights hash {}", a.step, a.weights_hash)
                }),
            ),
            ("verification", self.verification.to_string()),
        ];
        match &self.pool {
            Some(pool) => fields.extend([
                ("reward pool", pool.address.clone()),
                ("mint", pool.mint.clone()),
                ("tokens per point", pool.tokens_per_point.to_string()),
                ("escrow balance", pool.escrow_balance.to_string()),
                ("paid, owed", format!("{}, {}", pool.total_paid, pool.owed)),
                (
                    "claim grace",
                    format!("{} s after the run finishes", pool.claim_grace_seconds),
                ),
            ]),
            None => fields.push(("reward pool", "none (demeter rewards create)".to_owned())),
        }
        for (name, value) in fields {
            run.row(vec![name.to_owned(), value]);
        }
        write!(f, "{run}")?;
        let mut members = Table::new(&["client", "status", "points", "slashed", "paid", "owed"]);
        let units = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
        for member in &self.members {
            members.row(vec![
                member.key.clone(),
                member.status.clone(),
                member.points.to_string(),
                member.slashed.to_string(),
                units(member.paid),
                units(member.owed),
            ]);
        }
        write!(f, "\n{members}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_says_what_a_joining_client_must_be_ready_for() {
        let view = |score_one_in, spot_check_one_in, spot_check_tolerance| {
            VerificationView {
                score_one_in,
                spot_check_one_in,
                spot_check_tolerance,
            }
            .to_string()
        };
        assert_eq!(view(0, 0, 0), "screens");
        assert_eq!(view(4, 0, 0), "screens; scores one in 4 against data");
        assert_eq!(
            view(0, 32, 0),
            "screens; recomputes one in 32, bit for bit (clients serve their momenta, on one \
             kind of device)"
        );
        assert_eq!(
            view(0, 32, 10),
            "screens; recomputes one in 32, within 10 per mille (clients serve their momenta)"
        );
    }
}
