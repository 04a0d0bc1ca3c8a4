//! The sending side: plans which points of a container the target lacks, then streams
//! each point's changes ([`super::delta`]) in batches with the chunks the target does not
//! hold (asked per batch, or over a one-way pipe, every chunk the changes reference that
//! this stream has not carried yet).
//!
//! Plan then execute: the plan (base, points with their source coordinates) is fixed
//! before anything moves and kept by the receiver with its cursor, so a resumed run sends
//! the same changes from where the receiver stopped; a point the plan names must still be
//! readable here (not pruned), or the run starts a new plan.

use super::delta::{self, Change, TreeState};
use super::wire::{self, Mode, Msg};
use super::{own_key, PointKind, PointMeta, ReplicaError, Result};
use crate::containers::ContainerInfo;
use crate::ids::{BranchId, Version};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct SendOptions {
    pub target_container: String,
    pub mode: Mode,
    /// Bytes per second on the wire (`None`: unlimited).
    pub bwlimit: Option<u64>,
    /// zstd level of chunk bytes on the wire (1: the level that keeps up with a local
    /// pipe; stronger levels shrink the stream by about 2 % and cost twice the CPU).
    pub level: i32,
    /// One-way stream: the base point, as this store names it (`None`: a full stream).
    pub since: Option<String>,
    /// Test hook: damage the bytes of the first chunk of the first `corrupt` batches.
    pub corrupt: u32,
    /// After publishing, compare both sides' trees of the newest point (interactive only).
    pub verify: bool,
}

impl SendOptions {
    pub fn new(target_container: &str) -> SendOptions {
        SendOptions {
            target_container: target_container.into(),
            mode: Mode::Normal,
            bwlimit: None,
            level: 1,
            since: None,
            corrupt: 0,
            verify: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendProgress {
    pub point: usize,
    pub points: usize,
    pub changes: u64,
    pub chunks_sent: u64,
    pub wire_bytes: u64,
    /// Logical bytes of changed extents handled so far, and in all.
    pub logical_done: u64,
    pub logical_total: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendReport {
    pub container: String,
    pub target_container: String,
    pub target_store: String,
    pub points: Vec<String>,
    pub base: Option<String>,
    pub resumed: bool,
    pub changes: u64,
    /// Distinct chunks the changes reference, those sent, and their raw bytes.
    pub chunks_referenced: u64,
    pub chunks_sent: u64,
    pub chunk_bytes_sent: u64,
    pub chunks_resent: u64,
    /// All bytes written to the stream.
    pub wire_bytes: u64,
    /// Logical bytes of the changed extents (what a copy without dedup would move).
    pub logical_bytes: u64,
    /// The newest point's logical size (all its files).
    pub tree_bytes: u64,
    pub seconds: f64,
    /// What the receiver reported (interactive runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<serde_json::Value>,
    /// The comparison of both trees (`--verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<super::verify::VerifyReport>,
}

pub(super) struct Link<'a> {
    r: Option<&'a mut dyn Read>,
    w: &'a mut dyn Write,
    pub(super) bytes: u64,
    start: Instant,
    bwlimit: Option<u64>,
}

/// A writer that never gets ahead of `rate` bytes per second since `start` (writes are
/// cut into 64 KiB pieces, so a big batch is paced too, not sent in one burst).
struct Paced<'a, 'b> {
    link: &'a mut Link<'b>,
}

impl std::io::Write for Paced<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let piece = &buf[..buf.len().min(64 << 10)];
        let n = self.link.w.write(piece)?;
        self.link.bytes += n as u64;
        if let Some(rate) = self.link.bwlimit.filter(|r| *r > 0) {
            let due = std::time::Duration::from_secs_f64(self.link.bytes as f64 / rate as f64);
            let spent = self.link.start.elapsed();
            if due > spent {
                std::thread::sleep(due - spent);
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.link.w.flush()
    }
}

impl Link<'_> {
    pub(super) fn send(&mut self, m: &Msg) -> Result<()> {
        wire::write_msg(&mut Paced { link: self }, m)?;
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(ReplicaError::Io)
    }
    pub(super) fn recv(&mut self) -> Result<Msg> {
        self.flush()?;
        let r = self
            .r
            .as_mut()
            .ok_or_else(|| ReplicaError::Protocol("no reply channel".into()))?;
        match wire::read_msg(*r)? {
            Some((Msg::Error { message }, _)) => Err(ReplicaError::Peer(message)),
            Some((m, _)) => Ok(m),
            None => Err(ReplicaError::Protocol(
                "the receiver hung up (what it received is kept; run again to resume)".into(),
            )),
        }
    }
}

/// Whether `(branch, version)` of the container can still be read exactly (not cut by
/// retention, or kept as a point).
fn readable(store: &Store, ci: &ContainerInfo, b: u64, v: u64) -> Result<bool> {
    if v >= ci.rec.history_floor {
        return Ok(true);
    }
    if ci.rec.kept_points.iter().any(|p| p.1 == v) {
        return Ok(true);
    }
    if crate::containers::bookmarks(store, ci.id())?
        .iter()
        .any(|k| k.version == v && k.branch == b)
    {
        return Ok(true);
    }
    Ok(store.registry().snapshots().iter().any(|s| {
        s.snapshot
            .as_ref()
            .is_some_and(|r| r.container == ci.rec.id && r.base_branch == b && r.base_version == v)
    }))
}

/// The points after `after` (a source version) to send, oldest first, ending with the
/// live tree as of now. A one-way stream (`live_last` false) ends at the newest bookmark
/// or snapshot instead, when there is one: the next stream names it with `--since`.
fn plan_points(
    store: &Store,
    ci: &ContainerInfo,
    after: Option<u64>,
    live_last: bool,
) -> Result<Vec<PointMeta>> {
    let after = after.unwrap_or(0);
    // The live version first: a point made after it is left for the next run, never
    // skipped (it would be older than the live point this run sends).
    let live = store.committer.head().0;
    let mut pts = Vec::new();
    for b in crate::containers::bookmarks(store, ci.id())? {
        if b.version > after && b.version <= live {
            pts.push(PointMeta {
                kind: PointKind::Bookmark,
                name: b.name.clone(),
                bookmark_kind: b.kind.clone(),
                source_branch: b.branch,
                source_version: b.version,
                time: b.time,
                time_nsec: b.time_nsec,
            });
        }
    }
    for s in store.registry().snapshots() {
        let Some(r) = &s.snapshot else { continue };
        if r.container != ci.rec.id
            || r.branch.is_some()
            || r.base_version <= after
            || r.base_version > live
        {
            continue;
        }
        pts.push(PointMeta {
            kind: PointKind::Snapshot,
            name: r.name.clone(),
            bookmark_kind: String::new(),
            source_branch: r.base_branch,
            source_version: r.base_version,
            time: r.at_time,
            time_nsec: 0,
        });
    }
    pts.sort_by_key(|p| (p.source_version, p.kind as u8, p.name.clone()));
    if !live_last && !pts.is_empty() {
        return Ok(pts);
    }
    let now = crate::records::Timestamp::now();
    pts.push(PointMeta {
        kind: PointKind::Live,
        name: String::new(),
        bookmark_kind: String::new(),
        source_branch: ci.rec.head,
        source_version: live,
        time: now.sec,
        time_nsec: now.nsec,
    });
    Ok(pts)
}

fn random_id() -> u64 {
    super::PairKey::random()
        .map(|k| u64::from_be_bytes(k.0[..8].try_into().unwrap_or([1; 8])))
        .unwrap_or_else(|_| crate::records::Timestamp::now().as_nanos() as u64)
}

/// Runs one replication of container `name` to the receiver at the other end of `w`
/// (and `r`, when the receiver can answer).
pub fn run<'a>(
    store: &Store,
    name: &str,
    opts: &SendOptions,
    r: Option<&'a mut dyn Read>,
    w: &'a mut dyn Write,
    progress: &mut dyn FnMut(&SendProgress),
) -> Result<SendReport> {
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ReplicaError::NoContainer(name.into()))?;
    let key = own_key(store)?;
    let interactive = r.is_some();
    let mut link = Link {
        r,
        w,
        bytes: 0,
        start: Instant::now(),
        bwlimit: opts.bwlimit,
    };
    let mut rep = SendReport {
        container: name.into(),
        target_container: opts.target_container.clone(),
        ..Default::default()
    };
    let res = run_inner(
        store,
        &ci,
        key,
        opts,
        interactive,
        &mut link,
        &mut rep,
        progress,
    );
    rep.wire_bytes = link.bytes;
    rep.seconds = link.start.elapsed().as_secs_f64();
    if let Err(e) = &res {
        if !matches!(e, ReplicaError::Peer(_) | ReplicaError::Io(_)) {
            let _ = link.send(&Msg::Error {
                message: e.to_string(),
            });
            let _ = link.flush();
        }
    }
    res.map(|_| rep)
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    store: &Store,
    ci: &ContainerInfo,
    key: super::PairKey,
    opts: &SendOptions,
    interactive: bool,
    link: &mut Link<'_>,
    rep: &mut SendReport,
    progress: &mut dyn FnMut(&SendProgress),
) -> Result<()> {
    link.send(&Msg::Hello {
        proto: super::PROTOCOL,
        source_store: store.config().store_id.clone(),
        source_container: ci.rec.name.clone(),
        target_container: opts.target_container.clone(),
        pair_key: key.0,
        chunk_max: store.config().chunking.max,
        interactive,
        mode: opts.mode,
    })?;
    let (target_store, last, staging) = if interactive {
        match link.recv()? {
            Msg::State {
                target_store,
                last,
                staging,
            } => (target_store, last, staging),
            m => return Err(ReplicaError::Protocol(format!("expected state, got {m:?}"))),
        }
    } else {
        let last = match &opts.since {
            None => None,
            Some(spec) => {
                let p = crate::points::resolve(store, &ci.rec, spec)?;
                Some((p.branch.0, p.version.0))
            }
        };
        (String::new(), last, None)
    };
    rep.target_store = target_store.clone();
    // Failback: the base is the point this container was promoted at, which the target
    // holds as its own version.
    let mut base = last;
    let mut base_local = None;
    if opts.mode == Mode::Failback && last.is_none() {
        let from = ci.rec.promoted_from.as_ref().ok_or_else(|| {
            ReplicaError::Refused(format!(
                "container '{}' was not promoted from a replica: nothing to fail back",
                ci.rec.name
            ))
        })?;
        if interactive && from.source_store != target_store {
            return Err(ReplicaError::Refused(format!(
                "container '{}' was promoted from a replica of store {}, not of the target \
                 store {target_store}",
                ci.rec.name, from.source_store
            )));
        }
        let p = from.last.ok_or_else(|| {
            ReplicaError::Refused("the promoted replica had received no point".into())
        })?;
        base = Some((p.branch, p.version));
        base_local = Some(p.source_version);
    }
    if let Some((b, v)) = base {
        if !readable(store, ci, b, v)? {
            return Err(ReplicaError::Refused(format!(
                "the target's newest point (version {v}) was pruned here by retention; \
                 keep a bookmark per replication or send a full stream to a new replica"
            )));
        }
    }
    // The receiver's cursor is checked, not trusted: its points must be this container's
    // and readable here, its position inside the plan.
    let branches = store.registry().branches_of(ci.id());
    let resumable = staging.as_ref().filter(|s| {
        (s.point as usize) <= s.points.len()
            && s.points.iter().all(|p| {
                branches.contains(&BranchId(p.source_branch))
                    && p.source_version <= store.committer.head().0
            })
            && s.base == base
            && s.points
                .iter()
                .all(|p| readable(store, ci, p.source_branch, p.source_version).unwrap_or(false))
    });
    let (plan_id, points, start_point, start_items) = match resumable {
        Some(s) => (s.plan_id, s.points.clone(), s.point as usize, s.items),
        None => (
            random_id(),
            plan_points(store, ci, base.map(|b| b.1), interactive)?,
            0,
            0,
        ),
    };
    rep.resumed = resumable.is_some();
    // Retention keeps what this run reads from here on; checked again after pinning, since
    // a prune that recorded its floor before the pin could not have kept these points.
    let reads: Vec<(u64, u64)> = base
        .iter()
        .copied()
        .chain(points.iter().map(|p| (p.source_branch, p.source_version)))
        .collect();
    let _pin = super::Pin::new(ci.id(), &reads);
    let now = store
        .registry()
        .get(ci.id())
        .ok_or_else(|| ReplicaError::NoContainer(ci.rec.name.clone()))?;
    for &(b, v) in &reads {
        if !readable(store, &now, b, v)? {
            return Err(ReplicaError::Refused(format!(
                "version {v} of '{}' was pruned by retention while this run planned; run \
                 again",
                ci.rec.name
            )));
        }
    }
    rep.base = base.map(|(_, v)| format!("version {v}"));
    link.send(&Msg::Plan {
        plan_id,
        base,
        base_local,
        points: points.clone(),
        resume: resumable.is_some(),
        root: ci.rec.root,
    })?;
    let root = ci.root();
    let reg = store.registry();
    let tree_at = |b: u64, v: u64| -> Result<TreeState> {
        TreeState::load(store, reg.read_point(BranchId(b), Version(v)), root)
    };
    let mut prev = match (start_point, base) {
        (0, None) => TreeState::empty(root),
        (0, Some((b, v))) => tree_at(b, v)?,
        (i, _) => tree_at(points[i - 1].source_branch, points[i - 1].source_version)?,
    };
    let mut st = super::stream::Streamer {
        store,
        key,
        interactive,
        opts,
        present: HashSet::new(),
        seen: HashMap::new(),
        corrupt_left: opts.corrupt,
        prog: SendProgress {
            points: points.len(),
            ..Default::default()
        },
    };
    for (i, p) in points.iter().enumerate().skip(start_point) {
        let new = tree_at(p.source_branch, p.source_version)?;
        let mut changes = Vec::new();
        delta::changes(store, &prev, &new, &mut |c| {
            changes.push(c);
            Ok(())
        })?;
        let skip = if i == start_point { start_items } else { 0 };
        if skip > changes.len() as u64 {
            return Err(ReplicaError::Protocol(format!(
                "the receiver has {skip} changes of point {i}, which has {}",
                changes.len()
            )));
        }
        st.prog.point = i;
        st.prog.logical_total += changes[skip as usize..]
            .iter()
            .map(|c| match c {
                Change::Extents { changes, .. } => changes
                    .iter()
                    .filter_map(|(_, x)| x.map(|x| x.len as u64))
                    .sum(),
                _ => 0,
            })
            .sum::<u64>();
        st.point(link, rep, i as u32, &changes, skip as usize, progress)?;
        link.send(&Msg::PointEnd {
            point: i as u32,
            items: changes.len() as u64,
        })?;
        rep.tree_bytes = new.logical_bytes();
        rep.points.push(match p.kind {
            PointKind::Live => format!("state of {}", crate::points::format_time(p.time)),
            PointKind::Bookmark => format!("bookmark {}", p.name),
            PointKind::Snapshot => format!("snapshot {}", p.name),
        });
        prev = new;
    }
    link.send(&Msg::Finish)?;
    link.flush()?;
    if interactive {
        match link.recv()? {
            Msg::Published { json } => rep.receiver = serde_json::from_str(&json).ok(),
            m => {
                return Err(ReplicaError::Protocol(format!(
                    "expected published, got {m:?}"
                )))
            }
        }
        if opts.verify {
            let last = points
                .last()
                .ok_or_else(|| ReplicaError::Protocol("a plan without points".into()))?;
            let rp = reg.read_point(BranchId(last.source_branch), Version(last.source_version));
            link.send(&Msg::Verify)?;
            let mine = super::verify::digests(store, &rp, root, &key)?;
            let theirs = match link.recv()? {
                Msg::VerifyReply { digests } => super::verify::decode(&digests)?,
                m => {
                    return Err(ReplicaError::Protocol(format!(
                        "expected verify-reply, got {m:?}"
                    )))
                }
            };
            rep.verify = Some(super::verify::compare(store, &rp, root, &mine, &theirs)?);
        }
    }
    Ok(())
}
