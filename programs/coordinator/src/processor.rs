//! The program: checks each instruction's accounts, then hands the input to the state machine.
//!
//! Every account is checked before anything is written: signer, writable, owner, type
//! (discriminator and size), and PDA address against the canonical bump. The state machine
//! checks the input in full before it mutates, and a failed instruction's writes are discarded
//! by the runtime anyway, so a rejection never leaves a half-applied change.

use solana_program::account_info::AccountInfo;
use solana_program::clock::Clock;
use solana_program::entrypoint::ProgramResult;
use solana_program::hash::hashv;
use solana_program::program::invoke;
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_program::rent::Rent;

use demeter_coordinator_core::accounts::{
    JoinGrant, Pool, RunAccount, RunInstance, TREASURER_PROGRAM_ID, Tagged,
};
use demeter_coordinator_core::{
    AccessError, Config, CoordinatorError, Input, MemberStatus, RunState,
};

use crate::account::{JOIN_GRANT_SEED, RUN_SEED, load_mut, load_uninitialized};
use crate::checks::{
    close_account, create_pda, move_lamports, signer, system_program, sysvar, writable,
};
use crate::error::{denied, refused};
use crate::instruction::CoordinatorInstruction;

/// The program's entrypoint function (registered natively in tests, through `entrypoint!`
/// on chain).
pub fn process_instruction(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    data: &[u8],
) -> ProgramResult {
    match CoordinatorInstruction::unpack(data)? {
        CoordinatorInstruction::InitRun {
            run_id,
            join_authority,
            config,
            join_deposit,
        } => init_run(
            program_id,
            accounts,
            run_id,
            join_authority,
            config,
            join_deposit,
        ),
        CoordinatorInstruction::GrantJoin { client } => grant_join(program_id, accounts, &client),
        CoordinatorInstruction::RevokeJoin { client } => revoke_join(program_id, accounts, &client),
        CoordinatorInstruction::CloseRun => close_run(program_id, accounts),
        CoordinatorInstruction::Input(input) => apply(program_id, accounts, &input),
    }
}

/// Checks an input's accounts (see `CoordinatorInstruction::Input` for each input's list) and
/// who signed it, then hands it to the state machine.
fn apply(program_id: &Pubkey, accounts: &[AccountInfo], input: &Input) -> ProgramResult {
    // Anyone may tick, so a tick names no signer.
    let (signer_info, accounts) = match input {
        Input::Tick => (None, accounts),
        _ => {
            let (first, rest) = accounts
                .split_first()
                .ok_or(ProgramError::NotEnoughAccountKeys)?;
            signer(first)?;
            (Some(first), rest)
        }
    };
    let [run_account, clock, rest @ ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    let signer_key = signer_info.map_or([0; 32], |info| info.key.to_bytes());
    if input.needs_run_authority() && run.authority != signer_key {
        return Err(denied(AccessError::NotRunAuthority));
    }
    // A joining client pays its deposit through the system program, which comes before the
    // grant in its accounts.
    let (system, rest) = match input {
        Input::Join { .. } => {
            let (system, rest) = rest
                .split_first()
                .ok_or(ProgramError::NotEnoughAccountKeys)?;
            system_program(system)?;
            (Some(system), rest)
        }
        _ => (None, rest),
    };
    if let (Input::Join { .. }, Some(client)) = (input, signer_info)
        && run.is_gated()
    {
        check_grant(program_id, &run, run_account, client, rest.first())?;
    }
    let clock = sysvar::<Clock>(clock)?;
    // Checked whether or not this tick reads it.
    let slot_hashes = input
        .needs_seed()
        .then(|| slot_hashes_sysvar(rest.first()))
        .transpose()?;
    let armed_before = run.coordinator.transition_armed == 1;
    let seed = if let (Some(slot_hashes), true) = (slot_hashes, armed_before) {
        match armed_slot_hash(slot_hashes, run.armed_slot)? {
            Some(hash) => round_seed(run_account.key, &hash),
            // The arming slot has not ended yet: its hash does not exist.
            None if clock.slot <= run.armed_slot => {
                return Err(refused(CoordinatorError::NothingDue));
            }
            // Older than the sysvar's 512 slots: arm again, at a slot nobody knows the hash of.
            None => {
                run.armed_slot = clock.slot;
                return Ok(());
            }
        }
    } else {
        // This input takes no armed transition, so no round starts with this seed.
        [0; 32]
    };
    run.coordinator
        .apply(signer_key, input, clock.unix_timestamp, &seed)
        .map_err(refused)?;
    if !armed_before && run.coordinator.transition_armed == 1 {
        run.armed_slot = clock.slot;
    }
    // A member that withdrew gets its deposit back; one dropped by this input loses it.
    let refund = match input {
        Input::Withdraw => {
            let slot = run
                .coordinator
                .member_index(&signer_key)
                .ok_or(ProgramError::InvalidAccountData)?;
            std::mem::take(&mut run.deposits[slot])
        }
        _ => 0,
    };
    forfeit_dropped_deposits(&mut run)?;
    match (input, signer_info, system) {
        (Input::Join { .. }, Some(client), Some(system)) => {
            let slot = run
                .coordinator
                .member_index(&signer_key)
                .ok_or(ProgramError::InvalidAccountData)?;
            let due = run.join_deposit;
            if due == 0 || run.deposits[slot] != 0 {
                return Ok(());
            }
            run.deposits[slot] = due;
            // The system program moves the client's lamports; the run account's data must not
            // be borrowed while it runs.
            drop(run);
            writable(client)?;
            invoke(
                &solana_system_interface::instruction::transfer(client.key, run_account.key, due),
                &[client.clone(), run_account.clone(), system.clone()],
            )
        }
        (Input::Withdraw, Some(member), _) if refund > 0 => {
            writable(member)?;
            move_lamports(run_account, member, refund)
        }
        _ => Ok(()),
    }
}

/// A dropped member's deposit is lost: it moves to the run's forfeits (the authority's when
/// the run closes). A member that withdrew had its deposit back at once, so only the dropped
/// hold one without being a member.
fn forfeit_dropped_deposits(run: &mut RunAccount) -> ProgramResult {
    for slot in 0..run.deposits.len() {
        let status = run.coordinator.members[slot].status();
        if run.deposits[slot] != 0
            && !matches!(status, MemberStatus::Pending | MemberStatus::Active)
        {
            let lost = std::mem::take(&mut run.deposits[slot]);
            run.forfeited = run
                .forfeited
                .checked_add(lost)
                .ok_or(ProgramError::ArithmeticOverflow)?;
        }
    }
    Ok(())
}

/// A gated run admits a client only with its grant: this run's (made by its join authority, so
/// a run re-created at the same address under another one does not inherit it), this
/// client's, not revoked.
fn check_grant(
    program_id: &Pubkey,
    run: &RunAccount,
    run_account: &AccountInfo,
    client: &AccountInfo,
    grant: Option<&AccountInfo>,
) -> ProgramResult {
    let grant = grant.ok_or_else(|| denied(AccessError::JoinNotGranted))?;
    if grant.owner != program_id || grant.data_is_empty() {
        // Never granted, or revoked (closed).
        return Err(denied(AccessError::JoinNotGranted));
    }
    let record = load_mut::<JoinGrant>(grant, program_id)?;
    if record.run_account != run_account.key.to_bytes()
        || record.client != client.key.to_bytes()
        || record.join_authority != run.join_authority
    {
        return Err(denied(AccessError::JoinNotGranted));
    }
    Ok(())
}

fn now(clock: &AccountInfo) -> Result<i64, ProgramError> {
    Ok(sysvar::<Clock>(clock)?.unix_timestamp)
}

/// The seed of a round: the run account's address and the hash of the slot in which its start
/// was armed. That hash did not exist while the arming transaction ran (a slot's hash is made
/// when the slot ends), so neither the member whose input armed it nor the sender of the tick
/// that takes it can choose among seeds. The leader of the arming slot can: it builds the block
/// whose hash it is (docs/coordinator.md, threat model).
fn round_seed(run_account: &Pubkey, armed_slot_hash: &[u8; 32]) -> [u8; 32] {
    hashv(&[run_account.as_ref(), armed_slot_hash]).to_bytes()
}

fn slot_hashes_sysvar<'a, 'b>(
    info: Option<&'a AccountInfo<'b>>,
) -> Result<&'a AccountInfo<'b>, ProgramError> {
    let info = info.ok_or(ProgramError::NotEnoughAccountKeys)?;
    if info.key != &solana_sdk_ids::sysvar::slot_hashes::ID {
        return Err(denied(AccessError::WrongSysvar));
    }
    Ok(info)
}

/// The hash of `slot` from the SlotHashes sysvar (its last 512 slots), if it is there.
fn armed_slot_hash(slot_hashes: &AccountInfo, slot: u64) -> Result<Option<[u8; 32]>, ProgramError> {
    let data = slot_hashes.try_borrow_data()?;
    // Serialized as a u64 count, then (u64 slot, 32-byte hash) pairs, newest first.
    let count = data.get(..8).map_or(0, |count| {
        u64::from_le_bytes(count.try_into().expect("8 bytes"))
    });
    let entries = data.get(8..).unwrap_or_default().chunks_exact(40);
    Ok(entries
        .take(count as usize)
        .find(|entry| entry[..8] == slot.to_le_bytes())
        .map(|entry| entry[8..].try_into().expect("32 bytes")))
}

fn init_run(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    run_id: [u8; 32],
    join_authority: Option<Pubkey>,
    config: Config,
    join_deposit: u64,
) -> ProgramResult {
    let [authority, instance, run_account, system, clock, rent, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(authority)?;
    writable(authority)?;
    writable(instance)?;
    // The run account signs so that nobody else can initialize an account the caller created.
    signer(run_account)?;
    writable(run_account)?;
    system_program(system)?;
    let (instance_key, bump) =
        Pubkey::find_program_address(&[RUN_SEED, authority.key.as_ref(), &run_id], program_id);
    if instance.key != &instance_key {
        return Err(ProgramError::InvalidSeeds);
    }
    if instance.owner != &solana_system_interface::program::ID || !instance.data_is_empty() {
        return Err(ProgramError::AccountAlreadyInitialized);
    }
    let rent = sysvar::<Rent>(rent)?;
    if !rent.is_exempt(run_account.lamports(), run_account.data_len()) {
        return Err(ProgramError::AccountNotRentExempt);
    }
    {
        let mut run = load_uninitialized::<RunAccount>(run_account, program_id)?;
        run.coordinator
            .init(run_id, config, now(clock)?)
            .map_err(refused)?;
        run.tag = RunAccount::TAG;
        run.authority = authority.key.to_bytes();
        run.join_authority = join_authority.unwrap_or_default().to_bytes();
        run.instance = instance_key.to_bytes();
        run.join_deposit = join_deposit;
    }
    create_pda(
        authority,
        instance,
        system,
        &rent,
        RunInstance::LEN,
        program_id,
        &[RUN_SEED, authority.key.as_ref(), &run_id, &[bump]],
    )?;
    let mut record = load_uninitialized::<RunInstance>(instance, program_id)?;
    record.tag = RunInstance::TAG;
    record.run_id = run_id;
    record.authority = authority.key.to_bytes();
    record.run_account = run_account.key.to_bytes();
    record.bump = bump;
    Ok(())
}

/// The join authority and the grant PDA of `client`, checked for grant and revoke.
fn check_join_authority(
    program_id: &Pubkey,
    join_authority: &AccountInfo,
    run_account: &AccountInfo,
    grant: &AccountInfo,
    client: &Pubkey,
) -> Result<u8, ProgramError> {
    signer(join_authority)?;
    writable(join_authority)?;
    writable(grant)?;
    let run = load_mut::<RunAccount>(run_account, program_id)?;
    if !run.is_gated() || run.join_authority != join_authority.key.to_bytes() {
        return Err(denied(AccessError::NotJoinAuthority));
    }
    grant_bump(program_id, run_account, grant, client)
}

/// The canonical bump of `client`'s grant for the run at `run_account`, checking that `grant`
/// is that PDA.
fn grant_bump(
    program_id: &Pubkey,
    run_account: &AccountInfo,
    grant: &AccountInfo,
    client: &Pubkey,
) -> Result<u8, ProgramError> {
    let (grant_key, bump) = Pubkey::find_program_address(
        &[JOIN_GRANT_SEED, run_account.key.as_ref(), client.as_ref()],
        program_id,
    );
    if grant.key != &grant_key {
        return Err(ProgramError::InvalidSeeds);
    }
    Ok(bump)
}

fn grant_join(program_id: &Pubkey, accounts: &[AccountInfo], client: &Pubkey) -> ProgramResult {
    let [join_authority, run_account, grant, system, rent, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    system_program(system)?;
    let rent = sysvar::<Rent>(rent)?;
    let bump = check_join_authority(program_id, join_authority, run_account, grant, client)?;
    if grant.owner != &solana_system_interface::program::ID || !grant.data_is_empty() {
        return Err(ProgramError::AccountAlreadyInitialized);
    }
    create_pda(
        join_authority,
        grant,
        system,
        &rent,
        JoinGrant::LEN,
        program_id,
        &[
            JOIN_GRANT_SEED,
            run_account.key.as_ref(),
            client.as_ref(),
            &[bump],
        ],
    )?;
    let mut record = load_uninitialized::<JoinGrant>(grant, program_id)?;
    record.tag = JoinGrant::TAG;
    record.run_account = run_account.key.to_bytes();
    record.client = client.to_bytes();
    record.join_authority = join_authority.key.to_bytes();
    record.bump = bump;
    Ok(())
}

/// Closes a grant, its rent to the join authority. While the run lives, its join authority
/// revokes; once the run account is closed, the join authority recorded in the grant may, so
/// that no grant's rent is locked forever by a closed run.
fn revoke_join(program_id: &Pubkey, accounts: &[AccountInfo], client: &Pubkey) -> ProgramResult {
    let [join_authority, run_account, grant, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    let run_closed = run_account.owner != program_id && run_account.data_is_empty();
    if run_closed {
        signer(join_authority)?;
        writable(join_authority)?;
        writable(grant)?;
        grant_bump(program_id, run_account, grant, client)?;
        let record = load_mut::<JoinGrant>(grant, program_id)?;
        if record.join_authority != join_authority.key.to_bytes() {
            return Err(denied(AccessError::NotJoinAuthority));
        }
    } else {
        check_join_authority(program_id, join_authority, run_account, grant, client)?;
        // Checks the grant's owner and type before closing it.
        drop(load_mut::<JoinGrant>(grant, program_id)?);
    }
    close_account(grant, join_authority)
}

/// Whether `pool`, if given, is the treasurer's pool of the run at `run_account` and owes its
/// members nothing. A pool is the treasurer's when that program owns it (nobody else can write
/// an account it owns), and this run's when it names this run account.
fn pool_paid_everything(
    run: &RunAccount,
    run_account: &AccountInfo,
    pool: Option<&AccountInfo>,
) -> Result<bool, ProgramError> {
    // No pool given, or none created yet (its address holds nothing).
    let Some(pool) = pool.filter(|pool| !pool.data_is_empty()) else {
        return Ok(false);
    };
    let treasurer = Pubkey::new_from_array(TREASURER_PROGRAM_ID);
    let pool = crate::account::load::<Pool>(pool, &treasurer)?;
    if pool.run_account != run_account.key.to_bytes() {
        return Err(denied(AccessError::RunMismatch));
    }
    // An owed amount too large for a token amount is owed all the same.
    Ok(pool.total_owed(&run.coordinator) == Ok(0))
}

fn close_run(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let [authority, instance, run_account, rest @ ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(authority)?;
    writable(authority)?;
    writable(instance)?;
    writable(run_account)?;
    {
        let run = load_mut::<RunAccount>(run_account, program_id)?;
        if run.authority != authority.key.to_bytes() {
            return Err(denied(AccessError::NotRunAuthority));
        }
        if run.instance != instance.key.to_bytes() {
            return Err(denied(AccessError::RunMismatch));
        }
        if !matches!(
            run.coordinator.run_state(),
            RunState::Paused | RunState::Finished
        ) {
            return Err(denied(AccessError::RunNotClosable));
        }
        // The run account is the ledger of what members earned: it closes only when nobody
        // holds points, or when the run's reward pool has paid everything they earned.
        if run
            .coordinator
            .members
            .iter()
            .any(|member| member.points > 0)
            && !pool_paid_everything(&run, run_account, rest.first())?
        {
            return Err(denied(AccessError::PointsOwed));
        }
        if run.deposits_held() > 0 {
            return Err(denied(AccessError::DepositsHeld));
        }
        let record = load_mut::<RunInstance>(instance, program_id)?;
        if record.run_account != run_account.key.to_bytes() {
            return Err(denied(AccessError::RunMismatch));
        }
    }
    close_account(run_account, authority)?;
    close_account(instance, authority)
}
