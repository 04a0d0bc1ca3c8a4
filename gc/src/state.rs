//! GC's persistent state, as GC uses it: packs condemned and waiting out their grace
//! period, and the outcome of past runs (for `stats`). The records themselves live in the
//! core's key space ([`dedupfs_core::reclaim`]).

use crate::Result;
use dedupfs_core::reclaim::{self, GcStatus};
use dedupfs_core::store::Store;

pub use dedupfs_core::reclaim::Condemned;

/// Every condemned pack.
pub fn condemned(store: &Store) -> Result<Vec<Condemned>> {
    Ok(reclaim::condemned(store)?)
}

/// Forgets condemned packs (their files are gone, or they must be kept after all).
pub fn release(store: &Store, packs: &[u32]) -> Result<()> {
    Ok(reclaim::release(store, packs)?)
}

pub fn status(store: &Store) -> Result<GcStatus> {
    Ok(reclaim::status(store)?)
}

/// What one run did, for the record.
pub struct RunRecord {
    pub reclaimed: u64,
    pub ms: u64,
    pub background: bool,
    pub error: Option<String>,
    /// Pack bytes held only by history, per container (from the run's plan), if known.
    pub history_held: Option<(u64, Vec<(String, u64)>)>,
}

/// Records a run's outcome. A failure to record is returned, not dropped: the caller
/// reports it (the run itself already happened).
pub fn record_run(store: &Store, run: RunRecord) -> Result<()> {
    let mut s = status(store)?;
    s.runs += 1;
    s.last_run = now();
    s.last_reclaimed_bytes = run.reclaimed;
    s.last_duration_ms = run.ms;
    s.last_background = run.background;
    s.last_error = run.error;
    s.total_reclaimed_bytes += run.reclaimed;
    if let Some((total, per)) = run.history_held {
        s.history_held_bytes = total;
        s.history_held = per;
    }
    Ok(reclaim::put_status(store, &s)?)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
