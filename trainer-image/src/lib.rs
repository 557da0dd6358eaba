//! Demeter's trainer: the LLaMA model, the DeMo optimizer and its payload codec, token data, and
//! the in-process simulation of many clients.

pub mod attack;
pub mod central;
pub mod checkpoint;
pub mod commands;
pub mod data;
pub mod demo;
pub mod exchange;
pub mod identity;
pub mod local_run;
pub mod model;
pub mod optim;
pub mod payload;
pub mod replica;
pub mod run_file;
pub mod scoring;
pub mod screening;
pub mod simulate;
pub mod spot_check;
pub mod train;
