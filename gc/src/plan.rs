//! The reclamation plan: what each pack holds and what GC will do with it.
//!
//! Built from one paged scan of the chunk index and a listing of the pack directory, so it
//! costs O(chunks) time and O(packs + containers) memory. A pack's bytes are live (indexed
//! chunks with references), dead (indexed, no references: their entries go first) or
//! garbage (records no entry names: left by crashes, earlier GC runs or failed writes).
//!
//! Decisions: a pack with nothing live is deleted; a pack whose reclaimable share (dead +
//! garbage) reaches `min_reclaim` is rewritten (its live chunks copied to a new pack);
//! otherwise it is kept. The pack being written and packs already condemned are left alone.

use crate::state::{self, Condemned};
use crate::{Progress, Result, PAGE};
use dedupfs_core::containers::lock::{self, LockWindow};
use dedupfs_core::ids::{ChunkId, ContainerId, PackId};
use dedupfs_core::pack::PACK_HEADER_LEN;
use dedupfs_core::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// How GC decides and how long deletions wait.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rewrite a pack when at least this share of its bytes can be reclaimed (0..=1).
    pub min_reclaim: f64,
    /// How long a condemned pack stays on disk for readers still in flight.
    pub grace: Duration,
    /// Only plan; change nothing.
    pub dry_run: bool,
    /// Set to stop a run early (the daemon unmounting); it fails with `Cancelled`.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_reclaim: 0.5,
            grace: Duration::from_secs(10),
            dry_run: false,
            cancel: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Rewrite,
    Delete,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackPlan {
    pub pack: u32,
    pub size: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub garbage_bytes: u64,
    pub action: Action,
    /// Bytes this plan frees in this pack.
    pub reclaim_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerReclaim {
    pub container: String,
    pub id: u32,
    /// Pack bytes of dead chunks this container stored first.
    pub dead_bytes: u64,
    pub dead_chunks: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    pub packs: Vec<PackPlan>,
    pub pack_files: u64,
    pub pack_bytes: u64,
    pub keep: u64,
    pub rewrite: u64,
    pub delete: u64,
    pub live_bytes: u64,
    pub dead_chunks: u64,
    pub dead_bytes: u64,
    pub garbage_bytes: u64,
    /// Live bytes the rewrites copy.
    pub copy_bytes: u64,
    /// Bytes the plan frees, condemned packs included.
    pub reclaimable_bytes: u64,
    /// Dead bytes by the container that stored them first.
    pub containers: Vec<ContainerReclaim>,
    /// Packs condemned by earlier runs, deleted by this one once their grace has passed.
    pub condemned: Vec<Condemned>,
    /// Chunks naming packs that are not on disk (run `dedupfs fsck`).
    pub missing_pack_chunks: u64,
    /// The pack being written is worth collecting: the sweep closes it first (on a quiet
    /// store it would otherwise never stop being "current").
    pub closes_current: bool,
    /// Pack bytes of chunks that only history references (no live tree reads them):
    /// versions kept by retention, read-only snapshots, bookmarks, states kept by
    /// rollbacks. GC cannot free them; pruning history can.
    pub history_held_bytes: u64,
    /// The same by the container that stored each chunk first, largest first.
    pub history_held: Vec<(String, u64)>,
    /// Containers under a retention lock: their history inside the window is kept
    /// whatever retention says, so GC cannot free what it references until it ages out.
    #[serde(default)]
    pub locked: Vec<LockedHistory>,
}

/// A locked container, as GC reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedHistory {
    pub container: String,
    pub window: LockWindow,
}

/// The pack being written is closed for collection only when it frees at least this much
/// (closing small packs again and again would only make more small packs).
const CLOSE_CURRENT_MIN: u64 = 1 << 20;

#[derive(Default, Clone, Copy)]
struct Tally {
    live: u64,
    dead: u64,
    live_chunks: u64,
}

/// Builds the plan from the current index and pack files.
pub fn build(store: &Store, opts: &Options, progress: Progress<'_>) -> Result<Plan> {
    let on_disk: Vec<(PackId, u64)> = store
        .pack_listing()?
        .into_iter()
        .map(|p| (p.id, p.size))
        .collect();
    let condemned = state::condemned(store)?;
    let condemned_ids: HashSet<u32> = condemned.iter().map(|c| c.pack).collect();
    let current = store.chunks.writer().current();
    let total_chunks = store.committer.store_counters().chunks;

    let mut tally: HashMap<PackId, Tally> = HashMap::new();
    let mut owners: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut plan = Plan::default();
    let mut after: Option<ChunkId> = None;
    let mut seen = 0u64;
    loop {
        let page = store.chunks.index_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (_, rec) in &page {
            let bytes = rec.disk_bytes();
            let t = tally.entry(rec.pack).or_default();
            if rec.refs > 0 {
                t.live += bytes;
                t.live_chunks += 1;
            } else {
                t.dead += bytes;
                plan.dead_chunks += 1;
                plan.dead_bytes += bytes;
                let o = owners.entry(rec.owner).or_default();
                o.0 += bytes;
                o.1 += 1;
            }
        }
        seen += page.len() as u64;
        progress(
            "scanning the chunk index",
            seen,
            Some(total_chunks.max(seen)),
        );
    }

    let (held, held_by) = history_held(store, total_chunks, progress)?;
    plan.history_held_bytes = held;
    let disk: HashSet<PackId> = on_disk.iter().map(|(p, _)| *p).collect();
    plan.missing_pack_chunks = tally
        .iter()
        .filter(|(p, _)| !disk.contains(p))
        .map(|(_, t)| t.live_chunks)
        .sum();
    for &(id, size) in &on_disk {
        plan.pack_files += 1;
        plan.pack_bytes += size;
        let t = tally.get(&id).copied().unwrap_or_default();
        let body = size.saturating_sub(PACK_HEADER_LEN);
        let garbage = body.saturating_sub(t.live + t.dead);
        plan.live_bytes += t.live;
        plan.garbage_bytes += garbage;
        let mut p = PackPlan {
            pack: id.0,
            size,
            live_bytes: t.live,
            dead_bytes: t.dead,
            garbage_bytes: garbage,
            action: Action::Keep,
            reclaim_bytes: 0,
            note: None,
        };
        if condemned_ids.contains(&id.0) {
            p.note = Some("condemned; deleted after its grace period".into());
        } else if Some(id) == current
            && ((size - t.live) < CLOSE_CURRENT_MIN
                || ((size - t.live) as f64) < opts.min_reclaim * size as f64)
        {
            p.note = Some("being written".into());
        } else if t.live == 0 {
            p.action = Action::Delete;
            p.reclaim_bytes = size;
        } else {
            let reclaim = size - t.live;
            if reclaim as f64 >= opts.min_reclaim * size as f64 {
                p.action = Action::Rewrite;
                // The copies take the live bytes (and a record header each) elsewhere.
                p.reclaim_bytes = reclaim;
                plan.copy_bytes += t.live;
            }
        }
        if Some(id) == current && p.action != Action::Keep {
            p.note = Some("being written; closed first".into());
            plan.closes_current = true;
        }
        match p.action {
            Action::Keep => plan.keep += 1,
            Action::Rewrite => plan.rewrite += 1,
            Action::Delete => plan.delete += 1,
        }
        plan.reclaimable_bytes += p.reclaim_bytes;
        plan.packs.push(p);
    }
    let disk_size: HashMap<u32, u64> = on_disk.iter().map(|(p, n)| (p.0, *n)).collect();
    plan.reclaimable_bytes += condemned
        .iter()
        .filter_map(|c| disk_size.get(&c.pack))
        .sum::<u64>();
    plan.condemned = condemned;
    let reg = store.registry();
    let name_of = |id: u32| {
        reg.get(ContainerId(id))
            .map(|c| c.rec.name.clone())
            .unwrap_or_else(|| format!("(deleted container {id})"))
    };
    plan.history_held = held_by
        .into_iter()
        .map(|(id, b)| (name_of(id), b))
        .collect();
    plan.history_held.sort_by_key(|x| std::cmp::Reverse(x.1));
    plan.containers = owners
        .into_iter()
        .map(|(id, (bytes, n))| ContainerReclaim {
            container: reg
                .get(ContainerId(id))
                .map(|c| c.rec.name.clone())
                .unwrap_or_else(|| format!("(deleted container {id})")),
            id,
            dead_bytes: bytes,
            dead_chunks: n,
        })
        .collect();
    for ci in reg.list() {
        if let Some(window) = lock::window(store, &ci.rec)? {
            plan.locked.push(LockedHistory {
                container: ci.rec.name.clone(),
                window,
            });
        }
    }
    Ok(plan)
}

/// Chunks one pass of [`history_held`] tracks as live (bounds its memory).
const LIVE_PARTITION: u64 = 4_000_000;

/// Pack bytes of referenced chunks that no live tree (a container's live tree or a
/// read-write snapshot) reads, in all and by the container that stored each first. Walks
/// the live trees once per partition of the chunk-id space, so memory stays bounded.
fn history_held(
    store: &Store,
    total_chunks: u64,
    progress: Progress<'_>,
) -> Result<(u64, BTreeMap<u32, u64>)> {
    let reg = store.registry();
    let mut trees: Vec<std::sync::Arc<dedupfs_core::containers::ContainerInfo>> = reg.list();
    trees.extend(reg.snapshots().into_iter().filter(|s| !s.read_only));
    let parts = total_chunks.div_ceil(LIVE_PARTITION).max(1);
    let (mut held, mut by) = (0u64, BTreeMap::new());
    for p in 0..parts {
        let mine = |id: ChunkId| parts <= 1 || (id.0 % parts as u128) as u64 == p;
        let mut live: HashSet<ChunkId> = HashSet::new();
        for t in &trees {
            let mut seen = HashSet::new();
            let mut dirs = vec![t.root()];
            while let Some(d) = dirs.pop() {
                for (_, e) in dedupfs_core::tree::entries(store, &t.read_point, d)? {
                    match e.kind {
                        dedupfs_core::records::FileKind::Directory => dirs.push(e.ino),
                        dedupfs_core::records::FileKind::RegularFile if seen.insert(e.ino) => {
                            let Some(rec) = dedupfs_core::tree::inode(store, &t.read_point, e.ino)?
                            else {
                                continue;
                            };
                            for (_, x) in dedupfs_core::tree::extents(
                                store,
                                &t.read_point,
                                e.ino,
                                rec.data_gen,
                                0,
                                rec.size,
                            )? {
                                if mine(x.chunk) {
                                    live.insert(x.chunk);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut after = None;
        loop {
            let page = store.chunks.index_page(after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            for (id, rec) in &page {
                if rec.refs > 0 && mine(*id) && !live.contains(id) {
                    let bytes = rec.disk_bytes();
                    held += bytes;
                    *by.entry(rec.owner).or_default() += bytes;
                }
            }
        }
        progress("finding what only history holds", p + 1, Some(parts));
    }
    Ok((held, by))
}
