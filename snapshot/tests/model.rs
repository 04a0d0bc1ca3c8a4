//! Property test of history against a reference model: random sequences of writes,
//! truncations and removals in a container, interleaved with checkpoints (bookmarks),
//! rollbacks to earlier checkpoints, writes into read-write snapshots and retention
//! prunes. After every step, the live container equals the model, and every checkpoint
//! still reads — as of its bookmark — exactly as the model was then.

use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::containers::{ContainerInfo, SnapshotMode};
use dedupfs_core::fs::{Ctx, Fs, FsOptions, NodeRef, OpenFlags, SetAttr, ROOT_NODE};
use dedupfs_core::ids::Version;
use dedupfs_core::kv::mem::MemKv;
use dedupfs_core::store::Store;
use dedupfs_snapshot::{bookmark, retention, rollback, snapshot};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

type Tree = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
enum Op {
    Write { f: u8, off: u32, len: u16, seed: u8 },
    Truncate { f: u8, len: u32 },
    Remove { f: u8 },
    Checkpoint,
    Rollback { k: usize },
    SnapshotWrite { k: usize, f: u8, seed: u8 },
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..200_000u32, 1..40_000u16, any::<u8>())
            .prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed }),
        1 => (0..4u8, 0..150_000u32).prop_map(|(f, len)| Op::Truncate { f, len }),
        1 => (0..4u8).prop_map(|f| Op::Remove { f }),
        3 => Just(Op::Checkpoint),
        1 => (0..8usize).prop_map(|k| Op::Rollback { k }),
        1 => (0..8usize, 0..4u8, any::<u8>()).prop_map(|(k, f, seed)| Op::SnapshotWrite { k, f, seed }),
        1 => Just(Op::Prune),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|i| {
            // Runs of repeated bytes and noise, so that chunks repeat and differ.
            if (i / 4096) % 3 == 0 {
                seed
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    fs: Fs,
    model: Tree,
    /// Checkpoints: bookmark name, version and the model then.
    points: Vec<(String, Tree)>,
    snaps: usize,
}

fn root_of(t: &ContainerInfo) -> u64 {
    NodeRef::Tree {
        view: t.view,
        ino: t.root(),
    }
    .encode()
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams {
            min: 1024,
            avg: 4096,
            max: 16384,
        };
        let store =
            Arc::new(Store::open_with_kv(dir.path(), params, Arc::new(MemKv::new())).unwrap());
        let fs = Fs::new(
            store.clone(),
            FsOptions {
                background: false,
                stream_trigger: 64 << 10,
                ..Default::default()
            },
        );
        fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap();
        Rig {
            _dir: dir,
            store,
            fs,
            model: Tree::new(),
            points: Vec::new(),
            snaps: 0,
        }
    }

    fn live(&self) -> Arc<ContainerInfo> {
        self.store.registry().by_name("c").unwrap()
    }

    fn file_node(&self, root: u64, name: &str, create: bool) -> Option<u64> {
        match self.fs.lookup(&Ctx::root(), root, name.as_bytes()) {
            Ok(a) => Some(a.node),
            Err(_) if create => {
                let (a, fh) = self
                    .fs
                    .create(
                        &Ctx::root(),
                        root,
                        name.as_bytes(),
                        0o644,
                        OpenFlags::write_only(),
                    )
                    .unwrap();
                self.fs.release(fh).unwrap();
                Some(a.node)
            }
            Err(_) => None,
        }
    }

    fn write(&self, root: u64, name: &str, off: u64, data: &[u8]) {
        let n = self.file_node(root, name, true).unwrap();
        let fh = self
            .fs
            .open(&Ctx::root(), n, OpenFlags::write_only())
            .unwrap();
        self.fs.write(n, fh, off, data).unwrap();
        self.fs.release(fh).unwrap();
    }

    fn read_tree(&self, root: u64) -> Tree {
        let fh = self.fs.opendir(root).unwrap();
        let mut names = Vec::new();
        self.fs
            .readdir(root, fh, 0, |e| {
                if e.name != b"." && e.name != b".." {
                    names.push(String::from_utf8(e.name).unwrap());
                }
                false
            })
            .unwrap();
        self.fs.releasedir(fh);
        let mut out = Tree::new();
        for n in names {
            let node = self.file_node(root, &n, false).unwrap();
            let size = self.fs.getattr(node).unwrap().size;
            let fh = self
                .fs
                .open(&Ctx::root(), node, OpenFlags::read_only())
                .unwrap();
            let mut data = Vec::new();
            while (data.len() as u64) < size {
                let d = self.fs.read(node, fh, data.len() as u64, 1 << 20).unwrap();
                assert!(!d.is_empty(), "short read of {n}");
                data.extend(d);
            }
            self.fs.release(fh).unwrap();
            out.insert(n, data);
        }
        out
    }

    fn apply(&mut self, op: &Op) {
        let root = root_of(&self.live());
        match *op {
            Op::Write { f, off, len, seed } => {
                let name = format!("f{f}");
                let data = bytes(len as usize, seed);
                self.write(root, &name, off as u64, &data);
                let m = self.model.entry(name).or_default();
                let end = off as usize + data.len();
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { f, len } => {
                let name = format!("f{f}");
                if let Some(n) = self.file_node(root, &name, false) {
                    self.fs
                        .setattr(
                            &Ctx::root(),
                            n,
                            SetAttr {
                                size: Some(len as u64),
                                ..Default::default()
                            },
                        )
                        .unwrap();
                    self.model.get_mut(&name).unwrap().resize(len as usize, 0);
                }
            }
            Op::Remove { f } => {
                let name = format!("f{f}");
                if self.model.remove(&name).is_some() {
                    self.fs.unlink(&Ctx::root(), root, name.as_bytes()).unwrap();
                }
            }
            Op::Checkpoint => {
                let name = format!("k{}", self.points.len());
                bookmark::create(&self.store, Some(self.fs.core()), "c", &name, "app").unwrap();
                self.points.push((name, self.model.clone()));
            }
            Op::Rollback { k } => {
                if let Some((name, tree)) = self.points.get(k % self.points.len().max(1)).cloned() {
                    rollback::rollback(&self.store, Some(self.fs.core()), "c", &name, false)
                        .unwrap();
                    self.model = tree;
                }
            }
            Op::SnapshotWrite { k, f, seed } => {
                let Some((point, tree)) = self.points.get(k % self.points.len().max(1)).cloned()
                else {
                    return;
                };
                self.snaps += 1;
                let sname = format!("s{}", self.snaps);
                snapshot::create(
                    &self.store,
                    Some(self.fs.core()),
                    &snapshot::CreateRequest {
                        container: "c",
                        name: &sname,
                        mode: SnapshotMode::RwTracking,
                        at: Some(&point),
                        flush: true,
                    },
                )
                .unwrap();
                let s = snapshot::get(&self.store, &sname).unwrap();
                let sroot = root_of(&s);
                assert_eq!(self.read_tree(sroot), tree, "snapshot at {point}");
                let name = format!("f{f}");
                let data = bytes(5000, seed);
                self.write(sroot, &name, 1000, &data);
                self.fs.flush_all().unwrap();
                let mut expect = tree.clone();
                let m = expect.entry(name).or_default();
                if m.len() < 6000 {
                    m.resize(6000, 0);
                }
                m[1000..6000].copy_from_slice(&data);
                assert_eq!(self.read_tree(sroot), expect, "snapshot's own write");
                // Dropped again: the container and other points must not notice.
                snapshot::delete(
                    &self.store,
                    Some(self.fs.core()),
                    &sname,
                    dedupfs_core::containers::lock::Authority::Normal,
                )
                .unwrap();
            }
            Op::Prune => {
                dedupfs_core::admin::set_container(
                    &self.store,
                    "c",
                    &dedupfs_core::admin::SettingsChange {
                        retention: Some(Some("all=0s".into())),
                        ..Default::default()
                    },
                    dedupfs_core::containers::lock::Authority::Normal,
                    &retention::keeps_less,
                )
                .unwrap();
                self.fs.flush_all().unwrap();
                let now = dedupfs_core::records::Timestamp::now();
                let later = dedupfs_core::records::Timestamp {
                    sec: now.sec + 1,
                    nsec: now.nsec,
                };
                retention::prune(&self.store, "c", later).unwrap();
            }
        }
    }

    fn check(&self) {
        self.fs.flush_all().unwrap();
        let live = self.live();
        assert_eq!(self.read_tree(root_of(&live)), self.model, "live tree");
        for (name, tree) in &self.points {
            let b = bookmark::list(&self.store, "c")
                .unwrap()
                .into_iter()
                .find(|b| &b.name == name)
                .unwrap();
            let view = self.fs.time_view(&live, Version(b.version)).unwrap();
            assert_eq!(
                &self.read_tree(root_of(&view)),
                tree,
                "as of bookmark {name}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("DEDUPFS_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn history_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut r = Rig::new();
        for op in &ops {
            r.apply(op);
            r.check();
        }
    }
}
