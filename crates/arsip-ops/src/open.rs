//! Opening a repository: the storage stack (backend, then the test-only fault wrapper, then
//! the request meter when asked for, then retries, then the append-only guard for backup
//! paths) and the repository on top of it.

use std::sync::Arc;

use arsip_repo::clock::Clock;
use arsip_repo::{FullRepo, InitOptions, LocalSettings, OpenWith, Opened, Repository};
use arsip_storage::backend::{self, Location};
use arsip_storage::fault::{FaultPlan, Faulty};
use arsip_storage::metered::{Meter, Metered};
use arsip_storage::retry::{Retry, RetryPolicy};
use arsip_storage::DynStore;

use crate::{Error, Result};

/// How an operation may touch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Backup paths: a wrapper refuses every delete (they are create-only by contract).
    AppendOnly,
    /// Reads, maintenance and key management.
    Full,
}

/// Where the repository is and how to reach it, resolved by a front end.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// A directory, `s3://bucket/prefix`, `gs://…` or `az://…`.
    pub location: String,
    /// How to reach it: S3 endpoint, region and credentials (per location, never read from
    /// the environment below the front end).
    pub backend: arsip_storage::StoreSettings,
    /// Faults to inject (test builds only; front ends pass `None` otherwise).
    pub faults: Option<FaultPlan>,
    /// Count the requests sent (below retries: every attempt counts) into this meter.
    pub meter: Option<Arc<Meter>>,
}

/// Open the store stack at `settings`; `create_dir` makes a missing local directory (init).
pub fn store(settings: &StoreSettings, create_dir: bool, access: Access) -> Result<DynStore> {
    if settings.location.is_empty() {
        return Err(Error::usage("the repository location is empty"));
    }
    // A location that does not parse is the user's input, not a storage failure.
    let loc = Location::parse(&settings.location).map_err(|e| Error::usage(e.message))?;
    let mut store: DynStore = backend::open_with(&loc, &settings.backend, create_dir)?;
    if let Some(plan) = &settings.faults {
        store = Arc::new(Faulty::new(store, plan.clone()));
    }
    if let Some(meter) = &settings.meter {
        store = Arc::new(Metered::new(store, meter.clone()));
    }
    store = Arc::new(Retry::new(store, RetryPolicy::default()));
    if access == Access::AppendOnly {
        store = Arc::new(arsip_storage::append_only::AppendOnly::new(store));
    }
    Ok(store)
}

/// What a key file or an agent file (its bytes; `origin` names it in errors) opens the
/// repository with.
pub fn credentials(raw: &[u8], origin: &str) -> Result<OpenWith> {
    let not_a_key = |why: &str| {
        Error::usage(format!(
            "{origin} is not an arsip key file or agent file ({why})"
        ))
    };
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|_| not_a_key("not JSON"))?;
    if v.get("arsip_agent_file").is_some() {
        Ok(OpenWith::Agent(
            serde_json::from_value(v).map_err(|_| not_a_key("a malformed agent file"))?,
        ))
    } else if v.get("arsip_key_file").is_some() {
        Ok(OpenWith::KeyFile(
            serde_json::from_value(v).map_err(|_| not_a_key("a malformed key file"))?,
        ))
    } else {
        Err(not_a_key("no arsip_key_file or arsip_agent_file member"))
    }
}

/// Open the repository at `settings` with `with`, using `local` for caches and memory.
pub async fn repository(
    settings: &StoreSettings,
    with: OpenWith,
    access: Access,
    local: LocalSettings,
    clock: Arc<dyn Clock>,
) -> Result<Opened> {
    let store = store(settings, false, access)?;
    let repo = Repository::open(store, with, clock).await?;
    Ok(repo.with_local(local))
}

/// What `init` created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Initialized {
    pub repo_id: String,
    pub location: String,
}

/// Create a repository at `settings` protected by `password`; its initial key slot records
/// `local.host`.
pub async fn init(
    settings: &StoreSettings,
    password: &[u8],
    opts: &InitOptions,
    local: LocalSettings,
    clock: Arc<dyn Clock>,
) -> Result<(FullRepo, Initialized)> {
    let store = store(settings, true, Access::Full)?;
    let opts = InitOptions {
        host: local.host.clone(),
        ..opts.clone()
    };
    let (repo, _) = Repository::init(store, Some(password), &opts, clock).await?;
    let repo = repo.with_local(local);
    let out = Initialized {
        repo_id: repo.repo_id().to_string(),
        location: repo.location(),
    };
    Ok((repo, out))
}
