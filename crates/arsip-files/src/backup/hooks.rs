//! Test-only hooks (compiled in `cfg(test)` builds only): callbacks the walk fires at the
//! moments where a concurrent change matters — after it listed a directory, before each read
//! of a file — so tests can delete, grow or break entries at exactly that moment, on a real
//! filesystem, instead of racing a thread against the walk.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A directory (absolute path) was listed; its entries are visited next.
    Listed(&'a [u8]),
    /// A file (absolute path) is about to be read; an error returned is the read's result.
    Read(&'a [u8]),
}

type Hook = Arc<dyn Fn(Event<'_>) -> Option<std::io::Error> + Send + Sync>;

static HOOKS: Mutex<Vec<(u64, Hook)>> = Mutex::new(Vec::new());
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Removes its hook when dropped. Hooks of tests running in parallel all fire; each filters
/// the events by the paths of its own temporary tree.
pub struct Installed(u64);

impl Drop for Installed {
    fn drop(&mut self) {
        HOOKS.lock().unwrap().retain(|(id, _)| *id != self.0);
    }
}

pub fn install(
    f: impl Fn(Event<'_>) -> Option<std::io::Error> + Send + Sync + 'static,
) -> Installed {
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HOOKS.lock().unwrap().push((id, Arc::new(f)));
    Installed(id)
}

pub fn fire(e: Event<'_>) -> Option<std::io::Error> {
    let hooks: Vec<Hook> = HOOKS
        .lock()
        .unwrap()
        .iter()
        .map(|(_, h)| h.clone())
        .collect();
    // Every hook runs (their side effects are the point); the first error wins.
    hooks.into_iter().fold(None, |first, h| first.or(h(e)))
}
