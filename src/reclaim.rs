//! GC's persistent records, kept in the core's key space: packs condemned and waiting out
//! their grace period, and the outcome of past runs (for `stats`).
//!
//! Invariant: a condemned pack's record is written in the same commit that moved its last
//! indexed chunk away, and removed only after its file is gone, so a crash anywhere leaves
//! either a pack still readable or a record that the next run finishes. A record that does
//! not decode is corruption, reported — never skipped (skipping a condemned record would
//! leave its pack on disk forever; skipping the status would reset the run history).

use crate::commit::Commit;
use crate::containers::purge::hex;
use crate::ids::PackId;
use crate::keys::MetaKey;
use crate::kv::{Batch, Cf, KvError};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// A pack whose chunks were all moved away or are dead; deleted once `since + grace` passed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Condemned {
    pub pack: u32,
    /// Unix seconds when it was condemned.
    pub since: i64,
    pub size: u64,
    /// The store version of the commit that condemned it (0 in records made before
    /// format 7). A metadata checkpoint at this version or later no longer names the pack.
    #[serde(default)]
    pub version: u64,
}

/// What GC did last and in all, shown by `stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GcStatus {
    pub runs: u64,
    /// Unix seconds of the end of the last run.
    pub last_run: i64,
    pub last_reclaimed_bytes: u64,
    pub last_duration_ms: u64,
    /// Whether the last run was started by the daemon because the store was idle.
    pub last_background: bool,
    pub last_error: Option<String>,
    pub total_reclaimed_bytes: u64,
    /// Pack bytes of chunks only history still references (nothing live), per container
    /// name, as the last run found them: what retention could release.
    pub history_held_bytes: u64,
    pub history_held: Vec<(String, u64)>,
}

/// Condemns a pack inside a commit (which stamps its version on the record).
pub fn condemn(c: &mut Commit<'_>, mut p: Condemned) {
    p.version = c.version.0;
    c.txn.put(
        Cf::Meta,
        MetaKey::Condemned(PackId(p.pack)).encode(),
        serde_json::to_vec(&p).unwrap_or_default(),
    );
}

/// Every condemned pack.
pub fn condemned(store: &Store) -> Result<Vec<Condemned>, KvError> {
    let (lo, hi) = MetaKey::condemned_range();
    crate::kv::collect_range(&**store.kv(), Cf::Meta, lo, Some(hi))?
        .iter()
        .map(|(k, v)| {
            MetaKey::condemned_from(k)
                .map_err(|e| e.to_string())
                .and_then(|_| serde_json::from_slice(v).map_err(|e| e.to_string()))
                .map_err(|e| KvError::Corrupt(format!("condemned-pack record {}: {e}", hex(k))))
        })
        .collect()
}

/// Forgets condemned packs (their files are gone, or they must be kept after all).
pub fn release(store: &Store, packs: &[u32]) -> Result<(), KvError> {
    if packs.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    for p in packs {
        b.delete(Cf::Meta, MetaKey::Condemned(PackId(*p)).encode());
    }
    store.kv().write(b, true)
}

pub fn status(store: &Store) -> Result<GcStatus, KvError> {
    match store.kv().get(Cf::Meta, &MetaKey::GcStatus.encode())? {
        None => Ok(GcStatus::default()),
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| KvError::Corrupt(format!("GC status record: {e}"))),
    }
}

pub fn put_status(store: &Store, s: &GcStatus) -> Result<(), KvError> {
    let mut b = Batch::new();
    b.put(
        Cf::Meta,
        MetaKey::GcStatus.encode(),
        serde_json::to_vec(s).unwrap_or_default(),
    );
    store.kv().write(b, true)
}
