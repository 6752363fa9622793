//! arsip's control plane: the configuration file ([`config`]), schedules ([`schedule`]), the
//! resolved plan `arsip config check` prints ([`plan`]), the daemon's state journal
//! ([`journal`]) and what is due when ([`scheduler`]: pure functions of the journal and the
//! time), and the daemon (`arsip serve`) that runs the plan ([`daemon`], docs/design/CONTROL.md).
//! This crate depends on `arsip-ops` only: every job it runs is an operation there.

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

/// `n` bytes from the operating system's random source, as hex (ids, tokens, session
/// cookies); kept in memory that is wiped when dropped.
pub(crate) fn random_hex(n: usize) -> Result<zeroize::Zeroizing<String>, String> {
    use rand::RngCore;
    let mut raw = zeroize::Zeroizing::new(vec![0u8; n]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut raw)
        .map_err(|e| format!("no randomness from the operating system: {e}"))?;
    Ok(zeroize::Zeroizing::new(
        raw.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}
pub use plan::Plan;
pub use schedule::Schedule;
