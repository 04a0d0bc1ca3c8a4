//! Executing a plan: forget dead chunks, rewrite and condemn packs, delete condemned packs
//! whose grace period has passed.
//!
//! What waits on what: writers never wait for the scans or the copying. Each batch of index
//! changes (up to `BATCH` dead entries, or one pack's relocations) is committed while
//! holding the chunk store's GC gate, which makes writers' chunk lookups wait for that one
//! commit (milliseconds). Reads never wait: a reader that looked a chunk up just before it
//! moved finds the old pack still on disk (grace period) or looks again.

use crate::plan::{self, Action, Options, Plan};
use crate::state::{self, Condemned};
use crate::{GcError, Progress, Result, PAGE};
use dedupfs_core::chunks::ChunkError;
use dedupfs_core::ids::{ChunkId, PackId};
use dedupfs_core::pack;
use dedupfs_core::records::ChunkRec;
use dedupfs_core::store::{Store, StoreError, PACKS_DIR};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Dead index entries dropped per commit.
const BATCH: usize = 4096;
/// How long GC's own checkpoint waits for pending uploads.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
/// Packs whose chunks one index scan collects (bounds memory: their live entries).
const GROUP: usize = 64;

/// A chunk copied out of a pack: (chunk, old location, new location).
use dedupfs_core::chunks::Move;

/// The zstd level of frames GC rebuilds without their dead members (background work, so a
/// level that packs tighter than the ingest default).
const REFRAME_LEVEL: i32 = 3;

/// Stores with a GC running in this process. Lock order: a leaf (held only to claim).
static RUNNING: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

struct Running(std::path::PathBuf);

impl Running {
    fn claim(store: &Store) -> Result<Running> {
        let mut r = RUNNING.lock();
        let root = store.root().to_path_buf();
        if r.contains(&root) {
            return Err(GcError::Busy);
        }
        r.push(root.clone());
        Ok(Running(root))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().retain(|p| *p != self.0);
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub dry_run: bool,
    pub plan: Plan,
    pub dead_chunks_removed: u64,
    pub dead_bytes_removed: u64,
    pub packs_rewritten: u64,
    pub packs_deleted: u64,
    /// Bytes written as copies by rewrites (record headers included).
    pub bytes_copied: u64,
    /// Bytes of the pack files this run deleted.
    pub deleted_bytes: u64,
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Pack bytes freed on disk by this run: packs deleted minus the copies written for
    /// them (unlike `pack_bytes_before - pack_bytes_after`, not skewed by concurrent writers).
    pub reclaimed_bytes: u64,
    /// Condemned packs still inside their grace period (a later run deletes them).
    pub waiting: Vec<u32>,
    /// Packs left alone this time, and why.
    pub skipped: Vec<String>,
    /// With packs in a bucket: the checkpoint this run uploaded so that condemned packs
    /// the previous one still named could be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    pub duration_ms: u64,
}

/// What to record of a finished run (for `stats`).
pub fn run_record(res: &Result<Report>, t0: Instant, background: bool) -> state::RunRecord {
    state::RunRecord {
        reclaimed: res.as_ref().map(|r| r.reclaimed_bytes).unwrap_or(0),
        ms: t0.elapsed().as_millis() as u64,
        background,
        error: res.as_ref().err().map(|e| e.to_string()),
        history_held: res
            .as_ref()
            .ok()
            .map(|r| (r.plan.history_held_bytes, r.plan.history_held.clone())),
    }
}

/// Plans and (unless `dry_run`) runs a garbage collection.
pub fn run(store: &Store, opts: &Options, progress: Progress<'_>) -> Result<Report> {
    let _running = Running::claim(store)?;
    let t0 = Instant::now();
    let plan = plan::build(store, opts, progress)?;
    let mut r = Report {
        dry_run: opts.dry_run,
        pack_bytes_before: plan.pack_bytes,
        ..Default::default()
    };
    if opts.dry_run {
        r.pack_bytes_after = plan.pack_bytes;
        r.plan = plan;
        r.duration_ms = t0.elapsed().as_millis() as u64;
        return Ok(r);
    }
    if plan.closes_current {
        match store.chunks.writer().roll() {
            // Closing it only means writing its buffered tail; on a full disk that waits.
            Err(pack::PackError::NoSpace { .. }) => r
                .skipped
                .push("the pack being written was left open: no space for its tail".into()),
            other => other.map_err(|e| GcError::Chunk(e.into()))?,
        }
    }
    forget_dead(store, &mut r, progress)?;
    check_cancel(opts)?;
    let sizes: HashMap<u32, u64> = plan.packs.iter().map(|p| (p.pack, p.size)).collect();
    let of = |a: Action| -> Vec<u32> {
        plan.packs
            .iter()
            .filter(|p| p.action == a)
            .map(|p| p.pack)
            .collect()
    };
    let (deletes, rewrites) = (of(Action::Delete), of(Action::Rewrite));
    let total = deletes.len() + rewrites.len();
    let mut done = 0u64;
    // Whole dead packs go first: they need no copies, and on a full disk they are where
    // the room for the copies comes from.
    for group in deletes.chunks(GROUP) {
        rewrite_group(store, group, &sizes, &mut r, progress, &mut done, total)?;
    }
    let short = store
        .chunks
        .writer()
        .free_beyond_reserve()
        .is_some_and(|free| free < plan.copy_bytes.saturating_mul(2));
    if !rewrites.is_empty() && short && !deletes.is_empty() {
        // Delete them now (after their grace period), before writing any copy.
        delete_expired(store, opts, &mut r, progress)?;
    }
    {
        let _relief = store.chunks.writer().reserve_relief();
        for group in rewrites.chunks(GROUP) {
            check_cancel(opts)?;
            match rewrite_group(store, group, &sizes, &mut r, progress, &mut done, total) {
                Err(GcError::Chunk(ChunkError::Pack(pack::PackError::NoSpace { .. }))) => {
                    // Finish what frees space; the copies made so far are garbage for next
                    // time.
                    r.skipped.push(
                        "rewrites stopped: no space left for copies (deletes went ahead)".into(),
                    );
                    break;
                }
                other => other?,
            }
        }
    }
    delete_expired(store, opts, &mut r, progress)?;
    r.pack_bytes_after = store.pack_usage()?.0;
    r.reclaimed_bytes = r.deleted_bytes.saturating_sub(r.bytes_copied);
    r.plan = plan;
    r.duration_ms = t0.elapsed().as_millis() as u64;
    log::info!(
        "gc: removed {} dead chunks, rewrote {} packs ({} bytes copied), deleted {} packs, reclaimed {} bytes in {} ms",
        r.dead_chunks_removed,
        r.packs_rewritten,
        r.bytes_copied,
        r.packs_deleted,
        r.reclaimed_bytes,
        r.duration_ms
    );
    Ok(r)
}

/// Stops a run the daemon wants to end (unmount). Every step before is complete or
/// redone by the next run.
fn check_cancel(opts: &Options) -> Result<()> {
    match &opts.cancel {
        Some(c) if c.load(std::sync::atomic::Ordering::Acquire) => Err(GcError::Cancelled),
        _ => Ok(()),
    }
}

/// Drops the index entries of unreferenced chunks, a batch per commit.
fn forget_dead(store: &Store, r: &mut Report, progress: Progress<'_>) -> Result<()> {
    let mut after: Option<ChunkId> = None;
    let mut dead: Vec<ChunkId> = Vec::new();
    let flush = |dead: &mut Vec<ChunkId>, r: &mut Report| -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let _gate = store.chunks.gc_gate();
        let (n, bytes) = store
            .committer
            .commit(|c| store.chunks.forget_dead(c, dead).map_err(StoreError::from))?;
        r.dead_chunks_removed += n;
        r.dead_bytes_removed += bytes;
        dead.clear();
        Ok(())
    };
    loop {
        let page = store.chunks.index_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, rec) in &page {
            if rec.refs == 0 {
                dead.push(*id);
                if dead.len() >= BATCH {
                    flush(&mut dead, r)?;
                    progress("removing dead chunks", r.dead_chunks_removed, None);
                }
            }
        }
    }
    flush(&mut dead, r)?;
    progress("removing dead chunks", r.dead_chunks_removed, None);
    Ok(())
}

/// Copies the indexed chunks of a group of packs to new packs, then moves their entries
/// and condemns each pack in one commit per pack.
fn rewrite_group(
    store: &Store,
    group: &[u32],
    sizes: &HashMap<u32, u64>,
    r: &mut Report,
    progress: Progress<'_>,
    done: &mut u64,
    total: usize,
) -> Result<()> {
    // Packs with chunks a writer stored but has not committed yet are left for next time.
    // Checked under the gate before the scan: no record can join these packs later (only
    // the current pack is appended to), so the scan sees every chunk that will ever name
    // them.
    let mut members: HashSet<PackId> = group.iter().map(|p| PackId(*p)).collect();
    {
        let _gate = store.chunks.gc_gate();
        let busy = store.chunks.packs_with_pending();
        let current = store.chunks.writer().current();
        members.retain(|p| {
            let skip = busy.contains(p) || Some(*p) == current;
            if skip {
                r.skipped
                    .push(format!("pack {p}: a writer is still committing into it"));
            }
            !skip
        });
    }
    if members.is_empty() {
        return Ok(());
    }
    let mut chunks: HashMap<PackId, Vec<(ChunkId, ChunkRec)>> = HashMap::new();
    let mut after: Option<ChunkId> = None;
    loop {
        let page = store.chunks.index_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, rec) in page {
            if members.contains(&rec.pack) {
                chunks.entry(rec.pack).or_default().push((id, rec));
            }
        }
    }
    let mut ordered: Vec<PackId> = members.into_iter().collect();
    ordered.sort();
    let mut moves_of: Vec<(PackId, Vec<Move>)> = Vec::new();
    let mut no_space = None;
    for pack in ordered {
        if no_space.is_some() && chunks.get(&pack).is_some_and(|l| !l.is_empty()) {
            continue;
        }
        let list = chunks.remove(&pack).unwrap_or_default();
        let mut moves = Vec::new();
        let mut damaged = None;
        let mut out_of_space = false;
        match store.chunks.copy_out(&list, REFRAME_LEVEL) {
            Ok((m, bytes)) => {
                moves = m;
                r.bytes_copied += bytes;
            }
            Err(e @ ChunkError::Pack(pack::PackError::NoSpace { .. })) => {
                no_space = Some(e);
                out_of_space = true;
            }
            Err(e) => damaged = Some(e.to_string()),
        }
        if out_of_space {
            continue;
        }
        match damaged {
            Some(why) => {
                log::error!("gc: pack {pack} kept: {why} (run `dedupfs fsck --scrub`)");
                r.skipped.push(format!(
                    "pack {pack}: kept, a chunk in it is damaged: {why}"
                ));
            }
            None => moves_of.push((pack, moves)),
        }
    }
    // Packs with nothing to move are condemned first: that needs no space, and a full
    // disk that cannot take the copies still gets them back.
    moves_of.sort_by_key(|(_, m)| !m.is_empty());
    let mut synced = false;
    // Containers whose counters follow a chunk re-framed without its dead neighbours.
    let containers: Vec<_> = store.registry().list().iter().map(|c| c.id()).collect();
    for (pack, moves) in moves_of {
        if !moves.is_empty() && !synced {
            // The copies must be durable before any entry points at them.
            let w = store.chunks.writer();
            w.flush()
                .and_then(|()| w.sync())
                .map_err(|e| GcError::Chunk(e.into()))?;
            synced = true;
        }
        let since = state::now();
        let size = sizes.get(&pack.0).copied().unwrap_or(0);
        let _gate = store.chunks.gc_gate();
        store.committer.commit(|c| {
            store
                .chunks
                .relocate(c, &moves, &containers)
                .map_err(StoreError::from)?;
            dedupfs_core::reclaim::condemn(
                c,
                Condemned {
                    pack: pack.0,
                    since,
                    size,
                    version: 0,
                },
            );
            Ok::<_, StoreError>(())
        })?;
        if !moves.is_empty() {
            r.packs_rewritten += 1;
        }
        *done += 1;
        progress("rewriting packs", *done, Some(total as u64));
    }
    match no_space {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Deletes condemned packs whose grace period has passed, after waiting for those this run
/// condemned, and after checking that no index entry names them.
fn delete_expired(
    store: &Store,
    opts: &Options,
    r: &mut Report,
    progress: Progress<'_>,
) -> Result<()> {
    let mut condemned = state::condemned(store)?;
    if condemned.is_empty() {
        return Ok(());
    }
    // Wait out the grace period of what this run condemned (bounded by `grace`).
    let grace = opts.grace.as_secs() as i64;
    let newest = condemned.iter().map(|c| c.since).max().unwrap_or(0);
    while state::now() < newest + grace {
        check_cancel(opts)?;
        let waited = (state::now() - newest).clamp(0, grace) as u64;
        progress(
            "waiting for readers in flight (grace period)",
            waited,
            Some(grace as u64),
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let now = state::now();
    // With packs in a bucket, a pack also waits for a checkpoint taken after it was
    // condemned: until then the newest checkpoint may still name it, and a recovery from
    // the bucket would miss it.
    let mut checkpoint = match store.tier() {
        None => None,
        Some(_) => Some(dedupfs_core::store::checkpoint::last(store)?),
    };
    // Packs past their grace period that the newest checkpoint may still name: take a
    // checkpoint now (the commits that condemned them are in it), so that space comes back
    // in this run rather than after the next scheduled one.
    let stale = |c: &Condemned, k: &Option<dedupfs_core::store::checkpoint::CheckpointRecord>| {
        c.since + grace <= now
            && match k {
                None => true,
                Some(k) if c.version > 0 => c.version > k.version,
                Some(k) => c.since >= k.at,
            }
    };
    if let Some(k) = &checkpoint {
        if condemned.iter().any(|c| stale(c, k)) {
            match dedupfs_core::store::checkpoint::take_until(
                store,
                CHECKPOINT_WAIT,
                opts.cancel.as_deref(),
            ) {
                Ok(rec) => {
                    r.checkpoint = Some(rec.key.clone());
                    checkpoint = Some(Some(rec));
                }
                Err(e) => r.skipped.push(format!(
                    "the checkpoint that would let condemned packs go failed: {e}"
                )),
            }
        }
    }
    // A checkpoint at the condemning commit's version or later no longer names the pack
    // (records from before format 7 carry no version: their time decides).
    let covered = |c: &Condemned| match &checkpoint {
        None => true,
        Some(None) => false,
        Some(Some(k)) if c.version > 0 => c.version <= k.version,
        Some(Some(k)) => c.since < k.at,
    };
    let (expired, waiting): (Vec<Condemned>, Vec<Condemned>) = condemned
        .drain(..)
        .partition(|c| c.since + grace <= now && covered(c));
    let uncovered = waiting.iter().filter(|c| !covered(c)).count();
    if uncovered > 0 {
        r.skipped.push(format!(
            "{uncovered} condemned packs wait for a metadata checkpoint newer than their \
             condemnation (taken on schedule, at unmount, or by `dedupfs checkpoint`)"
        ));
    }
    r.waiting = waiting.iter().map(|c| c.pack).collect();
    if expired.is_empty() {
        return Ok(());
    }
    // The commits that moved chunks away must be durable before the old copies go (the
    // copies themselves were synced before those commits).
    store.sync()?;
    let mut doomed: HashSet<PackId> = expired.iter().map(|c| PackId(c.pack)).collect();
    let mut after: Option<ChunkId> = None;
    let mut rescued = Vec::new();
    loop {
        let page = store.chunks.index_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, rec) in &page {
            if doomed.remove(&rec.pack) {
                log::error!(
                    "gc: condemned pack {} is still named by chunk {id}; keeping it",
                    rec.pack
                );
                rescued.push(rec.pack.0);
                r.skipped
                    .push(format!("pack {}: still referenced, kept", rec.pack));
            }
        }
    }
    state::release(store, &rescued)?;
    let dir = store.root().join(PACKS_DIR);
    let mut gone = Vec::new();
    let mut shards = HashSet::new();
    let sizes: HashMap<PackId, u64> = expired.iter().map(|c| (PackId(c.pack), c.size)).collect();
    for (i, p) in doomed.iter().enumerate() {
        let path = pack::pack_path(&dir, *p);
        store.delete_pack(*p)?;
        r.packs_deleted += 1;
        r.deleted_bytes += sizes.get(p).copied().unwrap_or(0);
        if let Some(parent) = path.parent() {
            shards.insert(parent.to_path_buf());
        }
        gone.push(p.0);
        progress("deleting packs", i as u64 + 1, Some(doomed.len() as u64));
    }
    // The unlinks are made durable before their keys go, so a crash never leaves a pack
    // file that nothing remembers to delete.
    for d in shards {
        if let Ok(d) = std::fs::File::open(&d) {
            let _ = d.sync_all();
        }
    }
    state::release(store, &gone)?;
    Ok(())
}
