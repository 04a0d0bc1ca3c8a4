//! dedupfs core: a deduplicating, versioned store of containers of files.
//!
//! Data flow of a write: [`fs`] buffers it per file; a flush cuts it into content-defined
//! chunks ([`chunker`]), looks each up in the chunk index and stores the new ones compressed
//! in packs ([`chunks`], [`pack`]), then commits the file's new extents, the reference
//! counts and the inode in one batch ([`commit`]) whose keys carry their version
//! ([`mvcc`]), so every past state stays readable. [`kv`] hides RocksDB.

pub mod admin;
pub mod cache;
pub mod chunker;
pub mod chunks;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod containers;
pub(crate) mod extents;
pub mod fs;
pub mod history;
pub mod ids;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod mvcc;
pub mod pack;
pub mod points;
pub mod reclaim;
pub mod records;
pub mod refs;
pub mod replica;
pub mod stats;
pub mod store;
pub mod sync;
pub mod tree;
