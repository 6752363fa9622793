//! arsip's control plane: the configuration file ([`config`]), schedules ([`schedule`]), the
//! resolved plan `arsip config check` prints ([`plan`]), the daemon's state journal
//! ([`journal`]) and what is due when ([`scheduler`]: pure functions of the journal and the
//! time). The daemon (`arsip serve`) that
//! runs the plan comes next (docs/design/CONTROL.md). This crate depends on `arsip-ops`
//! only: every job it runs is an operation there.

pub mod alerts;
pub mod api;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod executor;
pub mod journal;
pub mod metrics;
pub mod plan;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod status;
#[cfg(test)]
mod testutil;

pub use config::{load, Config, ConfigError, ConfigErrors};
pub use plan::Plan;
pub use schedule::Schedule;
