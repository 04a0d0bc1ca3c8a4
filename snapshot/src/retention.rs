//! Retention: which history a container keeps, and pruning of the rest.
//!
//! A policy (container setting `retention`) is a comma-separated list of terms:
//! - `all=D`: keep every change for duration D (e.g. `24h`);
//! - `every=I/H`: beyond that, keep one point every I up to age H (e.g. `every=4h/48h`);
//! - `bookmarks=K/H`: keep bookmarks of kind K (`app`, `fs`, `user` or `any`) up to age H;
//!   without any `bookmarks=` term every bookmark is kept;
//! - `max=S`: keep at most S bytes of superseded data (e.g. `max=10GiB`), pruning oldest
//!   first — with `all=`, whichever limit is reached first wins.
//!
//! Pruning deletes record versions that no kept point can see: for each record, a version
//! older than the window survives only if it is the newest version at or before a kept
//! point (a tier point, a kept bookmark, a snapshot's base, a branch's fork point) or the
//! live state. Deleted extent versions release their chunk references; chunks that reach
//! zero become reclaimable by GC. The live state, snapshots and kept bookmarks are never
//! touched, and reads before the new floor are refused instead of answering wrongly.

use crate::{container, HistoryError, Result};
use dedupfs_core::containers::lock::{self, LockWindow};
use dedupfs_core::containers::ContainerError;
use dedupfs_core::containers::{self, ContainerInfo};
use dedupfs_core::history::{self, Family, Pruning};
use dedupfs_core::ids::{BranchId, Ino, Version};
use dedupfs_core::points::{format_time, parse_duration};
use dedupfs_core::records::Timestamp;
use dedupfs_core::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub all: Option<i64>,
    pub every: Vec<(i64, i64)>,
    pub bookmarks: Vec<(String, i64)>,
    pub max_bytes: Option<u64>,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

impl Policy {
    /// A policy as the `retention` setting stores it: `None` for "keep everything"
    /// (`forever`, `none` or empty), else the checked text.
    pub fn setting(s: &str) -> Result<Option<String>> {
        match s.trim() {
            "" | "none" | "forever" => Ok(None),
            p => {
                Policy::parse(p)?;
                Ok(Some(p.to_string()))
            }
        }
    }

    pub fn parse(s: &str) -> Result<Policy> {
        let bad = |t: &str, why: &str| {
            HistoryError::Invalid(format!(
                "retention term '{t}': {why} (see `dedupfs container set --help`)"
            ))
        };
        let mut p = Policy::default();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| bad(term, "expected KEY=VALUE"))?;
            match k.trim() {
                "all" => p.all = Some(parse_duration(v).ok_or_else(|| bad(term, "bad duration"))?),
                "every" => {
                    let (i, h) = v
                        .split_once('/')
                        .ok_or_else(|| bad(term, "expected INTERVAL/HORIZON"))?;
                    let i = parse_duration(i)
                        .filter(|&i| i > 0)
                        .ok_or_else(|| bad(term, "bad interval"))?;
                    let h = parse_duration(h).ok_or_else(|| bad(term, "bad horizon"))?;
                    p.every.push((i, h));
                }
                "bookmarks" => {
                    let (kind, h) = v
                        .split_once('/')
                        .ok_or_else(|| bad(term, "expected KIND/HORIZON"))?;
                    if !["app", "fs", "user", "any"].contains(&kind) {
                        return Err(bad(term, "kind must be app, fs, user or any"));
                    }
                    let h = parse_duration(h).ok_or_else(|| bad(term, "bad horizon"))?;
                    p.bookmarks.push((kind.to_string(), h));
                }
                "max" => p.max_bytes = Some(parse_size(v).ok_or_else(|| bad(term, "bad size"))?),
                _ => return Err(bad(term, "unknown key (all, every, bookmarks, max)")),
            }
        }
        if p.all.is_none() && p.max_bytes.is_none() {
            return Err(HistoryError::Invalid(format!(
                "retention policy '{s}' needs all=DURATION or max=SIZE"
            )));
        }
        Ok(p)
    }

    fn keeps_bookmark(&self, kind: &str, age: i64) -> bool {
        self.bookmarks.is_empty()
            || self
                .bookmarks
                .iter()
                .any(|(k, h)| (k == "any" || k == kind) && age <= *h)
    }
}

/// What `retention show` and `retention prune` report.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct RetentionReport {
    pub container: String,
    pub policy: Option<String>,
    /// The oldest moment the container can be read as of (seconds since the epoch).
    pub window_start: i64,
    pub window_start_text: String,
    pub bookmarks: usize,
    pub snapshots: usize,
    /// Logical bytes of superseded or deleted data that history keeps readable.
    pub history_bytes: u64,
    /// Set by a prune.
    pub pruned_versions: u64,
    pub released_extents: u64,
    pub released_bytes: u64,
    pub bookmarks_removed: Vec<String>,
    /// Pack bytes only this container's history references (nothing live reads them), as
    /// GC's last run found them: what pruning could release. Absent before GC ever ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_held_bytes: Option<u64>,
    /// Pack bytes GC can reclaim now in the whole store (not this container's alone:
    /// chunks are shared, so freed space belongs to the store).
    pub store_reclaimable_bytes: u64,
    /// The container's retention lock window now, if it is locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockWindow>,
    /// Set by a prune: the lock kept history the policy alone would have pruned (the
    /// policy's cut, a version; pruning stopped at the lock's floor instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_lock: Option<u64>,
}

/// The data generation of a file at a point (None: the file does not exist then).
fn gen_at(store: &Store, b: BranchId, ino: Ino, v: Version) -> Result<Option<u64>> {
    let rp = store.registry().read_point(b, v);
    Ok(crate::diff::inode(store, &rp, ino)?.map(|r| r.data_gen))
}

/// When version `v` (or the first one after it) was committed, in seconds: a binary
/// search of the timeline between `from` and `now`. `now` if nothing that new exists.
fn commit_time_of(store: &Store, v: Version, from: i64, now: Timestamp) -> Result<i64> {
    let ms = |t: i64| Timestamp {
        sec: t.div_euclid(1000),
        nsec: (t.rem_euclid(1000) * 1_000_000) as u32,
    };
    let (mut lo, mut hi) = (
        from.saturating_mul(1000) - 1000,
        now.sec.saturating_mul(1000) + 999,
    );
    if store.committer.version_at(ms(hi))?.is_none_or(|x| x < v) {
        return Ok(now.sec);
    }
    // Invariant: version_at(hi) >= v, version_at(lo) < v (or nothing).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if store.committer.version_at(ms(mid))?.is_some_and(|x| x >= v) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi.div_euclid(1000))
}

/// Superseded extent versions of a container: (version that superseded it, bytes). An
/// extent of an older data generation (the file was truncated to zero or replaced) is
/// superseded when the generation changed.
fn superseded(store: &Store, branches: &[BranchId]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut live: HashMap<(BranchId, Ino), Option<u64>> = HashMap::new();
    for &b in branches {
        history::walk_branch(store, Family::Extents, b, |r| {
            for w in r.versions.windows(2) {
                if let Some(e) = w[1].extent {
                    out.push((w[0].version.0, e.len as u64));
                }
            }
            let cur = match live.get(&(b, r.ino)) {
                Some(c) => *c,
                None => {
                    let c = gen_at(store, b, r.ino, Version::LATEST)?;
                    live.insert((b, r.ino), c);
                    c
                }
            };
            let newest = &r.versions[0];
            if cur != r.extent_gen {
                if let Some(e) = newest.extent {
                    out.push((
                        cur.unwrap_or(newest.version.0).max(newest.version.0),
                        e.len as u64,
                    ));
                }
            }
            Ok::<_, HistoryError>(())
        })?;
    }
    Ok(out)
}

fn report_base(store: &Store, ci: &ContainerInfo) -> Result<RetentionReport> {
    let branches = store.registry().branches_of(ci.id());
    let history_bytes = superseded(store, &branches)?.iter().map(|x| x.1).sum();
    let start = ci.rec.window_start();
    Ok(RetentionReport {
        container: ci.rec.name.clone(),
        policy: ci.rec.settings.retention.clone(),
        window_start: start,
        window_start_text: format_time(start),
        bookmarks: containers::bookmarks(store, ci.id())?.len(),
        snapshots: crate::snapshot::list(store, Some(&ci.rec.name))?.len(),
        history_bytes,
        history_held_bytes: dedupfs_core::stats::container_stats(store, ci.id())?
            .and_then(|s| s.history_held_bytes),
        store_reclaimable_bytes: dedupfs_core::stats::store_stats(store)?.reclaimable_bytes,
        lock: lock::window(store, &ci.rec)?,
        ..Default::default()
    })
}

pub fn show(store: &Store, container_name: &str) -> Result<RetentionReport> {
    let ci = container(store, container_name)?;
    report_base(store, &ci)
}

/// Prunes the container's history outside its policy (as of `now`).
pub fn prune(store: &Store, container_name: &str, now: Timestamp) -> Result<RetentionReport> {
    let _history = crate::history_lock();
    let ci = container(store, container_name)?;
    let Some(spec) = ci.rec.settings.retention.clone() else {
        return report_base(store, &ci);
    };
    let policy = Policy::parse(&spec)?;
    let cid = ci.id();
    let (branches, snaps, forks) = {
        let reg = store.registry();
        let branches = reg.branches_of(cid);
        let forks: Vec<(BranchId, Version)> = branches
            .iter()
            .filter_map(|b| reg.branch(*b).and_then(|r| r.parent))
            .map(|(p, v)| (BranchId(p), Version(v)))
            .collect();
        let snaps = crate::snapshot::list(store, Some(container_name))?;
        (branches, snaps, forks)
    };
    // The window by time, then narrowed by space.
    let mut cutoff = match policy.all {
        Some(d) => store
            .committer
            .version_at(Timestamp {
                sec: now.sec - d,
                nsec: now.nsec,
            })?
            .map(|v| v.0 + 1)
            .unwrap_or(0),
        None => 0,
    };
    if let Some(max) = policy.max_bytes {
        let mut s = superseded(store, &branches)?;
        s.sort_unstable_by_key(|x| std::cmp::Reverse(x.0));
        let mut held = 0u64;
        for (at, len) in s {
            held += len;
            if held > max {
                cutoff = cutoff.max(at + 1);
                break;
            }
        }
    }
    let cutoff = Version(cutoff.min(store.committer.head().0 + 1));
    // A retention lock wins over the policy: nothing inside its window is cut.
    let (cutoff, held_by_lock) = match lock::window(store, &ci.rec)? {
        Some(w) if w.cutoff() < cutoff => {
            log::info!(
                "retention of '{container_name}': the {} lock keeps history the policy would \
                 prune (policy cut v{}, lock floor v{})",
                w.mode.as_str(),
                cutoff.0,
                w.floor
            );
            (w.cutoff(), Some(cutoff.0))
        }
        _ => (cutoff, None),
    };
    if cutoff.0 <= ci.rec.history_floor {
        let mut r = report_base(store, &ci)?;
        r.held_by_lock = held_by_lock;
        return Ok(r);
    }
    // Points that stay readable, per branch.
    let mut keep: HashMap<BranchId, BTreeSet<Version>> = HashMap::new();
    let mut add = |b: BranchId, v: Version| {
        keep.entry(b).or_default().insert(v);
    };
    let head_at_cutoff = ci.rec.branch_at(Version(cutoff.0 - 1));
    add(head_at_cutoff, Version(cutoff.0 - 1));
    add(ci.branch(), Version::LATEST);
    for s in &snaps {
        add(BranchId(s.base_branch), Version(s.base_version));
        if let Some(b) = s.branch {
            add(BranchId(b), Version::LATEST);
        }
    }
    for (b, v) in forks {
        add(b, v);
    }
    // An unfinished replication receive: its staging branch is named by no tree yet, but
    // its state (and each finished point in it) is what the publish will show.
    if let Some(st) = dedupfs_core::replica::receive::staging(store, cid)? {
        add(BranchId(st.branch), Version::LATEST);
        for v in st.done {
            add(BranchId(st.branch), Version(v));
        }
    }
    let mut tier_points: Vec<(i64, u64)> = Vec::new();
    for &(interval, horizon) in &policy.every {
        let mut t = now.sec.div_euclid(interval) * interval;
        while t >= now.sec - horizon {
            // Exactly what "as of @t" reads.
            if let Some(v) = store.committer.version_at(Timestamp { sec: t, nsec: 0 })? {
                // A point whose state an earlier prune already removed (below the old
                // floor, and not kept then) cannot be kept now: it is not whole any more.
                let whole = v.0 + 1 >= ci.rec.history_floor
                    || ci.rec.kept_points.iter().any(|&(_, kv)| kv == v.0);
                if v < cutoff && v.0 >= ci.rec.created_version && whole {
                    add(ci.rec.branch_at(v), v);
                    tier_points.push((t, v.0));
                }
            }
            t -= interval;
        }
    }
    tier_points.sort_unstable();
    tier_points.dedup();
    let mut expired = Vec::new();
    for bm in containers::bookmarks(store, cid)? {
        if bm.version >= cutoff.0 || policy.keeps_bookmark(&bm.kind, now.sec - bm.time) {
            add(BranchId(bm.branch), Version(bm.version));
        } else {
            expired.push(bm.name);
        }
    }
    let mut report = report_base(store, &ci)?;
    // Record the new floor (and drop expired bookmarks) before deleting anything, checking
    // the lock again under the registry writer, which `container set` also takes: from
    // here on reads below the floor are refused, so a prune cut short (crash, error)
    // never leaves a partly pruned state readable, and a lock set after this commit
    // protects from this floor on (the core's pruning checks exactly that).
    // The state at `cutoff - 1` is kept (a kept point above): the container reads from
    // the moment it was committed on, not only from the next commit (which may be long
    // after, or never, on a quiet container).
    let floor_time = commit_time_of(store, Version(cutoff.0 - 1), ci.rec.created, now)?;
    store.commit_registry(|c, reg| {
        if let Some(cur) = reg.get(cid) {
            if let Some(w) = lock::window(store, &cur.rec)? {
                if w.cutoff() < cutoff {
                    return Err(HistoryError::Container(ContainerError::Locked {
                        name: cur.rec.name.clone(),
                        message: format!(
                            "pruning stopped before it began: a {} lock was set meanwhile; \
                             prune again",
                            w.mode.as_str()
                        ),
                    }));
                }
            }
            let mut rec = cur.rec.clone();
            rec.history_floor = cutoff.0;
            rec.history_floor_time = floor_time.max(rec.history_floor_time);
            rec.kept_points = tier_points;
            containers::put_container(c, &rec);
            crate::bookmark::delete_records(c, cid, &expired);
            reg.upsert(rec, None);
        }
        Ok::<_, HistoryError>(())
    })?;
    // Points a running replication send reads, read after the floor was recorded: a send
    // that pinned before it is kept; one that pins after it sees the new floor and stops.
    for (b, v) in dedupfs_core::replica::pinned(cid) {
        keep.entry(b).or_default().insert(v);
    }
    // Delete what no kept point sees, in bounded batches.
    let mut pruning = Pruning::new(cutoff);
    for &b in &branches {
        let points = keep.get(&b).cloned().unwrap_or_default();
        for family in Family::ALL {
            history::walk_branch(store, family, b, |r| {
                let mut newer = Version(u64::MAX);
                for v in &r.versions {
                    // An extent is seen at a point only while its generation is the
                    // file's generation there.
                    let mut needed = v.version >= cutoff;
                    for &p in points.range(v.version..newer) {
                        if needed {
                            break;
                        }
                        needed = match r.extent_gen {
                            None => true,
                            Some(gen) => gen_at(store, b, r.ino, p)? == Some(gen),
                        };
                    }
                    newer = v.version;
                    if needed {
                        continue;
                    }
                    report.pruned_versions += 1;
                    if let Some(e) = v.extent {
                        report.released_extents += 1;
                        report.released_bytes += e.len as u64;
                    }
                    pruning.drop_version(r, v);
                }
                if pruning.len() >= 20_000 {
                    pruning.commit(store, cid)?;
                }
                Ok::<_, HistoryError>(())
            })?;
        }
    }
    pruning.commit(store, cid)?;
    report.bookmarks_removed = expired;
    report.held_by_lock = held_by_lock;
    let after = report_base(store, &*container(store, container_name)?)?;
    report.history_bytes = after.history_bytes;
    report.store_reclaimable_bytes = after.store_reclaimable_bytes;
    report.history_held_bytes = after.history_held_bytes;
    report.window_start = after.window_start;
    report.window_start_text = after.window_start_text;
    report.bookmarks = after.bookmarks;
    report.lock = after.lock;
    log::info!(
        "retention of '{container_name}': pruned {} versions, released {} bytes of extents",
        report.pruned_versions,
        report.released_bytes
    );
    Ok(report)
}

/// Why policy `new` keeps less history than `old` at some age, or `None` if it keeps at
/// least as much (`None` as a policy keeps every change). Used to refuse, under a retention
/// lock, a change that keeps less. Tiers compare by coverage: a tier of interval `i2`
/// keeps every point of interval `i` when `i2` divides `i` (points sit on multiples).
pub fn keeps_less(old: Option<&str>, new: Option<&str>) -> Option<String> {
    let new_s = new?;
    let Some(old_s) = old else {
        return Some(format!("'{new_s}' instead of every change"));
    };
    let (Ok(o), Ok(n)) = (Policy::parse(old_s), Policy::parse(new_s)) else {
        return Some(format!("'{new_s}' cannot be compared with '{old_s}'"));
    };
    let less = |what: String| Some(format!("{what}: '{new_s}' instead of '{old_s}'"));
    match (o.all, n.all) {
        (Some(a), Some(b)) if b < a => return less("a shorter all= window".into()),
        (Some(_), None) => return less("no all= window".into()),
        (None, Some(_)) => return less("an all= window where there was none".into()),
        _ => {}
    }
    match (o.max_bytes, n.max_bytes) {
        (Some(a), Some(b)) if b < a => return less("a smaller max=".into()),
        (None, Some(_)) => return less("a max= limit where there was none".into()),
        _ => {}
    }
    for &(i, h) in &o.every {
        if !n.every.iter().any(|&(i2, h2)| i % i2 == 0 && h2 >= h) {
            return less(format!("every={}s/{}s is not covered", i, h));
        }
    }
    if !n.bookmarks.is_empty() {
        if o.bookmarks.is_empty() {
            return less("bookmarks limited where every one was kept".into());
        }
        for (k, h) in &o.bookmarks {
            if !n
                .bookmarks
                .iter()
                .any(|(k2, h2)| (k2 == k || k2 == "any") && h2 >= h)
            {
                return less(format!("bookmarks={k} kept for less"));
            }
        }
    }
    None
}

/// Prunes every container that has a policy (the daemon's background job).
pub fn prune_all(store: &Store) -> Vec<(String, Result<RetentionReport>)> {
    let names: Vec<String> = store
        .registry()
        .list()
        .iter()
        .filter(|c| c.rec.settings.retention.is_some())
        .map(|c| c.rec.name.clone())
        .collect();
    names
        .into_iter()
        .map(|n| {
            let r = prune(store, &n, store.committer.clock().wall());
            (n, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_less_compares_every_term() {
        let less = |a: Option<&str>, b: Option<&str>| keeps_less(a, b).is_some();
        assert!(!less(None, None));
        assert!(!less(Some("all=1d"), None), "keeping everything keeps more");
        assert!(less(None, Some("all=30d")));
        assert!(!less(Some("all=1d"), Some("all=2d")));
        assert!(less(Some("all=2d"), Some("all=1d")));
        assert!(less(Some("all=2d"), Some("max=1GiB")));
        assert!(less(Some("all=2d"), Some("all=2d,max=1GiB")));
        assert!(!less(Some("all=2d,max=1GiB"), Some("all=2d,max=2GiB")));
        assert!(!less(
            Some("all=1d,every=4h/7d"),
            Some("all=1d,every=2h/14d")
        ));
        assert!(less(
            Some("all=1d,every=4h/7d"),
            Some("all=1d,every=3h/14d")
        ));
        assert!(less(Some("all=1d,every=4h/7d"), Some("all=1d,every=4h/6d")));
        assert!(less(Some("all=1d,every=4h/7d"), Some("all=1d")));
        assert!(less(Some("all=1d"), Some("all=1d,bookmarks=app/1w")));
        assert!(!less(
            Some("all=1d,bookmarks=app/1w"),
            Some("all=1d,bookmarks=any/2w")
        ));
        assert!(less(
            Some("all=1d,bookmarks=app/1w"),
            Some("all=1d,bookmarks=user/2w")
        ));
    }

    #[test]
    fn policies_parse() {
        let p = Policy::parse("all=24h,every=4h/48h,bookmarks=app/4w,max=10GiB").unwrap();
        assert_eq!(p.all, Some(86_400));
        assert_eq!(p.every, vec![(14_400, 172_800)]);
        assert_eq!(p.bookmarks, vec![("app".to_string(), 28 * 86_400)]);
        assert_eq!(p.max_bytes, Some(10 << 30));
        assert_eq!(Policy::setting("forever").unwrap(), None);
        assert_eq!(Policy::setting(" all=1h ").unwrap(), Some("all=1h".into()));
        assert!(Policy::setting("all=soon").is_err());
        assert!(p.keeps_bookmark("app", 86_400));
        assert!(!p.keeps_bookmark("user", 86_400));
        assert!(!p.keeps_bookmark("app", 29 * 86_400));
        for bad in [
            "",
            "every=4h/48h",
            "all=1y",
            "all=24h,foo=1",
            "all=1h,bookmarks=x/1h",
            "max=lots",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}
