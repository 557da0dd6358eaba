//! Chain sync (solana mode): the run's account is read through the coordinator crate's
//! JSON-RPC client and decoded with its types, then mirrored into status and metrics. With the
//! run authority's wallet the operator also steers the run toward its spec: it creates the run
//! (joins gated to this TrainingRun's clients), grants joins to clients added later, writes
//! schedule changes while no epoch is under way, pauses on suspend and resumes, and with
//! `crank` sends the ticks that are due.
//!
//! What to send is planned by [`plan`], a pure function of the state read; [`sync`] reads,
//! sends and reads again. The operator never closes a run: the run account holds the points
//! the treasurer pays against.

use std::time::Duration;

use demeter_coordinator::client::{
    ClientFailure, RunClient, RunSnapshot, tick_due, tick_instructions,
};
use demeter_coordinator::instruction as ix;
use demeter_coordinator_core::accounts::RunAccount;
use demeter_coordinator_core::{Config, Coordinator, CoordinatorError, MemberStatus, RunState};
use demeter_treasurer::client::{PoolSnapshot, Rewards};
use k8s_openapi::api::core::v1::{Secret, SecretKeySelector};
use kube::api::Api;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Keypair;
use solana_sdk::signer::Signer;

use crate::crd::SolanaCoordinator;
use crate::identity;

/// How often a synced run is read again; with `crank`, how often ticks are looked for.
pub const RESYNC: Duration = Duration::from_secs(10);
pub const CRANK_RESYNC: Duration = Duration::from_secs(2);

/// Why the run could not be read or steered. Shown in the ChainSynced condition; retried with
/// backoff, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("coordinator.solana.authoritySecretRef: {0}")]
    Authority(String),
    #[error(
        "no run {run_id:?} of authority {authority} on {rpc_url}: the operator creates it while \
         the TrainingRun is not suspended and coordinator.solana.authoritySecretRef is set; or \
         create it with `demeter run create RUN.toml`"
    )]
    NoRun {
        run_id: String,
        authority: Pubkey,
        rpc_url: String,
    },
    #[error(
        "coordinator.solana.authority is {named}, but coordinator.solana.authoritySecretRef \
         holds the wallet of {given}: the run is the named authority's, so point the Secret at \
         that wallet (or remove it to only follow the run)"
    )]
    WalletMismatch { named: Pubkey, given: Pubkey },
    #[error(
        "the run's authority is {on_chain}, but coordinator.solana.authoritySecretRef holds \
         {given}: point it at the run authority's wallet, or remove it to only follow the run"
    )]
    NotTheAuthority { on_chain: Pubkey, given: Pubkey },
    #[error(transparent)]
    Client(#[from] ClientFailure),
}

/// Every [`ChainError::reason`], for removing a deleted run's series.
pub const REASONS: [&str; 7] = [
    "AuthorityUnavailable",
    "RunNotFound",
    "NotTheAuthority",
    "TransactionRefused",
    "TransactionFailed",
    "NotACoordinatorRun",
    "RpcError",
];

/// Every [`Transaction::name`].
pub const INSTRUCTIONS: [&str; 6] = [
    "create",
    "grant_join",
    "update_config",
    "pause",
    "resume",
    "tick",
];

impl ChainError {
    /// The ChainSynced condition's reason, and the `reason` label of the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ChainError::Authority(_) => "AuthorityUnavailable",
            ChainError::NoRun { .. } => "RunNotFound",
            ChainError::NotTheAuthority { .. } | ChainError::WalletMismatch { .. } => {
                "NotTheAuthority"
            }
            ChainError::Client(ClientFailure::Refused { .. }) => "TransactionRefused",
            ChainError::Client(ClientFailure::Transaction(_)) => "TransactionFailed",
            ChainError::Client(ClientFailure::NoSuchRun { .. }) => "RunNotFound",
            ChainError::Client(ClientFailure::NotA { .. }) => "NotACoordinatorRun",
            ChainError::Client(ClientFailure::Rpc { .. }) => "RpcError",
        }
    }
}

/// What the spec asks of the run on chain.
pub struct Desired {
    pub config: Config,
    /// This TrainingRun's clients, in client order.
    pub clients: Vec<Pubkey>,
    pub suspend: bool,
    pub crank: bool,
    /// Each join's deposit, for a run the operator creates.
    pub join_deposit: u64,
}

/// A transaction the operator sends to steer the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transaction {
    Create,
    Grant(Pubkey),
    UpdateConfig,
    Pause,
    Resume,
    Tick,
}

impl Transaction {
    /// The `instruction` label of the transaction counter.
    pub fn name(&self) -> &'static str {
        match self {
            Transaction::Create => "create",
            Transaction::Grant(_) => "grant_join",
            Transaction::UpdateConfig => "update_config",
            Transaction::Pause => "pause",
            Transaction::Resume => "resume",
            Transaction::Tick => "tick",
        }
    }
}

/// The run as one read showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainView {
    pub run_account: Pubkey,
    pub slot: u64,
    /// How many slots the read trails the newest slot the RPC node has processed.
    pub slot_lag: u64,
    pub state: RunState,
    pub pause_pending: bool,
    pub epoch: u64,
    pub step: u64,
    /// Samples consumed by completed rounds.
    pub samples: u64,
    /// Members active or waiting for the next epoch.
    pub joined: u16,
    /// Participants of the last closed round whose results a witness quorum saw.
    pub witnessed: u16,
    pub dropped: u16,
    /// Members a verdict quorum ejected for faked results, by key.
    pub ejected: Vec<Pubkey>,
    pub points: u64,
    /// Points taken back from members for cheating (never paid).
    pub slashed: u64,
    /// The model the witnesses attested last: its step and weights hash.
    pub attested: Option<(u64, [u8; 32])>,
    /// From the last closed round's start to the next round's start, within one epoch.
    pub last_round_seconds: Option<f64>,
    /// Every member that joined (from its join, so per-client series exist before the first
    /// epoch pays): what it earned, lost and was paid.
    pub members: Vec<MemberPoints>,
    /// The run's reward pool on the treasurer, if it has one.
    pub rewards: Option<RewardsView>,
}

/// One member's points and rewards.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPoints {
    pub key: Pubkey,
    pub points: u64,
    pub slashed: u64,
    /// Token units the pool paid it (0 without a pool).
    pub paid: u64,
}

/// The run's reward pool as read with the run.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardsView {
    pub pool: Pubkey,
    pub mint: Pubkey,
    pub tokens_per_point: u64,
    /// Token units the escrow holds.
    pub escrow: u64,
    pub paid: u64,
    /// Token units the pool owes members now.
    pub owed: u64,
}

impl ChainView {
    pub fn of(
        run_account: Pubkey,
        run: &RunAccount,
        pool: Option<&PoolSnapshot>,
        slot: u64,
        slot_lag: u64,
    ) -> Self {
        let state = &run.coordinator;
        let count = |status| u16::try_from(state.count(status)).unwrap_or(u16::MAX);
        let last_closed = state.step.checked_sub(1).and_then(|s| state.held_round(s));
        let witnessed = last_closed.map_or(0, |round| {
            (0..demeter_coordinator_core::state::MAX_CLIENTS)
                .filter(|&slot| round.is_participant(slot) && round.was_seen(slot))
                .count() as u16
        });
        Self {
            run_account,
            slot,
            slot_lag,
            state: state.run_state(),
            pause_pending: state.pause_pending == 1,
            epoch: state.epoch,
            step: state.step,
            samples: state.data_position,
            joined: count(MemberStatus::Active).saturating_add(count(MemberStatus::Pending)),
            witnessed,
            dropped: count(MemberStatus::Dropped),
            ejected: state
                .members
                .iter()
                .filter(|m| m.status() == MemberStatus::Ejected)
                .map(|m| Pubkey::new_from_array(m.id))
                .collect(),
            points: state.members.iter().map(|m| m.points).sum(),
            slashed: state.members.iter().map(|m| m.slashed).sum(),
            attested: state
                .checkpoint
                .attested()
                .map(|(step, hash)| (step, *hash)),
            last_round_seconds: state.last_round_seconds().map(|seconds| seconds as f64),
            members: state
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.status() != MemberStatus::Empty)
                .map(|(slot, m)| MemberPoints {
                    key: Pubkey::new_from_array(m.id),
                    points: m.points,
                    slashed: m.slashed,
                    paid: pool.map_or(0, |pool| pool.pool.paid[slot]),
                })
                .collect(),
            rewards: pool.map(|snapshot| RewardsView {
                pool: snapshot.address,
                mint: Pubkey::new_from_array(snapshot.pool.mint),
                tokens_per_point: snapshot.pool.tokens_per_point,
                escrow: snapshot.escrow_balance,
                paid: snapshot.pool.total_paid,
                // Owed can only overflow with a rate the program refuses to pay at.
                owed: snapshot.pool.total_owed(state).unwrap_or(u64::MAX),
            }),
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self.state {
            RunState::Uninitialized => "Uninitialized",
            RunState::WaitingForMembers => "WaitingForMembers",
            RunState::Warmup => "Warmup",
            RunState::RoundTrain => "RoundTrain",
            RunState::RoundWitness => "RoundWitness",
            RunState::Cooldown => "Cooldown",
            RunState::Finished => "Finished",
            RunState::Paused => "Paused",
        }
    }
}

/// What to send, given the run's state at `cluster_time`; `authority` is whether the operator
/// holds the run authority's wallet. Grants are planned apart: they need the grant accounts.
pub fn plan(
    state: &Coordinator,
    cluster_time: i64,
    desired: &Desired,
    authority: bool,
) -> Vec<Transaction> {
    let mut plan = Vec::new();
    let run_state = state.run_state();
    if authority {
        let stopped = matches!(run_state, RunState::Paused | RunState::Finished);
        if desired.suspend {
            if !stopped && state.pause_pending == 0 {
                plan.push(Transaction::Pause);
            }
        } else if run_state == RunState::Paused || state.pause_pending == 1 {
            plan.push(Transaction::Resume);
        }
    }
    // The program takes a new config only while no epoch is under way.
    let settled = match run_state {
        RunState::WaitingForMembers => !plan.contains(&Transaction::Pause),
        RunState::Paused => !plan.contains(&Transaction::Resume),
        _ => false,
    };
    if authority && settled && state.config != desired.config {
        plan.push(Transaction::UpdateConfig);
    }
    // Ticks are paid by the authority's wallet (the CRD allows crank only with one).
    if authority && desired.crank && tick_due(state, cluster_time) {
        plan.push(Transaction::Tick);
    }
    plan
}

/// Reads the authority's wallet from its Secret.
pub async fn authority(
    secrets: &Api<Secret>,
    key: &SecretKeySelector,
) -> Result<Keypair, ChainError> {
    let secret = secrets
        .get_opt(&key.name)
        .await
        .map_err(|error| ChainError::Authority(format!("reading Secret {}: {error}", key.name)))?
        .ok_or_else(|| {
            ChainError::Authority(format!(
                "Secret {} does not exist: create it from the run authority's wallet file \
                 (kubectl create secret generic {} --from-file={}=WALLET.json)",
                key.name, key.name, key.key
            ))
        })?;
    let bytes = identity::secret_value(&secret, &key.key).ok_or_else(|| {
        ChainError::Authority(format!("Secret {} has no key {:?}", key.name, key.key))
    })?;
    let signing = identity::parse_keypair(&bytes).map_err(|why| {
        ChainError::Authority(format!(
            "Secret {} key {:?} is not a Solana wallet file: {why}",
            key.name, key.key
        ))
    })?;
    Keypair::try_from(&signing.to_keypair_bytes()[..])
        .map_err(|error| ChainError::Authority(error.to_string()))
}

/// The result of one sync: the run as last read, what was sent to steer it, and the first
/// transaction that did not land (the others were still sent).
pub struct Synced {
    pub view: ChainView,
    pub sent: Vec<Transaction>,
    pub failed: Option<ChainError>,
}

/// The wallet from authoritySecretRef must be the authority the spec names.
fn check_wallet(named: &Pubkey, wallet: &Keypair) -> Result<(), ChainError> {
    if wallet.pubkey() != *named {
        return Err(ChainError::WalletMismatch {
            named: *named,
            given: wallet.pubkey(),
        });
    }
    Ok(())
}

/// Reads the run that `owner` named `run_id`, sends what [`plan`] asks for (with the
/// authority's wallet, if the operator holds it), and reads it again if anything was sent.
pub async fn sync(
    solana: &SolanaCoordinator,
    owner: Pubkey,
    run_id: [u8; 32],
    authority: Option<&Keypair>,
    desired: &Desired,
) -> Result<Synced, ChainError> {
    let url = &solana.rpc_url;
    if let Some(wallet) = authority {
        check_wallet(&owner, wallet)?;
    }
    let mut sent = Vec::new();
    let client = match (RunClient::find(url, &owner, &run_id).await, authority) {
        (Ok(client), _) => client,
        (Err(ClientFailure::NoSuchRun { .. }), Some(authority)) if !desired.suspend => {
            let client = RunClient::create(
                url,
                authority,
                run_id,
                desired.config,
                Some(desired.clients.as_slice()),
                desired.join_deposit,
            )
            .await?;
            sent.push(Transaction::Create);
            client
        }
        (Err(ClientFailure::NoSuchRun { run_id, .. }), _) => {
            return Err(ChainError::NoRun {
                run_id,
                authority: owner,
                rpc_url: url.clone(),
            });
        }
        (Err(error), _) => return Err(error.into()),
    };
    let snapshot = client.read().await?;
    let mut failed = None;
    if let Some(authority) = authority {
        let on_chain = Pubkey::new_from_array(snapshot.run.authority);
        if on_chain != authority.pubkey() {
            return Err(ChainError::NotTheAuthority {
                on_chain,
                given: authority.pubkey(),
            });
        }
        failed = steer(&client, &snapshot, authority, desired, &mut sent).await?;
    }
    let snapshot = if sent.is_empty() {
        snapshot
    } else {
        client.read().await?
    };
    let processed = client.processed_slot().await?;
    let pool = Rewards::new(&client).read().await?;
    let view = ChainView::of(
        client.run_account(),
        &snapshot.run,
        pool.as_ref(),
        snapshot.slot,
        processed.saturating_sub(snapshot.slot),
    );
    Ok(Synced { view, sent, failed })
}

/// Sends the grants and the planned transactions, recording each that lands in `sent`. A
/// refused one does not hold up the rest (a schedule the program will not take must not stop
/// the crank); the first refusal is returned. Reads that fail end the sync.
async fn steer(
    client: &RunClient,
    snapshot: &RunSnapshot,
    authority: &Keypair,
    desired: &Desired,
    sent: &mut Vec<Transaction>,
) -> Result<Option<ChainError>, ChainError> {
    let run = &snapshot.run;
    let state = &run.coordinator;
    let (me, account) = (authority.pubkey(), client.run_account());
    let mut transactions = Vec::new();
    // A gated run whose join authority is ours: every client of this TrainingRun may join.
    if run.join_authority == me.to_bytes() {
        let strangers: Vec<Pubkey> = desired
            .clients
            .iter()
            .filter(|key| state.member_index(&key.to_bytes()).is_none())
            .copied()
            .collect();
        let missing = client.missing_grants(&strangers).await?;
        transactions.extend(missing.into_iter().map(Transaction::Grant));
    }
    transactions.extend(plan(state, snapshot.cluster_time, desired, true));
    let mut failed = None;
    for transaction in transactions {
        let instructions = match &transaction {
            Transaction::Grant(client_key) => vec![ix::grant_join(&me, &account, client_key)],
            Transaction::Pause => vec![ix::pause(&me, &account)],
            Transaction::Resume => vec![ix::resume(&me, &account)],
            Transaction::Tick => tick_instructions(&account).to_vec(),
            Transaction::UpdateConfig => vec![ix::update_config(&me, &account, desired.config)],
            Transaction::Create => continue,
        };
        match client.send(&instructions, &[authority]).await {
            Ok(_) => sent.push(transaction),
            // A client's tick landed first: the run moved on, which is what the tick was for.
            Err(ClientFailure::Refused { code, .. })
                if transaction == Transaction::Tick
                    && code == CoordinatorError::NothingDue.code() => {}
            Err(error @ ClientFailure::Rpc { .. }) => return Err(error.into()),
            Err(error) => {
                failed.get_or_insert(ChainError::Client(error));
            }
        }
    }
    Ok(failed)
}

/// Before a TrainingRun goes away: asks for the run to pause (at once while it waits, or when
/// its current epoch ends), so no new epoch starts without an owner. The run account and its
/// points stay. Returns whether a pause was sent; a run that does not exist is fine.
pub async fn pause_for_deletion(
    solana: &SolanaCoordinator,
    owner: Pubkey,
    run_id: [u8; 32],
    authority: &Keypair,
) -> Result<bool, ChainError> {
    check_wallet(&owner, authority)?;
    let client = match RunClient::find(&solana.rpc_url, &owner, &run_id).await {
        Ok(client) => client,
        Err(ClientFailure::NoSuchRun { .. }) => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    let snapshot = client.read().await?;
    let state = &snapshot.run.coordinator;
    let stopped = matches!(state.run_state(), RunState::Paused | RunState::Finished);
    if stopped || state.pause_pending == 1 {
        return Ok(false);
    }
    if Pubkey::new_from_array(snapshot.run.authority) != authority.pubkey() {
        return Err(ChainError::NotTheAuthority {
            on_chain: Pubkey::new_from_array(snapshot.run.authority),
            given: authority.pubkey(),
        });
    }
    client
        .send(
            &[ix::pause(&authority.pubkey(), &client.run_account())],
            &[authority],
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;
    use demeter_coordinator_core::Member;

    use super::*;

    fn config() -> Config {
        Config {
            warmup_time: 5,
            cooldown_time: 5,
            max_round_train_time: 30,
            round_witness_time: 5,
            epoch_time: 600,
            join_window: 0,
            global_batch_size_start: 8,
            global_batch_size_end: 8,
            points_per_epoch: 10,
            init_min_clients: 2,
            min_clients: 1,
            witness_nodes: 1,
            ..Config::example()
        }
    }

    fn desired() -> Desired {
        Desired {
            config: config(),
            clients: Vec::new(),
            suspend: false,
            crank: false,
            join_deposit: 0,
        }
    }

    fn run_in(state: RunState) -> Box<RunAccount> {
        let mut run: Box<RunAccount> = bytemuck::zeroed_box();
        run.coordinator.config = config();
        run.coordinator.run_state = state as u8;
        run
    }

    #[test]
    fn suspend_pauses_once_and_resume_undoes_it() {
        let suspended = Desired {
            suspend: true,
            ..desired()
        };
        let training = run_in(RunState::RoundTrain);
        assert_eq!(
            plan(&training.coordinator, 0, &suspended, true),
            [Transaction::Pause]
        );
        let mut pending = run_in(RunState::RoundTrain);
        pending.coordinator.pause_pending = 1;
        assert!(plan(&pending.coordinator, 0, &suspended, true).is_empty());
        assert_eq!(
            plan(&pending.coordinator, 0, &desired(), true),
            [Transaction::Resume]
        );
        let paused = run_in(RunState::Paused);
        assert_eq!(
            plan(&paused.coordinator, 0, &desired(), true),
            [Transaction::Resume]
        );
        assert!(plan(&paused.coordinator, 0, &suspended, true).is_empty());
        // Without the authority's wallet the operator only follows.
        assert!(plan(&training.coordinator, 0, &suspended, false).is_empty());
    }

    #[test]
    fn a_schedule_change_waits_until_no_epoch_is_under_way() {
        let longer = Desired {
            config: Config {
                total_steps: 200,
                ..config()
            },
            ..desired()
        };
        let training = run_in(RunState::RoundTrain);
        assert!(plan(&training.coordinator, 0, &longer, true).is_empty());
        let waiting = run_in(RunState::WaitingForMembers);
        assert_eq!(
            plan(&waiting.coordinator, 0, &longer, true),
            [Transaction::UpdateConfig]
        );
        // Resumed first: the config is written once the run waits again.
        let paused = run_in(RunState::Paused);
        assert_eq!(
            plan(&paused.coordinator, 0, &longer, true),
            [Transaction::Resume]
        );
        let suspended = Desired {
            suspend: true,
            ..longer
        };
        assert_eq!(
            plan(&paused.coordinator, 0, &suspended, true),
            [Transaction::UpdateConfig]
        );
    }

    #[test]
    fn the_crank_ticks_only_when_a_tick_is_due() {
        let crank = Desired {
            crank: true,
            ..desired()
        };
        let mut warmup = run_in(RunState::Warmup);
        warmup.coordinator.state_started_at = 100;
        warmup.coordinator.last_update = 100;
        assert!(plan(&warmup.coordinator, 102, &crank, true).is_empty());
        assert_eq!(
            plan(&warmup.coordinator, 105, &crank, true),
            [Transaction::Tick]
        );
        assert!(plan(&warmup.coordinator, 105, &desired(), true).is_empty());
    }

    #[test]
    fn the_view_counts_members_points_and_the_last_rounds_witnesses() {
        let mut run = run_in(RunState::RoundTrain);
        let state = &mut run.coordinator;
        let member = |id: u8, status: MemberStatus, points: u64| Member {
            id: [id; 32],
            points,
            status: status as u8,
            ..Member::zeroed()
        };
        state.members[0] = member(1, MemberStatus::Active, 10);
        state.members[1] = member(2, MemberStatus::Active, 10);
        state.members[2] = member(3, MemberStatus::Dropped, 5);
        state.members[3] = member(4, MemberStatus::Pending, 0);
        state.step = 8;
        state.epoch = 2;
        state.data_position = 64;
        // Round 7 closed with clients 0 and 1 in it; its one witness saw only client 0.
        let closed = &mut state.rounds[7 % 4];
        closed.step = 7;
        closed.epoch = 2;
        closed.started_at = 1_000;
        closed.in_use = 1;
        closed.closed = 1;
        closed.participants[0] = 0b11;
        closed.participant_count = 2;
        closed.witness_count = 1;
        closed.reported = 1;
        closed.commitments[0] = [0xC0; 32];
        closed.reports[0].insert(0);
        let current = &mut state.rounds[8 % 4];
        current.step = 8;
        current.epoch = 2;
        current.started_at = 1_042;
        current.in_use = 1;

        let view = ChainView::of(Pubkey::new_unique(), &run, None, 500, 3);
        assert_eq!((view.joined, view.witnessed, view.dropped), (3, 1, 1));
        assert_eq!((view.epoch, view.step, view.samples), (2, 8, 64));
        assert_eq!(view.points, 25);
        assert_eq!(
            view.members.len(),
            4,
            "every member that joined, points or not"
        );
        assert_eq!(view.last_round_seconds, Some(42.0));
        assert_eq!((view.slot, view.slot_lag), (500, 3));
        assert_eq!(view.state_name(), "RoundTrain");
    }
}
