//! `fsck` and `scrub`: every reference checked, every problem named.
//!
//! Checks, in order:
//! 1. extent → chunk: every extent record of every kept version names an indexed chunk;
//! 2. reference counts: each chunk's count equals the extent records naming it, and each
//!    per-container count equals those of the container's branches;
//! 3. chunk → pack: each indexed chunk's pack exists and holds a whole record for it at the
//!    recorded offset (with `scrub`: its content decodes and hashes to the chunk id);
//! 4. packs: files nothing names (orphans), condemned packs still named;
//! 5. the store's counters against what the index holds;
//! 6. each live tree's counters (files, logical bytes) against a count of the tree.
//!
//! A record whose key or value does not decode is a `malformed_record` problem naming it.
//!
//! Steps 1, 2 and 5 run under the commit lock, so a mounted store's writers wait for them
//! (reads do not); the pack reads of step 3 do not hold it. Memory: reference counts are
//! tallied in passes over partitions of the chunk-id space, each at most `PARTITION` chunks.
//!
//! `repair` fixes only what has one right answer: reference-count and counter drift (set
//! to what the records say, tree counters to the count), index entries of unreferenced
//! chunks whose data is gone (dropped), orphan packs (deleted), condemned packs still named
//! (kept), malformed per-container counts (dropped and recounted). Lost or damaged data
//! that files reference cannot be repaired; the report names the files.

use crate::state;
use crate::{GcError, Progress, Result, PAGE};
use dedupfs_core::chunks::StoreCounters;
use dedupfs_core::commit::Commit;
use dedupfs_core::containers::Registry;
use dedupfs_core::ids::{ChunkId, ContainerId, PackId};
use dedupfs_core::pack::RecordLoc;
use dedupfs_core::records::ChunkRec;
use dedupfs_core::refs::{self, Malformed};
use dedupfs_core::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Chunks whose counts one pass tallies.
const PARTITION: u64 = 4_000_000;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Read every chunk and check its content against its hash.
    pub scrub: bool,
    /// Fix what can be fixed without guessing.
    pub repair: bool,
}

/// One problem, with everything needed to find it. `K` is the text of its kind: a name
/// from this module (`&'static str`) where fsck finds it, a `String` where a report is read
/// back (`Report<String>`, the CLI's decoding of a daemon's answer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Problem<K = &'static str> {
    /// `refcount_drift`, `damaged_data`, …
    pub kind: K,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<u32>,
    pub repaired: bool,
}

impl Problem {
    pub(crate) fn new(kind: &'static str, message: String) -> Problem {
        Problem {
            kind,
            message,
            container: None,
            path: None,
            version: None,
            chunk: None,
            pack: None,
            repaired: false,
        }
    }
}

/// What fsck checked and found; `K` as in [`Problem`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report<K = &'static str> {
    pub scrub: bool,
    pub repair: bool,
    pub extents: u64,
    pub chunks: u64,
    pub packs: u64,
    pub bytes_scrubbed: u64,
    pub problems: Vec<Problem<K>>,
    /// Problems left after repair (the exit status).
    pub unrepaired: u64,
    /// Not problems: space GC will reclaim (garbage left by crashes, dead chunks).
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

fn malformed(m: &Malformed) -> Problem {
    Problem::new(
        "malformed_record",
        format!("{} record {}: {}", m.family, m.key, m.reason),
    )
}

fn in_part(id: ChunkId, parts: u64, p: u64) -> bool {
    parts <= 1 || (id.0 % parts as u128) as u64 == p
}

/// Checks the store; with `repair`, fixes what it can. Problems are in the report.
pub fn run(store: &Store, opts: &Options, progress: Progress<'_>) -> Result<Report> {
    let t0 = Instant::now();
    let mut r = Report {
        scrub: opts.scrub,
        repair: opts.repair,
        ..Default::default()
    };
    let index_chunks = store.committer.store_counters().chunks;
    let parts = index_chunks.div_ceil(PARTITION).max(1);
    let mut dangling: HashSet<ChunkId> = HashSet::new();
    let mut counted = StoreCounters::default();
    let reg = store.registry();
    refs::check_records(store, |m| r.problems.push(malformed(&m)))?;
    for p in 0..parts {
        store.committer.commit(|c| {
            check_refs(
                store,
                &reg,
                c,
                (parts, p),
                opts.repair,
                &mut r,
                &mut dangling,
                &mut counted,
            )
        })?;
        progress("checking references", p + 1, Some(parts));
    }
    store.committer.commit(|c| {
        let have = *c.store_counters();
        // Ingest figures are flows, not state: nothing in the index recounts them.
        counted.ingest = have.ingest;
        if have != counted {
            let mut pr = Problem::new(
                "counter_drift",
                format!("store counters say {have:?}, the index holds {counted:?}"),
            );
            if opts.repair {
                *c.store_counters() = counted;
                pr.repaired = true;
            }
            r.problems.push(pr);
        }
        Ok::<_, GcError>(())
    })?;
    check_tree_counters(store, &reg, opts.repair, &mut r)?;

    // Chunk → pack.
    // Local packs and, for a store with packs in a bucket, the bucket's listing.
    let on_disk: HashMap<PackId, u64> = store
        .pack_listing()?
        .into_iter()
        .map(|p| (p.id, p.size))
        .collect();
    let missing_where = |p: PackId| match store.tier() {
        Some(t) => format!(
            "pack {p} is missing: not in packs/ and no object {}",
            t.remote()
                .location(&dedupfs_core::pack::remote::Remote::pack_key(p))
        ),
        None => format!("pack {p} is missing"),
    };
    let mut missing_packs: BTreeMap<PackId, u64> = BTreeMap::new();
    r.packs = on_disk.len() as u64;
    let condemned: HashSet<u32> = state::condemned(store)?.iter().map(|c| c.pack).collect();
    let mut named: HashSet<PackId> = HashSet::new();
    let mut bad: BTreeMap<ChunkId, (ChunkRec, String)> = BTreeMap::new();
    let mut dead_lost: Vec<ChunkId> = Vec::new();
    let mut still_condemned: HashSet<u32> = HashSet::new();
    let mut after = None;
    let mut seen = 0u64;
    loop {
        let page = store.chunks.index_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, rec) in &page {
            named.insert(rec.pack);
            if condemned.contains(&rec.pack.0) {
                still_condemned.insert(rec.pack.0);
            }
            let loc = RecordLoc {
                pack: rec.pack,
                offset: rec.offset,
            };
            let res = if opts.scrub {
                r.bytes_scrubbed += rec.disk_bytes();
                store
                    .chunks
                    .read_indexed(*id, rec)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if !on_disk.contains_key(&rec.pack) {
                *missing_packs.entry(rec.pack).or_default() += 1;
                Err(missing_where(rec.pack))
            } else {
                store
                    .chunks
                    .reader()
                    .check_header(loc, rec.frame.is_none().then_some(*id), rec.stored_len)
                    .map_err(|e| e.to_string())
            };
            if let Err(why) = res {
                if rec.refs == 0 {
                    dead_lost.push(*id);
                } else {
                    bad.insert(*id, (*rec, why));
                }
            }
        }
        seen += page.len() as u64;
        progress(
            if opts.scrub {
                "scrubbing chunks"
            } else {
                "checking chunk locations"
            },
            seen,
            Some(index_chunks.max(seen)),
        );
    }
    r.chunks = seen;
    for (p, n) in &missing_packs {
        let mut pr = Problem::new(
            "pack_missing",
            format!("{}; {n} chunks name it", missing_where(*p)),
        );
        pr.pack = Some(p.0);
        r.problems.push(pr);
    }

    if !dead_lost.is_empty() {
        let mut pr = Problem::new(
            "dead_chunk_lost",
            format!(
                "{} unreferenced chunks have damaged or missing data (no file uses them)",
                dead_lost.len()
            ),
        );
        if opts.repair {
            let _gate = store.chunks.gc_gate();
            store
                .committer
                .commit(|c| store.chunks.forget_dead(c, &dead_lost))?;
            pr.repaired = true;
        }
        r.problems.push(pr);
    }
    if !bad.is_empty() {
        crate::damage::report_damaged(store, &reg, &bad, &mut r)?;
    }
    for p in still_condemned {
        let mut pr = Problem::new(
            "condemned_pack_named",
            format!("pack {p} is condemned by GC but chunks still name it"),
        );
        pr.pack = Some(p);
        if opts.repair {
            state::release(store, &[p])?;
            pr.repaired = true;
        }
        r.problems.push(pr);
    }

    // Packs nothing names.
    let current = store.chunks.writer().current();
    let mut orphans: Vec<(PackId, u64)> = on_disk
        .iter()
        .filter(|(p, _)| !named.contains(p) && !condemned.contains(&p.0) && Some(**p) != current)
        .map(|(p, n)| (*p, *n))
        .collect();
    orphans.sort();
    if !orphans.is_empty() {
        let bytes: u64 = orphans.iter().map(|(_, n)| n).sum();
        if opts.repair {
            let _gate = store.chunks.gc_gate();
            let busy = store.chunks.packs_with_pending();
            let free: Vec<(PackId, u64)> = orphans
                .iter()
                .filter(|(p, _)| !busy.contains(p))
                .copied()
                .collect();
            if store.tier().is_some() {
                // In a bucket, the newest checkpoint may still name them (a GC cut short
                // between dropping their index entries and condemning them): condemned,
                // so GC deletes them once a newer checkpoint is up.
                let since = state::now();
                store.committer.commit(|c| {
                    for (p, n) in &free {
                        dedupfs_core::reclaim::condemn(
                            c,
                            state::Condemned {
                                pack: p.0,
                                since,
                                size: *n,
                                version: 0,
                            },
                        );
                    }
                    Ok::<_, GcError>(())
                })?;
                r.notes.push(format!(
                    "condemned {} orphan packs ({bytes} bytes) that no chunk named; `dedupfs gc` \
                     deletes them from the bucket after a newer checkpoint",
                    free.len()
                ));
            } else {
                for (p, _) in &free {
                    store.delete_pack(*p)?;
                }
                r.notes.push(format!(
                    "removed {} orphan pack files ({bytes} bytes) that no chunk named",
                    free.len()
                ));
            }
        } else {
            r.notes.push(format!(
                "{} pack files ({bytes} bytes) hold no indexed chunk (left by a crash or an interrupted GC); `dedupfs gc` or `fsck --repair` removes them",
                orphans.len()
            ));
        }
    }
    let have = store.committer.store_counters();
    if have.dead_chunks > 0 {
        r.notes.push(format!(
            "{} unreferenced chunks ({} bytes) wait for `dedupfs gc`",
            have.dead_chunks, have.dead_stored_bytes
        ));
    }
    r.unrepaired = r.problems.iter().filter(|p| !p.repaired).count() as u64;
    r.duration_ms = t0.elapsed().as_millis() as u64;
    Ok(r)
}

/// Each live tree's counters (a container's live tree, a read-write snapshot) against a
/// count of the tree, under the commit lock.
fn check_tree_counters(store: &Store, reg: &Registry, repair: bool, r: &mut Report) -> Result<()> {
    let mut trees: Vec<(
        String,
        std::sync::Arc<dedupfs_core::containers::ContainerInfo>,
    )> = reg
        .list()
        .into_iter()
        .map(|ci| (format!("container '{}'", ci.rec.name), ci))
        .collect();
    for s in reg.snapshots() {
        if !s.read_only {
            let name = s
                .snapshot
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            trees.push((format!("snapshot '{name}'"), s));
        }
    }
    store.committer.commit(|c| {
        for (what, t) in &trees {
            let have = dedupfs_core::stats::tree_counters_at(store, &t.read_point)?;
            let want = dedupfs_core::tree::count(store, &t.read_point, t.root())?;
            // No record reads as zero (`stats::tree_counters`): drift only where what
            // is read differs from the tree (a new, empty container records nothing).
            if have.unwrap_or_default() != want {
                let mut pr = Problem::new(
                    "tree_counter_drift",
                    format!(
                        "{what}: counters say {}, the tree holds {} files of {} bytes",
                        match have {
                            Some(h) => format!("{} files of {} bytes", h.files, h.logical_bytes),
                            None => "nothing (none recorded)".into(),
                        },
                        want.files,
                        want.logical_bytes
                    ),
                );
                pr.container = Some(t.rec.name.clone());
                if repair {
                    c.set_tree_counters(&t.read_point, want);
                    pr.repaired = true;
                }
                r.problems.push(pr);
            }
        }
        Ok::<_, GcError>(())
    })
}

/// One partition of the reference check, under the commit lock.
#[allow(clippy::too_many_arguments)]
fn check_refs(
    store: &Store,
    reg: &Registry,
    c: &mut Commit<'_>,
    (parts, p): (u64, u64),
    repair: bool,
    r: &mut Report,
    dangling: &mut HashSet<ChunkId>,
    counted: &mut StoreCounters,
) -> Result<()> {
    let mut refs_of: HashMap<ChunkId, u64> = HashMap::new();
    let mut per_container: HashMap<(u32, ChunkId), u64> = HashMap::new();
    let mut extents = 0u64;
    refs::scan_extents(store, |e| match e {
        Ok(e) => {
            extents += 1;
            if in_part(e.chunk, parts, p) {
                *refs_of.entry(e.chunk).or_default() += 1;
                if let Some(b) = reg.branch(e.branch) {
                    *per_container.entry((b.container, e.chunk)).or_default() += 1;
                }
            }
        }
        // Reported once, in the first pass.
        Err(m) if p == 0 => r.problems.push(malformed(&m)),
        Err(_) => {}
    })?;
    let mut refs = refs_of;
    // Index entries against the tally.
    let mut after = None;
    loop {
        let page = store.chunks.index_page(after, crate::PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, rec) in page {
            if !in_part(id, parts, p) {
                continue;
            }
            let actual = refs.remove(&id).unwrap_or(0);
            let bytes = rec.disk_bytes();
            counted.chunks += 1;
            counted.raw_bytes += rec.raw_len as u64;
            counted.stored_bytes += bytes;
            if actual == 0 {
                counted.dead_chunks += 1;
                counted.dead_stored_bytes += bytes;
            }
            if actual != rec.refs {
                let mut pr = Problem::new(
                    "refcount_drift",
                    format!(
                        "chunk {id} records {} references, {actual} extent records name it",
                        rec.refs
                    ),
                );
                pr.chunk = Some(id.to_string());
                pr.pack = Some(rec.pack.0);
                if repair {
                    store.chunks.set_refs(c, id, actual)?;
                    pr.repaired = true;
                }
                r.problems.push(pr);
            }
        }
    }
    // Whatever is left was referenced but is not in the index.
    for id in refs.keys() {
        dangling.insert(*id);
    }
    if !refs.is_empty() {
        crate::damage::report_dangling(store, reg, &refs, r)?;
    }

    // Per-container counts.
    let mut fixes: Vec<(ContainerId, ChunkId, u64)> = Vec::new();
    let mut bad_counts: Vec<Malformed> = Vec::new();
    refs::scan_container_refs(store, |x| match x {
        Ok((cid, id, have)) => {
            if in_part(id, parts, p) {
                let want = per_container.remove(&(cid.0, id)).unwrap_or(0);
                if have != want && !dangling.contains(&id) {
                    fixes.push((cid, id, want));
                }
            }
        }
        Err(m) if p == 0 => bad_counts.push(m),
        Err(_) => {}
    })?;
    for m in bad_counts {
        let mut pr = malformed(&m);
        if repair {
            // Dropped; the count it should have been is rewritten below from the tally.
            refs::drop_malformed(c, &m)?;
            pr.repaired = true;
        }
        r.problems.push(pr);
    }
    for ((cid, id), want) in per_container {
        if !dangling.contains(&id) {
            fixes.push((ContainerId(cid), id, want));
        }
    }
    if !fixes.is_empty() {
        let mut pr = Problem::new(
            "container_refcount_drift",
            format!(
                "{} per-container chunk counts differ from the extent records",
                fixes.len()
            ),
        );
        if repair {
            for (cid, id, want) in fixes {
                refs::set_container_ref(c, cid, id, want);
            }
            pr.repaired = true;
        }
        r.problems.push(pr);
    }
    Ok(())
}
