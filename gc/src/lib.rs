//! dedupfs garbage collection, fsck and scrub.
//!
//! Owns the reclamation plan (per pack: keep, rewrite, delete), its crash-safe execution
//! (`sweep`), the record of packs condemned and waiting out their grace period (`state`),
//! and the consistency checks of references, reference counts and chunk contents (`fsck`).
//!
//! Invariants:
//! - A chunk's index entry is deleted only when its reference count is zero and no writer
//!   holds it, checked under the chunk store's GC gate and the commit lock, so a chunk a
//!   concurrent writer just deduplicated against is never deleted.
//! - A pack file is deleted only after (1) every chunk still indexed in it was copied to a
//!   durable new pack and its entry moved, in one commit that also condemns the pack, (2)
//!   that commit is durable, (3) the grace period has passed, and (4) a final scan finds no
//!   index entry naming it. A crash between any two steps leaves a store that reads
//!   correctly; the next run finishes the job.

mod damage;
pub mod fsck;
pub mod plan;
pub mod state;
pub mod sweep;

use dedupfs_core::chunks::ChunkError;
use dedupfs_core::kv::KvError;

pub use dedupfs_core::reclaim::GcStatus;
use dedupfs_core::store::StoreError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a garbage collection is already running on this store")]
    Busy,
    #[error(
        "garbage collection stopped early (the store is being unmounted); the next run finishes it"
    )]
    Cancelled,
    #[error(transparent)]
    History(#[from] dedupfs_snapshot::HistoryError),
}

pub type Result<T> = std::result::Result<T, GcError>;

/// Progress of a long step: what, how far, out of how much (if known).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, Option<u64>);

/// Index entries read per page by scans (bounds their memory).
pub(crate) const PAGE: usize = 16_384;
