//! The receiving side: a replica container's points are built on a hidden staging branch
//! in batches (each batch's records, chunk references, wire-index entries and resume
//! cursor in one commit) and published in one registry commit that moves the container's
//! head to the staging branch and names the points (bookmarks, read-only snapshots).
//!
//! Invariants: the staging branch is named by no tree, snapshot or bookmark until the
//! publish, so a cut transfer is invisible; the cursor (`MetaKey::ReplicaStaging`) always
//! matches the records committed with it, so a resumed transfer neither skips nor repeats
//! a change; a batch whose chunks do not all verify commits nothing.

use super::wire::{self, Item, Mode, Msg, Staging};
use super::{set_pair_key, PairKey, PointKind, PointMeta, ReplicaError, Result, WireId};
use crate::chunks::NewChunk;
use crate::commit::Commit;
use crate::containers::{
    self, BookmarkRecord, BranchRecord, ContainerRecord, ReplicaInfo, ReplicatedPoint,
    SnapshotMode, SnapshotRecord, SNAPSHOT_VIEW_BASE,
};
use crate::ids::{BranchId, ChunkId, ContainerId, Ino, Version};
use crate::keys::MetaKey;
use crate::kv::Cf;
use crate::mvcc::{self, ReadPoint};
use crate::records::{ExtentRec, FileKind};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

/// The resume state of a receive (JSON under `MetaKey::ReplicaStaging`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StagingRec {
    pub plan_id: u64,
    pub branch: u64,
    pub source_store: String,
    pub source_container: String,
    pub base: Option<(u64, u64)>,
    pub failback: bool,
    pub points: Vec<PointRec>,
    /// The point being received and how many of its changes are applied.
    pub point: u32,
    pub items: u64,
    /// Staging-branch version at which each finished point is complete.
    pub done: Vec<u64>,
    pub max_ino: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PointRec {
    pub kind: u8,
    pub name: String,
    pub bookmark_kind: String,
    pub source_branch: u64,
    pub source_version: u64,
    pub time: i64,
    pub time_nsec: u32,
}

impl PointRec {
    fn of(p: &PointMeta) -> PointRec {
        PointRec {
            kind: p.kind as u8,
            name: p.name.clone(),
            bookmark_kind: p.bookmark_kind.clone(),
            source_branch: p.source_branch,
            source_version: p.source_version,
            time: p.time,
            time_nsec: p.time_nsec,
        }
    }
    fn meta(&self) -> PointMeta {
        PointMeta {
            kind: PointKind::from_u8(self.kind).unwrap_or(PointKind::Live),
            name: self.name.clone(),
            bookmark_kind: self.bookmark_kind.clone(),
            source_branch: self.source_branch,
            source_version: self.source_version,
            time: self.time,
            time_nsec: self.time_nsec,
        }
    }
}

/// What a receive did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReceiveReport {
    pub container: String,
    pub source_store: String,
    pub source_container: String,
    pub points: Vec<String>,
    pub resumed: bool,
    pub changes: u64,
    pub chunks_received: u64,
    pub chunk_bytes_received: u64,
    pub chunks_rejected: u64,
    pub wire_bytes: u64,
    pub published: bool,
    /// The view number the container's live tree had before the publish (for the
    /// mount's cache invalidation).
    #[serde(default)]
    pub old_view: u32,
}

pub fn staging(store: &Store, cid: ContainerId) -> Result<Option<StagingRec>> {
    match store
        .kv()
        .get(Cf::Meta, &MetaKey::ReplicaStaging(cid).encode())?
    {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
            crate::kv::KvError::Corrupt(format!("replication staging of container {cid}: {e}"))
                .into()
        }),
    }
}

fn put_staging(c: &mut Commit<'_>, cid: ContainerId, s: &StagingRec) {
    c.txn.put(
        Cf::Meta,
        MetaKey::ReplicaStaging(cid).encode(),
        serde_json::to_vec(s).unwrap_or_default(),
    );
}

/// Throws away an unfinished receive into container `cid` (its staging branch and the
/// references it took), in bounded commits. Returns whether there was one.
pub fn abort(store: &Store, cid: ContainerId) -> Result<bool> {
    let Some(s) = staging(store, cid)? else {
        return Ok(false);
    };
    let b = BranchId(s.branch);
    // A staging branch that is already the head was published: only the cursor is left.
    let published = store
        .registry()
        .get(cid)
        .is_some_and(|c| c.rec.head == s.branch);
    if published {
        store.committer.commit(|c| {
            c.txn
                .delete(Cf::Meta, MetaKey::ReplicaStaging(cid).encode());
            Ok::<_, ReplicaError>(())
        })?;
        return Ok(false);
    }
    loop {
        let n = store
            .committer
            .commit(|c| containers::purge::release_branch_extents(c, &store.chunks, cid, b))?;
        if n == 0 {
            break;
        }
    }
    store.commit_registry(|c, reg| {
        containers::purge::drop_branch_records(c, b);
        reg.forget_branch(b);
        c.txn
            .delete(Cf::Meta, MetaKey::ReplicaStaging(cid).encode());
        Ok::<_, ReplicaError>(())
    })?;
    log::info!("container {cid}: unfinished replication receive discarded");
    Ok(true)
}

fn wire_key(tag: u64, w: &WireId) -> Vec<u8> {
    MetaKey::WireChunk {
        pair: tag,
        wire: w.0,
    }
    .encode()
}

/// The chunk this store holds under a wire id, if it still has it.
fn local_chunk(store: &Store, tag: u64, w: &WireId) -> Result<Option<ChunkId>> {
    let Some(v) = store.kv().get(Cf::Meta, &wire_key(tag, w))? else {
        return Ok(None);
    };
    let b: [u8; 16] = v.as_slice().try_into().map_err(|_| {
        crate::kv::KvError::Corrupt(format!("wire index entry {w}: {} bytes", v.len()))
    })?;
    let id = ChunkId::from_bytes(b);
    Ok(store.chunks.lookup(id)?.map(|_| id))
}

struct Session<'a> {
    store: &'a Store,
    key: PairKey,
    tag: u64,
    interactive: bool,
    report: ReceiveReport,
}

fn send(w: &mut Option<&mut dyn Write>, m: &Msg) -> Result<()> {
    if let Some(w) = w.as_mut() {
        wire::write_msg(*w, m)?;
        w.flush().map_err(ReplicaError::Io)?;
    }
    Ok(())
}

fn next(r: &mut dyn Read, report: &mut ReceiveReport) -> Result<Msg> {
    match wire::read_msg(r)? {
        Some((m, n)) => {
            report.wire_bytes += n;
            Ok(m)
        }
        None => Err(ReplicaError::Protocol(
            "the sender hung up before the transfer finished (what arrived is kept; the \
             next run resumes)"
                .into(),
        )),
    }
}

/// Target containers with a receive running in this process (a mounted target serves each
/// request on its own thread): a second receive into one of them is refused, never run
/// next to the first. Protects: the set. Lock order: a leaf.
static RECEIVING: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Holds a target container's name in [`RECEIVING`] until dropped.
struct Receiving(String, String);

impl Receiving {
    fn take(store: &Store, name: &str) -> Result<Receiving> {
        let key = (store.root().display().to_string(), name.to_string());
        let mut r = RECEIVING.lock().unwrap_or_else(|e| e.into_inner());
        if r.contains(&key) {
            return Err(ReplicaError::Refused(format!(
                "a receive into '{name}' is already running here; try again when it is done"
            )));
        }
        r.push(key.clone());
        Ok(Receiving(key.0, key.1))
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let mut r = RECEIVING.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|k| k.0 != self.0 || k.1 != self.1);
    }
}

/// Inode numbers a stream may carry: far below the allocator's limit, so raising the
/// allocator past them can never wrap.
const MAX_INO: u64 = 1 << 62;

fn check_ino(ino: Ino) -> Result<()> {
    if ino.0 < 2 || ino.0 >= MAX_INO {
        return Err(ReplicaError::Protocol(format!(
            "inode number {ino} out of range"
        )));
    }
    Ok(())
}

fn check_name(name: &[u8], what: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0)
    {
        return Err(ReplicaError::Protocol(format!(
            "{what} name {:?} is not a valid file name",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Serves one replication conversation on `r`/`w` (`w`: `None` for a one-way pipe),
/// into the container the sender names or `target` if given. Errors are also sent to the
/// peer before they are returned.
pub fn serve_as(
    store: &Store,
    target: Option<&str>,
    r: &mut dyn Read,
    mut w: Option<&mut dyn Write>,
    progress: &mut dyn FnMut(&ReceiveReport),
) -> Result<ReceiveReport> {
    let res = serve_inner(store, target, r, &mut w, progress);
    if let Err(e) = &res {
        if !matches!(e, ReplicaError::Peer(_) | ReplicaError::Io(_)) {
            let _ = send(
                &mut w,
                &Msg::Error {
                    message: e.to_string(),
                },
            );
        }
    }
    res
}

fn serve_inner(
    store: &Store,
    target: Option<&str>,
    r: &mut dyn Read,
    w: &mut Option<&mut dyn Write>,
    progress: &mut dyn FnMut(&ReceiveReport),
) -> Result<ReceiveReport> {
    let mut report = ReceiveReport::default();
    let hello = match wire::read_msg(r)? {
        Some((m, n)) => {
            report.wire_bytes += n;
            m
        }
        None => return Err(ReplicaError::Protocol("empty replication stream".into())),
    };
    let Msg::Hello {
        proto,
        source_store,
        source_container,
        target_container,
        pair_key,
        chunk_max,
        interactive,
        mode,
    } = hello
    else {
        return Err(ReplicaError::Protocol(
            "the stream does not start with hello".into(),
        ));
    };
    if proto != super::PROTOCOL {
        return Err(ReplicaError::Refused(format!(
            "the sender speaks replication protocol {proto}; this dedupfs speaks {}",
            super::PROTOCOL
        )));
    }
    if source_store == store.config().store_id {
        return Err(ReplicaError::Refused(
            "source and target are the same store".into(),
        ));
    }
    if chunk_max > store.config().chunking.max {
        return Err(ReplicaError::Refused(format!(
            "the source cuts chunks up to {chunk_max} bytes, this store only up to {}; \
             create the target with `dedupfs init --like SOURCE`",
            store.config().chunking.max
        )));
    }
    let target_container = target.map(str::to_string).unwrap_or(target_container);
    let _receiving = Receiving::take(store, &target_container)?;
    let key = PairKey(pair_key);
    set_pair_key(store, &source_store, key)?;
    report.container = target_container.clone();
    report.source_store = source_store.clone();
    report.source_container = source_container.clone();
    let existing = store.registry().by_name(&target_container);
    let mut last = None;
    let mut stage = None;
    if let Some(ci) = &existing {
        match (&ci.rec.replica, mode) {
            (Some(info), _) => {
                if info.source_store != source_store || info.source_container != source_container {
                    return Err(ReplicaError::Refused(format!(
                        "container '{target_container}' is a replica of '{}' of store {}, \
                         not of '{source_container}' of store {source_store}",
                        info.source_container, info.source_store
                    )));
                }
                last = info.last.map(|p| (p.source_branch, p.source_version));
            }
            (None, Mode::Failback) => {}
            (None, Mode::Normal) => {
                return Err(ReplicaError::Refused(format!(
                    "container '{target_container}' exists and is not a replica; choose \
                     another target name (or, to send a promoted replica back, --failback)"
                )))
            }
        }
        stage = staging(store, ci.id())?;
        if let Some(s) = &stage {
            if s.source_store != source_store || s.source_container != source_container {
                abort(store, ci.id())?;
                stage = None;
            }
        }
    }
    send(
        w,
        &Msg::State {
            target_store: store.config().store_id.clone(),
            last,
            staging: stage.as_ref().map(|s| Staging {
                plan_id: s.plan_id,
                base: s.base,
                points: s.points.iter().map(PointRec::meta).collect(),
                point: s.point,
                items: s.items,
            }),
        },
    )?;
    let Msg::Plan {
        plan_id,
        base,
        base_local,
        points,
        resume,
        root,
    } = next(r, &mut report)?
    else {
        return Err(ReplicaError::Protocol("expected a plan".into()));
    };
    // Into the container this one was promoted from: its own version `base_local` is
    // the base (the state both stores last shared).
    let failback_into = mode == Mode::Failback
        && existing
            .as_ref()
            .is_some_and(|c| c.rec.replica.is_none() && base_local.is_some());
    let mut sess = Session {
        store,
        key,
        tag: key.tag(),
        interactive,
        report,
    };
    let (cid, mut st) = match (resume, stage) {
        (true, Some(s)) if s.plan_id == plan_id => {
            sess.report.resumed = true;
            let cid = existing
                .as_ref()
                .map(|c| c.id())
                .ok_or_else(|| ReplicaError::Protocol("resume without a container".into()))?;
            (cid, s)
        }
        (true, _) => {
            return Err(ReplicaError::Protocol(
                "the sender resumes a transfer this store does not have".into(),
            ))
        }
        (false, old) => {
            if let (Some(_), Some(ci)) = (old, &existing) {
                abort(store, ci.id())?;
            }
            if !failback_into && base.is_some() && base != last {
                return Err(ReplicaError::Refused(format!(
                    "the replica's newest point is {last:?} but the sender's base is {base:?}"
                )));
            }
            begin(
                store,
                &target_container,
                &source_store,
                &source_container,
                plan_id,
                base,
                base_local,
                failback_into,
                &points,
                Ino(root),
            )?
        }
    };
    loop {
        match next(r, &mut sess.report)? {
            Msg::Have { wires } => {
                let mut bits = vec![0u8; wires.len().div_ceil(8)];
                for (i, wid) in wires.iter().enumerate() {
                    if local_chunk(store, sess.tag, wid)?.is_some() {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                send(w, &Msg::HaveReply { bits })?;
            }
            Msg::Batch {
                point,
                first_item,
                n_items,
                items,
                n_chunks,
                chunks,
            } => {
                if point != st.point || first_item != st.items {
                    return Err(ReplicaError::Protocol(format!(
                        "batch of point {point} from change {first_item}, but the receiver \
                         is at point {} change {}",
                        st.point, st.items
                    )));
                }
                let items = wire::decode_items(&items, n_items)?;
                let chunks = wire::unpack_chunks(&chunks, n_chunks)?;
                let bad = sess.apply(cid, &mut st, &items, chunks)?;
                if !bad.is_empty() && !sess.interactive {
                    return Err(ReplicaError::Damaged {
                        wire: bad[0].to_string(),
                        got: 0,
                    });
                }
                send(
                    w,
                    &Msg::BatchAck {
                        items_done: st.items,
                        bad,
                    },
                )?;
                progress(&sess.report);
            }
            Msg::PointEnd { point, items } => {
                if point != st.point || items != st.items {
                    return Err(ReplicaError::Protocol(format!(
                        "point {point} ended after {items} changes; {} arrived",
                        st.items
                    )));
                }
                store.committer.commit(|c| {
                    st.done.push(c.version.0);
                    st.point += 1;
                    st.items = 0;
                    put_staging(c, cid, &st);
                    Ok::<_, ReplicaError>(())
                })?;
            }
            Msg::Finish => {
                if st.point as usize != st.points.len() {
                    return Err(ReplicaError::Protocol(format!(
                        "finish after {} of {} points",
                        st.point,
                        st.points.len()
                    )));
                }
                publish(store, cid, &st, &mut sess.report)?;
                let json = serde_json::to_string(&sess.report).unwrap_or_default();
                send(w, &Msg::Published { json })?;
                // The sender may ask for a verification of what was published.
                if sess.interactive {
                    if let Some((Msg::Verify, _)) = wire::read_msg(r)? {
                        let reg = store.registry();
                        let ci = reg
                            .get(cid)
                            .ok_or_else(|| ReplicaError::NoContainer(cid.to_string()))?;
                        let d =
                            super::verify::digests(store, &ci.read_point, ci.root(), &sess.key)?;
                        send(
                            w,
                            &Msg::VerifyReply {
                                digests: super::verify::encode(&d),
                            },
                        )?;
                    }
                }
                return Ok(sess.report);
            }
            Msg::Error { message } => return Err(ReplicaError::Peer(message)),
            m => return Err(ReplicaError::Protocol(format!("unexpected message {m:?}"))),
        }
    }
}

/// Creates the staging branch (and, the first time, the replica container).
#[allow(clippy::too_many_arguments)]
fn begin(
    store: &Store,
    name: &str,
    source_store: &str,
    source_container: &str,
    plan_id: u64,
    base: Option<(u64, u64)>,
    base_local: Option<u64>,
    failback: bool,
    points: &[PointMeta],
    root: Ino,
) -> Result<(ContainerId, StagingRec)> {
    check_ino(root)?;
    store.commit_registry(|c, reg| {
        let rec = match reg.by_name(name) {
            Some(ci) => {
                if ci.rec.root != root.0 {
                    return Err(ReplicaError::Refused(format!(
                        "container '{name}' has root inode {}, the source's is {root}: \
                         not the same tree",
                        ci.rec.root
                    )));
                }
                ci.rec.clone()
            }
            None => {
                if base.is_some() {
                    return Err(ReplicaError::Refused(format!(
                        "no replica container '{name}' here for an incremental stream; \
                         send a full stream first"
                    )));
                }
                let rec = create_replica(c, name, source_store, source_container, root)?;
                reg.upsert(rec.clone(), Some(containers::head_branch_record(&rec)));
                rec
            }
        };
        let fork = match (base, base_local) {
            (None, _) => None,
            (Some(_), Some(v)) if failback => {
                if v < rec.history_floor {
                    return Err(ReplicaError::Refused(format!(
                        "version {v} of container '{name}' was pruned by its retention"
                    )));
                }
                Some((rec.branch_at(Version(v)).0, v))
            }
            (Some(_), _) => {
                let last = rec.replica.as_ref().and_then(|r| r.last).ok_or_else(|| {
                    ReplicaError::Refused(format!("replica '{name}' has no point yet"))
                })?;
                Some((last.branch, last.version))
            }
        };
        let b = c.alloc_branch();
        let branch = BranchRecord {
            id: b.0,
            container: rec.id,
            parent: fork,
            created_version: c.version.0,
            created: c.time.sec,
            purpose: format!("receive from {source_container} of store {source_store}"),
        };
        containers::put_branch(c, &branch);
        reg.add_branch(branch);
        let st = StagingRec {
            plan_id,
            branch: b.0,
            source_store: source_store.into(),
            source_container: source_container.into(),
            base,
            failback,
            points: points.iter().map(PointRec::of).collect(),
            point: 0,
            items: 0,
            done: Vec::new(),
            max_ino: root.0,
        };
        put_staging(c, ContainerId(rec.id), &st);
        Ok((ContainerId(rec.id), st))
    })
}

/// A new, empty, read-only replica container whose root has the source's inode number.
fn create_replica(
    c: &mut Commit<'_>,
    name: &str,
    source_store: &str,
    source_container: &str,
    root: Ino,
) -> Result<ContainerRecord> {
    let mut rec = containers::create_at(
        c,
        name,
        Default::default(),
        containers::RootOwner::default(),
        Some(root),
    )?;
    rec.replica = Some(ReplicaInfo {
        source_store: source_store.into(),
        source_container: source_container.into(),
        last: None,
    });
    containers::put_container(c, &rec);
    Ok(rec)
}

impl Session<'_> {
    /// Verifies and stores a batch's chunks and applies its changes in one commit. Returns
    /// the wire ids of chunks that did not verify (then nothing was committed).
    fn apply(
        &mut self,
        cid: ContainerId,
        st: &mut StagingRec,
        items: &[Item],
        chunks: Vec<(WireId, Vec<u8>)>,
    ) -> Result<Vec<WireId>> {
        let store = self.store;
        let mut bad = Vec::new();
        let mut ids: HashMap<WireId, ChunkId> = HashMap::new();
        for (wid, data) in &chunks {
            if self.key.wire_id(data) != *wid {
                bad.push(*wid);
                continue;
            }
            ids.insert(*wid, store.chunks.hasher().id(data));
        }
        if !bad.is_empty() {
            self.report.chunks_rejected += bad.len() as u64;
            log::warn!(
                "replication: {} chunk(s) arrived damaged (first {}); asking again",
                bad.len(),
                bad[0]
            );
            return Ok(bad);
        }
        // Chunks the batch names but did not carry: this store has them already.
        let mut known: Vec<(WireId, ChunkId)> = Vec::new();
        for it in items {
            if let Item::Extents { changes, .. } = it {
                for x in changes.iter().filter_map(|(_, x)| x.as_ref()) {
                    if ids.contains_key(&x.wire) || known.iter().any(|k| k.0 == x.wire) {
                        continue;
                    }
                    let id = local_chunk(store, self.tag, &x.wire)?.ok_or_else(|| {
                        ReplicaError::Refused(format!(
                            "the stream names chunk {} without sending it, and this store \
                             does not have it (was an earlier stream skipped?)",
                            x.wire
                        ))
                    })?;
                    known.push((x.wire, id));
                }
            }
        }
        let known_ids: Vec<ChunkId> = known.iter().map(|k| k.1).collect();
        let (held, present) = store.chunks.hold_existing(&known_ids)?;
        if let Some(i) = present.iter().position(|p| !p) {
            store.chunks.release(held);
            return Err(ReplicaError::Refused(format!(
                "chunk {} went away while the batch was received (GC); run again",
                known[i].0
            )));
        }
        ids.extend(known);
        let new: Vec<NewChunk<'_>> = chunks
            .iter()
            .map(|(w, d)| NewChunk {
                id: ids[w],
                data: d,
                next: None,
            })
            .collect();
        let compression = store
            .registry()
            .get(cid)
            .map(|c| c.rec.settings.compression)
            .unwrap_or_default();
        let claim = match store.chunks.prepare(&new, compression, 2) {
            Ok(c) => c,
            Err(e) => {
                store.chunks.release(held);
                return Err(e.into());
            }
        };
        let rp = store
            .registry()
            .read_point(BranchId(st.branch), Version::LATEST);
        let res = store.committer.commit(|c| {
            let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
            for it in items {
                apply_item(store, c, &rp, it, &ids, &mut deltas, &mut st.max_ino)?;
            }
            store.chunks.add_refs(c, cid, &deltas)?;
            for (wid, _) in &chunks {
                c.txn.put(
                    Cf::Meta,
                    wire_key(self.tag, wid),
                    ids[wid].to_bytes().to_vec(),
                );
            }
            let mut next = st.clone();
            next.items += items.len() as u64;
            c.reserve_inos_through(Ino(next.max_ino));
            put_staging(c, cid, &next);
            Ok::<_, ReplicaError>(next)
        });
        store.chunks.release(claim);
        store.chunks.release(held);
        *st = res?;
        self.report.changes += items.len() as u64;
        self.report.chunks_received += chunks.len() as u64;
        self.report.chunk_bytes_received += chunks.iter().map(|c| c.1.len() as u64).sum::<u64>();
        Ok(Vec::new())
    }
}

fn apply_item(
    store: &Store,
    c: &mut Commit<'_>,
    rp: &ReadPoint,
    it: &Item,
    ids: &HashMap<WireId, ChunkId>,
    deltas: &mut HashMap<ChunkId, i64>,
    max_ino: &mut u64,
) -> Result<()> {
    let v = c.version;
    match it {
        Item::Inode { ino, rec, xattrs } => {
            check_ino(*ino)?;
            *max_ino = (*max_ino).max(ino.0);
            mvcc::put(
                &mut c.txn,
                Cf::Inodes,
                rp,
                *ino,
                &[],
                v,
                Some(&rec.encode()),
            );
            for (name, val) in xattrs {
                if name.is_empty() || name.len() > 255 {
                    return Err(ReplicaError::Protocol("an xattr name out of range".into()));
                }
                let suffix = crate::keys::name_suffix(name);
                mvcc::put(&mut c.txn, Cf::Xattrs, rp, *ino, &suffix, v, val.as_deref());
            }
        }
        Item::Dirents { dir, changes } => {
            check_ino(*dir)?;
            for (name, d) in changes {
                check_name(name, "an entry")?;
                if let Some(d) = d {
                    check_ino(d.ino)?;
                    *max_ino = (*max_ino).max(d.ino.0);
                }
                let suffix = crate::keys::name_suffix(name);
                let enc = d.map(|d| d.encode());
                mvcc::put(
                    &mut c.txn,
                    Cf::Dirents,
                    rp,
                    *dir,
                    &suffix,
                    v,
                    enc.as_deref(),
                );
            }
        }
        Item::Extents { ino, gen, changes } => {
            let mut writes: BTreeMap<u64, Option<ExtentRec>> = BTreeMap::new();
            for (off, x) in changes {
                let rec = x.map(|x| ExtentRec {
                    len: x.len,
                    chunk: ids[&x.wire],
                    chunk_off: x.chunk_off,
                    flags: x.flags,
                });
                if writes.insert(*off, rec).is_some() {
                    return Err(ReplicaError::Protocol(format!(
                        "inode {ino}: two changes of the extent at {off}"
                    )));
                }
                if let Some(r) = &rec {
                    *deltas.entry(r.chunk).or_default() += 1;
                }
            }
            crate::extents::write(&mut c.txn, rp, *ino, *gen, v, &writes)?;
        }
        Item::Gone { ino } => {
            check_ino(*ino)?;
            let was = mvcc::txn_get_live(&c.txn, Cf::Inodes, rp, *ino, &[], v)?;
            let is_dir = match was {
                Some(raw) => {
                    crate::records::InodeRec::decode(&raw)
                        .map_err(|e| crate::kv::KvError::Corrupt(format!("inode {ino}: {e}")))?
                        .kind
                        == FileKind::Directory
                }
                None => false,
            };
            if is_dir {
                for name in crate::tree::entries(store, rp, *ino)?.keys() {
                    let suffix = crate::keys::name_suffix(name);
                    mvcc::put(&mut c.txn, Cf::Dirents, rp, *ino, &suffix, v, None);
                }
            }
            mvcc::put(&mut c.txn, Cf::Inodes, rp, *ino, &[], v, None);
        }
    }
    Ok(())
}

/// Makes the received points the replica's: one registry commit.
fn publish(
    store: &Store,
    cid: ContainerId,
    st: &StagingRec,
    report: &mut ReceiveReport,
) -> Result<()> {
    let b = BranchId(st.branch);
    let reg = store.registry();
    let ci = reg
        .get(cid)
        .ok_or_else(|| ReplicaError::NoContainer(cid.to_string()))?;
    // Counted by a walk that visits each inode once (a stream could name a directory
    // twice; `tree::count` assumes a tree).
    let walked =
        super::delta::TreeState::load(store, reg.read_point(b, Version::LATEST), ci.root())?;
    let counted = crate::records::TreeCounters {
        files: walked
            .inodes
            .values()
            .filter(|r| r.kind == FileKind::RegularFile)
            .count() as u64,
        logical_bytes: walked.logical_bytes(),
    };
    report.old_view = ci.view;
    drop(reg);
    let lastp = st
        .points
        .last()
        .ok_or_else(|| ReplicaError::Protocol("a plan without points".into()))?;
    let last_local = *st.done.last().unwrap_or(&0);
    let names = store.commit_registry(|c, reg| {
        let ci = reg
            .get(cid)
            .ok_or_else(|| ReplicaError::NoContainer(cid.to_string()))?;
        let mut rec = ci.rec.clone();
        let mut names = Vec::new();
        for (p, &v) in st.points.iter().zip(&st.done) {
            if !p.name.is_empty() {
                check_name(p.name.as_bytes(), "a point")?;
            }
            match PointKind::from_u8(p.kind) {
                Some(PointKind::Bookmark) => {
                    containers::put_bookmark(
                        c,
                        &BookmarkRecord {
                            name: p.name.clone(),
                            container: rec.id,
                            kind: p.bookmark_kind.clone(),
                            version: v,
                            time: p.time,
                            time_nsec: p.time_nsec,
                            branch: b.0,
                        },
                    );
                    names.push(format!("bookmark {}", p.name));
                }
                Some(PointKind::Snapshot) => {
                    // Snapshot names are store-wide: the source's name, unless taken here.
                    let mut name = p.name.clone();
                    let mut n = 1;
                    while reg.snapshot_by_name(&name).is_some() {
                        n += 1;
                        name = format!("{}-{}-{n}", p.name, rec.name);
                    }
                    let snap = SnapshotRecord {
                        id: containers::alloc_snapshot_id(c)?,
                        name: name.clone(),
                        container: rec.id,
                        mode: SnapshotMode::Ro,
                        base_branch: b.0,
                        base_version: v,
                        branch: None,
                        created: c.time.sec,
                        created_version: c.version.0,
                        at_time: p.time,
                        origin: format!("replica of {}@{}", st.source_container, p.name),
                    };
                    containers::put_snapshot(c, &snap);
                    reg.insert_snapshot(snap);
                    names.push(format!("snapshot {name}"));
                }
                _ => names.push(format!("state of {}", crate::points::format_time(p.time))),
            }
        }
        rec.prev_heads.push((rec.head, c.version.0 - 1));
        rec.head = b.0;
        rec.live_view = SNAPSHOT_VIEW_BASE + containers::alloc_snapshot_id(c)?;
        let point = ReplicatedPoint {
            source_branch: lastp.source_branch,
            source_version: lastp.source_version,
            source_time: lastp.time,
            branch: b.0,
            version: last_local,
        };
        rec.replica = Some(ReplicaInfo {
            source_store: st.source_store.clone(),
            source_container: st.source_container.clone(),
            last: Some(point),
        });
        rec.promoted_from = None;
        containers::put_container(c, &rec);
        c.set_tree_counters(&reg.read_point(b, Version::LATEST), counted);
        c.reserve_inos_through(Ino(st.max_ino));
        c.txn
            .delete(Cf::Meta, MetaKey::ReplicaStaging(cid).encode());
        reg.upsert(rec, None);
        Ok::<_, ReplicaError>(names)
    })?;
    store.sync()?;
    log::info!(
        "replica '{}' now at {} of '{}' ({} point(s))",
        report.container,
        crate::points::format_time(lastp.time),
        st.source_container,
        names.len()
    );
    report.points = names;
    report.published = true;
    Ok(())
}

/// Makes a replica an ordinary, writable container (failover). Its origin is kept, so a
/// later replication back to that store sends only what changed since.
pub fn promote(store: &Store, name: &str) -> Result<ContainerRecord> {
    store.commit_registry(|c, reg| {
        let ci = reg
            .by_name(name)
            .ok_or_else(|| ReplicaError::NoContainer(name.into()))?;
        let mut rec = ci.rec.clone();
        let Some(info) = rec.replica.take() else {
            return Err(ReplicaError::Refused(format!(
                "container '{name}' is not a replica"
            )));
        };
        if staging(store, ci.id())?.is_some() {
            return Err(ReplicaError::Refused(format!(
                "a receive into '{name}' is unfinished: finish it (run the replication \
                 again) or discard it (`dedupfs receive --abort`) first"
            )));
        }
        rec.promoted_from = Some(info);
        containers::put_container(c, &rec);
        reg.upsert(rec.clone(), None);
        Ok(rec)
    })
}
