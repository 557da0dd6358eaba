//! The names under which a training client exports its view of the run on `/metrics`: the
//! contract between the trainer, which registers them, and whoever reads a client's progress
//! (the operator's scraper). Defined once here, where both sides already depend; the e2e test
//! `operator_contract` feeds a trainer's real page to the operator's parser.

/// Steps the run has completed (gauge).
pub const STEP: &str = "demeter_step";
/// The run's epoch (gauge).
pub const EPOCH: &str = "demeter_epoch";
/// Training loss of the client's last step (gauge).
pub const LOSS: &str = "demeter_loss";
/// Tokens this client trained on (counter).
pub const TOKENS_TOTAL: &str = "demeter_tokens_total";
/// Members active in the epoch (gauge).
pub const MEMBERS_ACTIVE: &str = "demeter_members_active";
/// Results applied in the last step: those a witness quorum saw (gauge).
pub const RESULTS_APPLIED: &str = "demeter_results_applied";
/// Members ejected from the run by a verdict quorum (gauge).
pub const MEMBERS_EJECTED: &str = "demeter_members_ejected";
/// The step of the model the run's witnesses attested last; 0 for none yet (gauge).
pub const ATTESTED_STEP: &str = "demeter_attested_step";
/// How long the last round took, from its start to the next round's start (gauge).
pub const ROUND_SECONDS: &str = "demeter_round_seconds";
