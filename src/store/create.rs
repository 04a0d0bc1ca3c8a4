//! Making a new store: `init` (with a bucket: the bucket is claimed first, and given back
//! if the local half fails) and the root directory every store starts with.
//!
//! Invariant: `dedupfs.json` is written last, so a directory holding it is a complete store;
//! a failed `init` leaves a directory it created removed and a bucket prefix unclaimed.

use super::{
    checkpoint, config, fsync_dir, io_err, perms, random_bytes, InitOptions, Store, StoreError,
};
use super::{META_DIR, PACKS_DIR};
use crate::clock::{SystemTime, TimeSource};
use crate::commit::Committer;
use crate::containers::{self, RootOwner, ROOT_BRANCH, ROOT_INO};
use crate::ids::Version;
use crate::kv::rocks::{RocksKv, RocksTuning};
use crate::kv::{Cf, Kv};
use crate::mvcc::{self, ReadPoint};
use config::{to_hex, StoreConfig, CONFIG_FILE, FORMAT_VERSION};
use std::path::Path;
use std::sync::Arc;

impl Store {
    /// Creates a new store at `path` (a missing or empty directory).
    pub fn init(path: &Path, opts: &InitOptions) -> Result<StoreConfig, StoreError> {
        // Removed again if the bucket refuses the new store.
        let created = !path.exists();
        opts.chunking
            .validate()
            .map_err(|reason| StoreError::BadConfig {
                path: path.to_path_buf(),
                reason,
            })?;
        if path.join(CONFIG_FILE).exists() {
            return Err(StoreError::AlreadyAStore {
                path: path.to_path_buf(),
            });
        }
        if path.exists() {
            if !path.is_dir() {
                return Err(StoreError::NotEmpty {
                    path: path.to_path_buf(),
                });
            }
            if std::fs::read_dir(path)
                .map_err(io_err(path))?
                .next()
                .is_some()
            {
                return Err(StoreError::NotEmpty {
                    path: path.to_path_buf(),
                });
            }
        } else {
            std::fs::create_dir_all(path).map_err(io_err(path))?;
        }
        perms::make_private_dir(path).map_err(io_err(path))?;
        let rnd = random_bytes(192 + 16 + 8).map_err(io_err(Path::new("/dev/urandom")))?;
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&rnd[208..216]);
        let config = StoreConfig {
            format: FORMAT_VERSION,
            store_id: to_hex(&rnd[192..208]),
            created: crate::records::Timestamp::now().sec,
            chunking: opts.chunking,
            gear_seed: opts.gear_seed.unwrap_or(u64::from_le_bytes(seed)),
            secret: to_hex(&rnd[..192]),
            pack_target_size: opts.pack_target_size,
            verify_dedup: opts.verify_dedup,
            packs: opts.packs.clone(),
        };
        // The bucket first: an unreachable endpoint, refused credentials or a prefix that
        // holds a store already leave nothing behind locally.
        if let Some(spec) = &opts.packs {
            if let Err(e) = checkpoint::claim_bucket(spec, &config) {
                if created {
                    let _ = std::fs::remove_dir(path);
                }
                return Err(e);
            }
            // The prefix is claimed now: a later failure gives it back.
            return Self::init_local(path, &config).inspect_err(|_| {
                if let Err(e) = checkpoint::unclaim_bucket(spec) {
                    log::error!(
                        "{}: init failed and the store's identity could not be removed from \
                         the bucket ({e}); delete {}/dedupfs.json by hand",
                        path.display(),
                        spec.url
                    );
                }
            });
        }
        Self::init_local(path, &config)
    }

    /// The local half of `init`: directories, the metadata database, then the config file.
    fn init_local(path: &Path, config: &StoreConfig) -> Result<StoreConfig, StoreError> {
        perms::create_private_dir(&path.join(PACKS_DIR)).map_err(io_err(path))?;
        perms::create_private_dir(&path.join(META_DIR)).map_err(io_err(path))?;
        let kv =
            RocksKv::open(&path.join(META_DIR), true, RocksTuning::default()).map_err(|e| {
                StoreError::Meta {
                    path: path.to_path_buf(),
                    source: e,
                }
            })?;
        let kv: Arc<dyn Kv> = Arc::new(kv);
        Self::write_root(&kv, Arc::new(SystemTime::default()))?;
        kv.sync()?;
        drop(kv);
        // The config file goes last: a directory with it is a complete store.
        config::write(path, config).map_err(io_err(path))?;
        // RocksDB made its files under the caller's umask.
        perms::tighten(path).map_err(io_err(path))?;
        fsync_dir(path).map_err(io_err(path))?;
        Ok(config.clone())
    }

    pub(super) fn write_root(
        kv: &Arc<dyn Kv>,
        time: Arc<dyn TimeSource>,
    ) -> Result<(), StoreError> {
        let c = Committer::open(kv.clone(), time)?;
        c.commit(|cm| {
            let now = cm.time;
            let rec = containers::new_dir_inode(RootOwner::default(), ROOT_INO, now);
            let v = cm.version;
            mvcc::put(
                &mut cm.txn,
                Cf::Inodes,
                &ReadPoint::single(ROOT_BRANCH, Version::LATEST),
                ROOT_INO,
                &[],
                v,
                Some(&rec.encode()),
            );
            Ok::<_, StoreError>(())
        })
    }
}
