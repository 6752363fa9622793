//! The `arsip` binary: parse, open, call one operation, print. Errors end with a hint and
//! map to stable exit codes (README §Exit codes).

mod cli;
mod commands;
mod pg;
mod progress;
mod secrets;

use std::process::ExitCode;

use arsip_repo::RepoError;
use arsip_storage::ErrorKind;
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
    match rt.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let (code, hint) = classify(&e);
            eprintln!("arsip: error: {e:#}");
            if let Some(h) = hint {
                eprintln!("HINT: {h}");
            }
            ExitCode::from(code)
        }
    }
}

fn classify(e: &anyhow::Error) -> (u8, Option<String>) {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            let code = match r {
                RepoError::NotARepository(_) => exit::NO_REPOSITORY,
                RepoError::WrongKey => exit::WRONG_KEY,
                RepoError::Storage(s) if s.kind == ErrorKind::NotFound => exit::NO_REPOSITORY,
                RepoError::Storage(_) => exit::STORAGE,
                RepoError::Auth(_) | RepoError::Corrupt { .. } => exit::DAMAGED,
                RepoError::NotFound(_) => exit::NOT_FOUND,
                RepoError::NeedsFullKey(_)
                | RepoError::NoConditionalCreate(_)
                | RepoError::AlreadyInitialized(_) => exit::REFUSED,
                RepoError::Invalid(_) => exit::USAGE,
                _ => exit::FAILURE,
            };
            return (code, r.hint());
        }
        if let Some(s) = cause.downcast_ref::<arsip_storage::StorageError>() {
            let code = if s.kind == ErrorKind::NotFound {
                exit::NO_REPOSITORY
            } else {
                exit::STORAGE
            };
            return (
                code,
                RepoError::Storage(arsip_storage::StorageError::new(s.kind, None, "")).hint(),
            );
        }
    }
    (exit::FAILURE, None)
}
