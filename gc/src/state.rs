//! GC's persistent state: packs condemned and waiting out their grace period, and the
//! outcome of past runs (for `stats`).
//!
//! Invariant: a condemned pack's key is written in the same commit that moved its last
//! indexed chunk away, and removed only after its file is gone, so a crash anywhere leaves
//! either a pack still readable or a key that the next run finishes.

use crate::Result;
use dedupfs_core::codec::Enc;
use dedupfs_core::ids::PackId;
use dedupfs_core::kv::{Batch, Cf, Kv, Txn};
use dedupfs_core::store::Store;
use serde::{Deserialize, Serialize};

const CONDEMNED: &[u8] = b"gc/condemned/";
const STATUS: &[u8] = b"gc/status";

/// A pack whose chunks were all moved away or are dead; deleted once `since + grace` passed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Condemned {
    pub pack: u32,
    /// Unix seconds when it was condemned.
    pub since: i64,
    pub size: u64,
}

/// What GC did last and in all, shown by `stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    pub runs: u64,
    /// Unix seconds of the end of the last run.
    pub last_run: i64,
    pub last_reclaimed_bytes: u64,
    pub last_duration_ms: u64,
    /// Whether the last run was started by the daemon because the store was idle.
    pub last_background: bool,
    pub last_error: Option<String>,
    pub total_reclaimed_bytes: u64,
}

fn condemned_key(p: PackId) -> Vec<u8> {
    Enc::new().bytes(CONDEMNED).u32(p.0).finish()
}

/// Condemns a pack inside a commit.
pub fn condemn(txn: &mut Txn<'_>, c: Condemned) {
    txn.put(
        Cf::Meta,
        condemned_key(PackId(c.pack)),
        serde_json::to_vec(&c).unwrap_or_default(),
    );
}

/// Every condemned pack.
pub fn condemned(kv: &dyn Kv) -> Result<Vec<Condemned>> {
    let mut upper = CONDEMNED.to_vec();
    upper.push(0xff);
    let rows = dedupfs_core::kv::collect_range(kv, Cf::Meta, CONDEMNED.to_vec(), Some(upper))?;
    Ok(rows
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

/// Forgets condemned packs (their files are gone, or they must be kept after all).
pub fn release(kv: &dyn Kv, packs: &[u32]) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    for p in packs {
        b.delete(Cf::Meta, condemned_key(PackId(*p)));
    }
    kv.write(b, true)?;
    Ok(())
}

pub fn status(store: &Store) -> Status {
    store
        .kv()
        .get(Cf::Meta, STATUS)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

pub fn record_run(store: &Store, reclaimed: u64, ms: u64, background: bool, error: Option<String>) {
    let mut s = status(store);
    s.runs += 1;
    s.last_run = now();
    s.last_reclaimed_bytes = reclaimed;
    s.last_duration_ms = ms;
    s.last_background = background;
    s.last_error = error;
    s.total_reclaimed_bytes += reclaimed;
    let mut b = Batch::new();
    b.put(
        Cf::Meta,
        STATUS.to_vec(),
        serde_json::to_vec(&s).unwrap_or_default(),
    );
    if let Err(e) = store.kv().write(b, true) {
        log::warn!("cannot record the GC run: {e}");
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
