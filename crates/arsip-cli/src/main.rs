//! The `arsip` binary: parse, open, call one operation, print. Errors carry a class
//! ([`arsip_ops::ErrorClass`]); one table ([`exit_code`]) maps classes to the stable exit
//! codes of README §Exit codes, and each error ends with a hint.

mod cli;
mod cmd;
mod ctx;
mod progress;
mod secrets;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use arsip_ops::{Classify, ErrorClass};
use clap::Parser;

/// Stable exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NO_REPOSITORY: u8 = 3;
    pub const WRONG_KEY: u8 = 4;
    pub const STORAGE: u8 = 5;
    pub const DAMAGED: u8 = 6;
    pub const NOT_FOUND: u8 = 7;
    pub const REFUSED: u8 = 8;
    /// A files backup committed its snapshot, but skipped or flagged entries (warnings
    /// name them; the snapshot's facts say `partial: true`).
    pub const PARTIAL: u8 = 9;
    /// `verify` found anomalies (size, duration, row counts, WAL lag) but nothing failed.
    pub const VERIFY_WARNINGS: u8 = 10;
    /// `verify` failed: a stale source, damage, or a failed restore test.
    pub const VERIFY_FAILED: u8 = 11;
    /// Every code above, for the test that README's table lists exactly these.
    #[cfg(test)]
    pub const ALL: &[u8] = &[
        OK,
        FAILURE,
        USAGE,
        NO_REPOSITORY,
        WRONG_KEY,
        STORAGE,
        DAMAGED,
        NOT_FOUND,
        REFUSED,
        PARTIAL,
        VERIFY_WARNINGS,
        VERIFY_FAILED,
    ];
}

/// The one table from error classes to exit codes, and the pointer to this front end's
/// flags or commands that the libraries' hints leave out.
fn exit_code(class: ErrorClass) -> (u8, Option<&'static str>) {
    match class {
        ErrorClass::Usage => (exit::USAGE, None),
        ErrorClass::NotARepository => (
            exit::NO_REPOSITORY,
            Some("--repo / ARSIP_REPO; `arsip init` creates one"),
        ),
        ErrorClass::WrongKey => (
            exit::WRONG_KEY,
            Some("ARSIP_PASSWORD_FILE / ARSIP_PASSWORD / --key-file; `arsip key list` shows the slots"),
        ),
        ErrorClass::Storage => (exit::STORAGE, None),
        ErrorClass::Damaged => (exit::DAMAGED, Some("`arsip check --read-data` names them")),
        ErrorClass::NotFound => (exit::NOT_FOUND, Some("`arsip snapshots`")),
        ErrorClass::Refused => (exit::REFUSED, None),
        ErrorClass::Failed | ErrorClass::Internal => (exit::FAILURE, None),
    }
}

/// Invalid input found by the CLI itself (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `usage!("…")`: an [`anyhow::Error`] that exits with the usage code.
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => { anyhow::Error::new($crate::UsageError(format!($($t)*))) };
}

/// Set once stdout is closed (`arsip check | head -1`): later output is dropped quietly and
/// the command still ends with its own exit code.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn write_stdout(s: &str) -> anyhow::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        // A full or failing output (`> /dev/full`) is a local I/O error (exit 5).
        Err(e) => Err(arsip_ops::repo::RepoError::Io(std::io::Error::new(
            e.kind(),
            format!("writing to standard output: {e}"),
        ))
        .into()),
        Ok(()) => Ok(()),
    }
}

/// Print one line (or several) on stdout.
pub fn print_line(s: &str) -> anyhow::Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    write_stdout(&format!("{}\n", s.trim_end_matches('\n')))
}

/// Print a value as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    write_stdout(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARSIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let (code, hint) = classify(&e);
            eprintln!("arsip: error: {}", message(&e));
            if let Some(h) = hint {
                eprintln!("HINT: {h}");
            }
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, each said once: library errors often include their source's
/// text in their own message, which `{:#}` would repeat ("X: X").
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// The class of the first typed error in the chain, and the hint to print.
pub fn class_of(e: &anyhow::Error) -> Option<(ErrorClass, Option<String>)> {
    for cause in e.chain() {
        let c: Option<&dyn Classify> = if let Some(x) = cause.downcast_ref::<arsip_ops::Error>() {
            Some(x)
        } else if let Some(x) = cause.downcast_ref::<arsip_ops::repo::RepoError>() {
            Some(x)
        } else if let Some(x) = cause.downcast_ref::<arsip_ops::pg::PgError>() {
            Some(x)
        } else if let Some(x) = cause.downcast_ref::<arsip_ops::storage::StorageError>() {
            Some(x)
        } else if cause.downcast_ref::<UsageError>().is_some() {
            return Some((ErrorClass::Usage, None));
        } else {
            None
        };
        if let Some(c) = c {
            return Some((c.class(), c.hint()));
        }
    }
    None
}

fn classify(e: &anyhow::Error) -> (u8, Option<String>) {
    let Some((class, hint)) = class_of(e) else {
        return (exit::FAILURE, None);
    };
    let (code, pointer) = exit_code(class);
    let hint = match (hint, pointer) {
        (Some(h), Some(p)) => Some(format!("{h} ({p})")),
        (h, p) => h.or(p.map(str::to_string)),
    };
    (code, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(arsip_ops::repo::RepoError::Io(io)).context("writing pack");
        assert_eq!(message(&e), "writing pack: I/O error: disk full");
        let e = usage!("bad tag");
        assert_eq!(exit_code(class_of(&e).unwrap().0).0, exit::USAGE);
    }

    /// README §Exit codes lists exactly the codes the binary uses, and every error class
    /// maps to one of them.
    #[test]
    fn readme_exit_code_table_is_complete() {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .expect("README has an exit-code section");
        let documented: Vec<u8> = table
            .lines()
            .skip_while(|l| !l.starts_with("| code"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').nth(1).unwrap().trim().parse().unwrap())
            .collect();
        assert_eq!(
            documented,
            exit::ALL,
            "README's exit-code table vs exit::ALL"
        );
        use ErrorClass::*;
        for class in [
            Usage,
            NotARepository,
            WrongKey,
            Storage,
            Damaged,
            NotFound,
            Refused,
            Failed,
            Internal,
        ] {
            assert!(exit::ALL.contains(&exit_code(class).0), "{class:?}");
        }
    }
}
