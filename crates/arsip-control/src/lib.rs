//! arsip's control plane: the configuration file ([`config`]), schedules ([`schedule`]), the
//! resolved plan `arsip config check` prints ([`plan`]) and the daemon's state journal
//! ([`journal`]). The daemon (`arsip serve`) that
//! runs the plan comes next (docs/design/CONTROL.md). This crate depends on `arsip-ops`
//! only: every job it runs is an operation there.

pub mod config;
pub mod journal;
pub mod plan;
pub mod schedule;

pub use config::{load, Config, ConfigError, ConfigErrors};
pub use plan::Plan;
pub use schedule::Schedule;
