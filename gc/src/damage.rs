//! fsck's naming of what damage touches: a damaged or dangling chunk reference becomes
//! one problem per file range, with the container (or snapshot), path, version, offset,
//! chunk and pack, so an admin knows which files to restore.
//!
//! Invariant: a reference that cannot be named (its tree deleted, or history only) is still
//! reported, by branch and inode, never dropped.

use crate::fsck::{Problem, Report};
use crate::Result;
use dedupfs_core::containers::Registry;
use dedupfs_core::ids::{BranchId, ChunkId, ContainerId, Ino};
use dedupfs_core::records::ChunkRec;
use dedupfs_core::refs::{self, ExtentRef};
use dedupfs_core::store::Store;
use dedupfs_snapshot::diff::{paths_of, Tree};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Container name and path (if found) of each (branch, inode) named in a report.
type FileNames = HashMap<(BranchId, Ino), (String, Option<String>)>;

/// Where a branch's files can be named: its container and, for a snapshot, the snapshot.
fn branch_tree(reg: &Registry, b: BranchId) -> (String, Option<Tree>) {
    let Some(br) = reg.branch(b) else {
        return (format!("(branch {b})"), None);
    };
    let Some(ci) = reg.get(ContainerId(br.container)) else {
        return (format!("(deleted container {})", br.container), None);
    };
    if ci.branch() == b {
        return (ci.rec.name.clone(), Some(Tree::of(&ci)));
    }
    for s in reg.snapshots() {
        if s.branch() == b {
            let name = s
                .snapshot
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            return (
                format!("{} (snapshot {name})", ci.rec.name),
                Some(Tree::of(&s)),
            );
        }
    }
    (format!("{} (history of branch {b})", ci.rec.name), None)
}

fn name_files(store: &Store, reg: &Registry, hits: &[ExtentRef]) -> Result<FileNames> {
    let mut by_branch: BTreeMap<BranchId, HashSet<Ino>> = BTreeMap::new();
    for h in hits {
        by_branch.entry(h.branch).or_default().insert(h.ino);
    }
    let mut out = HashMap::new();
    for (b, inos) in by_branch {
        let (cname, tree) = branch_tree(reg, b);
        let paths = match &tree {
            Some(t) => paths_of(store, t, &inos)?,
            None => HashMap::new(),
        };
        for ino in inos {
            out.insert((b, ino), (cname.clone(), paths.get(&ino).cloned()));
        }
    }
    Ok(out)
}

/// The extent versions naming chunks `want` accepts (malformed ones were reported by the
/// reference check).
fn scan_extents(store: &Store, want: impl Fn(ChunkId) -> bool) -> Result<Vec<ExtentRef>> {
    let mut out = Vec::new();
    refs::scan_extents(store, |e| {
        if let Ok(e) = e {
            if want(e.chunk) {
                out.push(e);
            }
        }
    })?;
    Ok(out)
}

fn file_problem(
    kind: &'static str,
    h: &ExtentRef,
    names: &FileNames,
    what: String,
    pack: Option<u32>,
) -> Problem {
    let (cname, path) = names
        .get(&(h.branch, h.ino))
        .cloned()
        .unwrap_or_else(|| ("?".into(), None));
    let shown = path
        .clone()
        .unwrap_or_else(|| format!("inode {} (not in the live tree)", h.ino));
    let mut pr = Problem::new(
        kind,
        format!(
            "{cname}: {shown} version {} offset {}: {what}",
            h.version, h.offset
        ),
    );
    pr.container = Some(cname);
    pr.path = path;
    pr.version = Some(h.version.0);
    pr.chunk = Some(h.chunk.to_string());
    pr.pack = pack;
    pr
}

pub(crate) fn report_dangling(
    store: &Store,
    reg: &Registry,
    missing: &HashMap<ChunkId, u64>,
    r: &mut Report,
) -> Result<()> {
    let hits = scan_extents(store, |c| missing.contains_key(&c))?;
    let names = name_files(store, reg, &hits)?;
    for h in &hits {
        r.problems.push(file_problem(
            "dangling_extent",
            h,
            &names,
            format!("names chunk {}, which is not in the chunk index", h.chunk),
            None,
        ));
    }
    Ok(())
}

pub(crate) fn report_damaged(
    store: &Store,
    reg: &Registry,
    bad: &BTreeMap<ChunkId, (ChunkRec, String)>,
    r: &mut Report,
) -> Result<()> {
    let hits = scan_extents(store, |c| bad.contains_key(&c))?;
    let names = name_files(store, reg, &hits)?;
    for h in &hits {
        let (rec, why) = &bad[&h.chunk];
        r.problems.push(file_problem(
            "damaged_data",
            h,
            &names,
            format!(
                "chunk {} in pack {} at offset {}: {why} (reads of this range fail with EIO; restore the file from another copy)",
                h.chunk, rec.pack, rec.offset
            ),
            Some(rec.pack.0),
        ));
    }
    Ok(())
}
