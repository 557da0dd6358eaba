//! The `demeter` subcommands, as library functions so tests and benchmarks call what users run.

mod cluster;
mod coordinator;
mod data;
mod demo_args;
mod local;
mod model;
mod payload;
mod rewards;
mod run;
mod run_view;
mod schedule_args;
mod simulate;
mod table;
mod train;

pub use cluster::{ClusterArgs, Output, Report, RunName};
pub use coordinator::{CoordinatorCommand, ServeArgs, coordinator};
pub use data::{DataArgs, prepare_data};
pub use demo_args::{DemoArgs, ValueEncodingArg};
pub use local::{LocalArgs, local, phase_table, read_gauge};
pub use model::{ModelHashArgs, ModelInitArgs, hash_model, init_model};
pub use payload::{PayloadCommand, payload};
pub use rewards::{RewardsArgs, RewardsCommand, rewards};
pub use run::{RunArgs, RunCommand, manage_run};
pub use run_view::{AttestedView, MemberView, PoolView, RunView};
pub use schedule_args::ScheduleArgs;
pub use simulate::{
    SimulateArgs, SimulationSummary, run_simulation, scoring_cost, screening_cost, simulate,
    spot_check_cost,
};
pub use table::Table;
pub use train::{ClientSummary, RunModelArgs, TrainArgs, train};
