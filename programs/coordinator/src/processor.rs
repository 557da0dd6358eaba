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
use solana_program::program::{invoke, invoke_signed};
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_program::rent::Rent;
use solana_sysvar::SysvarSerialize;

use crate::account::{
    JOIN_GRANT_SEED, JoinGrant, RUN_SEED, RunAccount, RunInstance, Tagged, load_mut,
    load_uninitialized,
};
use crate::config::Config;
use crate::error::AccessError;
use crate::instruction::CoordinatorInstruction;
use crate::state::{Endpoint, RunState, WitnessReport};

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
        } => init_run(program_id, accounts, run_id, join_authority, config),
        CoordinatorInstruction::UpdateConfig { config } => {
            with_authority(program_id, accounts, |run, now| {
                run.coordinator.update_config(config, now)
            })
        }
        CoordinatorInstruction::Pause => {
            with_authority(program_id, accounts, |run, now| run.coordinator.pause(now))
        }
        CoordinatorInstruction::Resume => {
            with_authority(program_id, accounts, |run, now| run.coordinator.resume(now))
        }
        CoordinatorInstruction::GrantJoin { client } => grant_join(program_id, accounts, &client),
        CoordinatorInstruction::RevokeJoin { client } => revoke_join(program_id, accounts, &client),
        CoordinatorInstruction::Join { endpoint } => join(program_id, accounts, endpoint),
        CoordinatorInstruction::Withdraw => with_member(program_id, accounts, |run, id, now| {
            run.coordinator.withdraw(id, now)
        }),
        CoordinatorInstruction::Tick => tick(program_id, accounts),
        CoordinatorInstruction::WarmupWitness => warmup_witness(program_id, accounts),
        CoordinatorInstruction::Witness {
            step,
            position,
            report,
        } => witness(program_id, accounts, step, position, report),
        CoordinatorInstruction::HealthCheck { step, target } => {
            with_member(program_id, accounts, |run, id, now| {
                run.coordinator
                    .health_check(id, step, target.to_bytes(), now)
            })
        }
        CoordinatorInstruction::CloseRun => close_run(program_id, accounts),
    }
}

fn signer(info: &AccountInfo) -> ProgramResult {
    if info.is_signer {
        Ok(())
    } else {
        Err(ProgramError::MissingRequiredSignature)
    }
}

fn writable(info: &AccountInfo) -> ProgramResult {
    if info.is_writable {
        Ok(())
    } else {
        Err(ProgramError::Immutable)
    }
}

fn system_program(info: &AccountInfo) -> ProgramResult {
    if info.key == &solana_system_interface::program::ID {
        Ok(())
    } else {
        Err(ProgramError::IncorrectProgramId)
    }
}

/// Reads a sysvar from its account. Sysvars come as accounts rather than through `get()`
/// syscalls because the native test harness serves only the former.
fn sysvar<T: SysvarSerialize>(info: &AccountInfo) -> Result<T, ProgramError> {
    T::from_account_info(info).map_err(|_| AccessError::WrongSysvar.into())
}

fn now(clock: &AccountInfo) -> Result<i64, ProgramError> {
    Ok(sysvar::<Clock>(clock)?.unix_timestamp)
}

/// The seed of a round that may start now: the clock and the newest slot hash, hashed with the
/// run's address. A slot leader could bias it by withholding a block; it decides batch order
/// and witness election, not rewards, and witnesses still need a quorum.
fn round_seed(
    run_account: &Pubkey,
    clock: &Clock,
    slot_hashes: &AccountInfo,
) -> Result<[u8; 32], ProgramError> {
    if slot_hashes.key != &solana_sdk_ids::sysvar::slot_hashes::ID {
        return Err(AccessError::WrongSysvar.into());
    }
    let data = slot_hashes.try_borrow_data()?;
    // Serialized as a u64 count, then (u64 slot, 32-byte hash) pairs, newest first.
    let newest = data.get(16..48).unwrap_or_default();
    Ok(hashv(&[
        run_account.as_ref(),
        &clock.slot.to_le_bytes(),
        &clock.unix_timestamp.to_le_bytes(),
        newest,
    ])
    .to_bytes())
}

/// Creates a program-owned PDA of `space` bytes paid by `payer`. An address someone has already
/// sent lamports to cannot be created with `create_account`, so it is topped up, allocated and
/// assigned instead: nobody can block a run name or a grant by funding its address first.
fn create_pda<'a>(
    payer: &AccountInfo<'a>,
    account: &AccountInfo<'a>,
    system: &AccountInfo<'a>,
    rent: &Rent,
    space: usize,
    program_id: &Pubkey,
    seeds: &[&[u8]],
) -> ProgramResult {
    use solana_system_interface::instruction as system_instruction;
    let required = rent.minimum_balance(space);
    let infos = [payer.clone(), account.clone(), system.clone()];
    if account.lamports() == 0 {
        return invoke_signed(
            &system_instruction::create_account(
                payer.key,
                account.key,
                required,
                space as u64,
                program_id,
            ),
            &infos,
            &[seeds],
        );
    }
    let top_up = required.saturating_sub(account.lamports());
    if top_up > 0 {
        invoke(
            &system_instruction::transfer(payer.key, account.key, top_up),
            &infos,
        )?;
    }
    invoke_signed(
        &system_instruction::allocate(account.key, space as u64),
        &infos,
        &[seeds],
    )?;
    invoke_signed(
        &system_instruction::assign(account.key, program_id),
        &infos,
        &[seeds],
    )
}

/// Moves all of `account`'s lamports to `receiver` and hands the emptied account back to the
/// system program.
fn close_account(account: &AccountInfo, receiver: &AccountInfo) -> ProgramResult {
    let total = receiver
        .lamports()
        .checked_add(account.lamports())
        .ok_or(ProgramError::ArithmeticOverflow)?;
    **receiver.try_borrow_mut_lamports()? = total;
    **account.try_borrow_mut_lamports()? = 0;
    account.resize(0)?;
    account.assign(&solana_system_interface::program::ID);
    Ok(())
}

fn init_run(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    run_id: [u8; 32],
    join_authority: Option<Pubkey>,
    config: Config,
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
    let (instance_key, bump) = Pubkey::find_program_address(&[RUN_SEED, &run_id], program_id);
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
        run.coordinator.init(run_id, config, now(clock)?)?;
        run.tag = RunAccount::TAG;
        run.authority = authority.key.to_bytes();
        run.join_authority = join_authority.unwrap_or_default().to_bytes();
        run.instance = instance_key.to_bytes();
    }
    create_pda(
        authority,
        instance,
        system,
        &rent,
        RunInstance::LEN,
        program_id,
        &[RUN_SEED, &run_id, &[bump]],
    )?;
    let mut record = load_uninitialized::<RunInstance>(instance, program_id)?;
    record.tag = RunInstance::TAG;
    record.run_id = run_id;
    record.authority = authority.key.to_bytes();
    record.run_account = run_account.key.to_bytes();
    record.bump = bump;
    Ok(())
}

/// An instruction of the run authority: `[s] authority, [w] run account, [] clock`.
fn with_authority(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    apply: impl FnOnce(&mut RunAccount, i64) -> Result<(), crate::CoordinatorError>,
) -> ProgramResult {
    let [authority, run_account, clock, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(authority)?;
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    if run.authority != authority.key.to_bytes() {
        return Err(AccessError::NotRunAuthority.into());
    }
    Ok(apply(&mut run, now(clock)?)?)
}

/// An instruction of a client about itself: `[s] client, [w] run account, [] clock`.
fn with_member(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    apply: impl FnOnce(&mut RunAccount, [u8; 32], i64) -> Result<(), crate::CoordinatorError>,
) -> ProgramResult {
    let [client, run_account, clock, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(client)?;
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    Ok(apply(&mut run, client.key.to_bytes(), now(clock)?)?)
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
        return Err(AccessError::NotJoinAuthority.into());
    }
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
    record.bump = bump;
    Ok(())
}

fn revoke_join(program_id: &Pubkey, accounts: &[AccountInfo], client: &Pubkey) -> ProgramResult {
    let [join_authority, run_account, grant, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    check_join_authority(program_id, join_authority, run_account, grant, client)?;
    // Checks the grant's owner and type before closing it.
    drop(load_mut::<JoinGrant>(grant, program_id)?);
    close_account(grant, join_authority)
}

fn join(program_id: &Pubkey, accounts: &[AccountInfo], endpoint: Endpoint) -> ProgramResult {
    let [client, run_account, clock, rest @ ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(client)?;
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    if run.is_gated() {
        let grant = rest.first().ok_or(AccessError::JoinNotGranted)?;
        if grant.owner != program_id || grant.data_is_empty() {
            // Never granted, or revoked (closed).
            return Err(AccessError::JoinNotGranted.into());
        }
        let record = load_mut::<JoinGrant>(grant, program_id)?;
        if record.run_account != run_account.key.to_bytes()
            || record.client != client.key.to_bytes()
        {
            return Err(AccessError::JoinNotGranted.into());
        }
    }
    Ok(run
        .coordinator
        .join(client.key.to_bytes(), endpoint, now(clock)?)?)
}

fn tick(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let [run_account, clock, slot_hashes, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    let clock = sysvar::<Clock>(clock)?;
    let seed = round_seed(run_account.key, &clock, slot_hashes)?;
    run.coordinator.tick(clock.unix_timestamp, &seed)?;
    Ok(())
}

fn warmup_witness(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let [client, run_account, clock, slot_hashes, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(client)?;
    writable(run_account)?;
    let mut run = load_mut::<RunAccount>(run_account, program_id)?;
    let clock = sysvar::<Clock>(clock)?;
    let seed = round_seed(run_account.key, &clock, slot_hashes)?;
    Ok(run
        .coordinator
        .warmup_witness(client.key.to_bytes(), clock.unix_timestamp, &seed)?)
}

fn witness(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    step: u64,
    position: u16,
    report: &WitnessReport,
) -> ProgramResult {
    with_member(program_id, accounts, |run, id, now| {
        run.coordinator.witness(id, step, position, report, now)
    })
}

fn close_run(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let [authority, instance, run_account, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(authority)?;
    writable(authority)?;
    writable(instance)?;
    writable(run_account)?;
    {
        let run = load_mut::<RunAccount>(run_account, program_id)?;
        if run.authority != authority.key.to_bytes() {
            return Err(AccessError::NotRunAuthority.into());
        }
        if run.instance != instance.key.to_bytes() {
            return Err(AccessError::RunMismatch.into());
        }
        if !matches!(
            run.coordinator.run_state(),
            RunState::Paused | RunState::Finished
        ) {
            return Err(AccessError::RunNotClosable.into());
        }
        let record = load_mut::<RunInstance>(instance, program_id)?;
        if record.run_account != run_account.key.to_bytes() {
            return Err(AccessError::RunMismatch.into());
        }
    }
    close_account(run_account, authority)?;
    close_account(instance, authority)
}
