//! Property test: random operation sequences applied to the filesystem core and to a
//! simple in-memory model; every result (data, listings, sizes, link counts, errors) must
//! agree. Runs without a kernel, on the in-memory metadata store and on RocksDB, with tiny
//! chunks and flush thresholds so that short sequences exercise re-chunking, streaming
//! flushes, extent trimming and holes.

use super::*;
use crate::chunker::ChunkParams;
use crate::records::FileKind;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum MNode {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, usize>),
    Link(Vec<u8>),
}

#[derive(Default)]
struct Model {
    nodes: Vec<MNode>,
    nlink: Vec<u32>,
    xattrs: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Permission bits and mtime seconds set explicitly (None: not set by the test).
    perm: Vec<Option<u16>>,
    mtime: Vec<Option<i64>>,
}

impl Model {
    fn new() -> Self {
        Model {
            nodes: vec![MNode::Dir(BTreeMap::new())],
            nlink: vec![2],
            xattrs: vec![BTreeMap::new()],
            perm: vec![None],
            mtime: vec![None],
        }
    }
    fn dir(&self, d: usize) -> &BTreeMap<Vec<u8>, usize> {
        match &self.nodes[d] {
            MNode::Dir(m) => m,
            _ => unreachable!("not a dir"),
        }
    }
    fn dir_mut(&mut self, d: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.nodes[d] {
            MNode::Dir(m) => m,
            _ => unreachable!("not a dir"),
        }
    }
    fn dirs(&self) -> Vec<usize> {
        let mut out = vec![0];
        let mut i = 0;
        while i < out.len() {
            let d = out[i];
            for &c in self.dir(d).values() {
                if matches!(self.nodes[c], MNode::Dir(_)) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }
    fn files(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .dirs()
            .iter()
            .flat_map(|&d| self.dir(d).values().copied().collect::<Vec<_>>())
            .filter(|&c| matches!(self.nodes[c], MNode::File(_)))
            .collect();
        v.sort();
        v.dedup();
        v
    }
    fn is_ancestor(&self, a: usize, mut d: usize) -> bool {
        // parent map
        let mut parent = BTreeMap::new();
        for p in self.dirs() {
            for &c in self.dir(p).values() {
                if matches!(self.nodes[c], MNode::Dir(_)) {
                    parent.insert(c, p);
                }
            }
        }
        loop {
            if d == a {
                return true;
            }
            match parent.get(&d) {
                Some(&p) => d = p,
                None => return false,
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize, u8),
    Mkdir(usize, u8),
    Symlink(usize, u8),
    Write(usize, u32, u16, u8),
    Truncate(usize, u32),
    Read(usize, u32, u16),
    Unlink(usize, u8),
    Rmdir(usize, u8),
    Rename(usize, u8, usize, u8, u8),
    Link(usize, usize, u8),
    Punch(usize, u32, u16),
    /// copy_file_range(from, off_in, len, to, off_out)
    Copy(usize, u32, u16, usize, u32),
    Flush(usize),
    FlushAll,
    List(usize),
    Stat(usize, u8),
    SetX(usize, u8, u8, i32),
    GetX(usize, u8),
    RmX(usize, u8),
    Chmod(usize, u16),
    Touch(usize, i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..8;
    let n = 0u8..6;
    prop_oneof![
        3 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Create(d, n)),
        1 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Mkdir(d, n)),
        1 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Symlink(d, n)),
        6 => (i.clone(), 0u32..6000, 1u16..3000, any::<u8>()).prop_map(|(f, o, l, s)| Op::Write(f, o, l, s)),
        2 => (i.clone(), 0u32..7000).prop_map(|(f, s)| Op::Truncate(f, s)),
        4 => (i.clone(), 0u32..7000, 1u16..4000).prop_map(|(f, o, l)| Op::Read(f, o, l)),
        1 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Unlink(d, n)),
        1 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Rmdir(d, n)),
        2 => (i.clone(), n.clone(), i.clone(), n.clone(), 0u8..3).prop_map(|(a, b, c, d, f)| Op::Rename(a, b, c, d, f)),
        1 => (i.clone(), i.clone(), n.clone()).prop_map(|(f, d, n)| Op::Link(f, d, n)),
        1 => (i.clone(), 0u32..6000, 1u16..3000).prop_map(|(f, o, l)| Op::Punch(f, o, l)),
        2 => (i.clone(), 0u32..7000, 1u16..5000, i.clone(), 0u32..7000).prop_map(|(a, o, l, b, p)| Op::Copy(a, o, l, b, p)),
        2 => i.clone().prop_map(Op::Flush),
        1 => Just(Op::FlushAll),
        2 => i.clone().prop_map(Op::List),
        2 => (i.clone(), n.clone()).prop_map(|(d, n)| Op::Stat(d, n)),
        1 => (i.clone(), 0u8..3, any::<u8>(), 0i32..3).prop_map(|(f, n, v, fl)| Op::SetX(f, n, v, fl)),
        1 => (i.clone(), 0u8..3).prop_map(|(f, n)| Op::GetX(f, n)),
        1 => (i.clone(), 0u8..3).prop_map(|(f, n)| Op::RmX(f, n)),
        1 => (i.clone(), 0o400u16..0o777).prop_map(|(f, p)| Op::Chmod(f, p)),
        1 => (i.clone(), 0i64..2_000_000_000).prop_map(|(f, t)| Op::Touch(f, t)),
        1 => Just(Op::Reopen),
    ]
}

fn name(n: u8) -> Vec<u8> {
    format!("n{n}").into_bytes()
}

/// Data with structure (repeats), so that dedup within and across writes happens.
fn data(len: u16, seed: u8) -> Vec<u8> {
    (0..len as usize)
        .map(|i| {
            if seed.is_multiple_of(3) {
                0
            } else {
                ((i / 7) as u8).wrapping_mul(seed) ^ (i as u8 % 5)
            }
        })
        .collect()
}

/// The filesystem under test plus the map from model nodes to node ids.
struct Real {
    dir: tempfile::TempDir,
    kind: Backend,
    store: Option<Arc<Store>>,
    fs: Option<Fs>,
    root: u64,
    ids: BTreeMap<usize, u64>,
    fh: BTreeMap<usize, u64>,
    mem: Option<crate::kv::mem::MemKv>,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Mem,
    Rocks,
}

const PARAMS: ChunkParams = ChunkParams {
    min: 64,
    avg: 256,
    max: 1024,
};

fn fs_opts() -> FsOptions {
    FsOptions {
        background: false,
        stream_trigger: 2048,
        dirty_limit: 1 << 20,
        ..Default::default()
    }
}

impl Real {
    fn new(kind: Backend) -> Real {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Real {
            dir,
            kind,
            store: None,
            fs: None,
            root: 0,
            ids: BTreeMap::new(),
            fh: BTreeMap::new(),
            mem: None,
        };
        match kind {
            Backend::Mem => {
                let kv = crate::kv::mem::MemKv::new();
                r.mem = Some(kv.clone());
                r.store = Some(Arc::new(
                    Store::open_with_kv(r.dir.path(), PARAMS, Arc::new(kv)).unwrap(),
                ));
            }
            Backend::Rocks => {
                let p = r.dir.path().join("s");
                Store::init(
                    &p,
                    &crate::store::InitOptions {
                        chunking: PARAMS,
                        pack_target_size: 1 << 16,
                        verify_dedup: true,
                        ..Default::default()
                    },
                )
                .unwrap();
                r.store = Some(Arc::new(Store::open(&p, &Default::default()).unwrap()));
            }
        }
        r.fs = Some(Fs::new(r.store.clone().unwrap(), fs_opts()));
        let a = r.fs().mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap();
        r.root = a.node;
        r.ids.insert(0, a.node);
        r
    }
    fn fs(&self) -> &Fs {
        self.fs.as_ref().unwrap()
    }
    fn reopen(&mut self) {
        // Close every handle, shut down (flush + sync), reopen from disk.
        let fhs: Vec<u64> = self.fh.values().copied().collect();
        for fh in fhs {
            self.fs().release(fh).unwrap();
        }
        self.fh.clear();
        self.fs.take().unwrap().shutdown().unwrap();
        self.store = None;
        let store = match self.kind {
            Backend::Mem => {
                Store::open_with_kv(self.dir.path(), PARAMS, Arc::new(self.mem.clone().unwrap()))
                    .unwrap()
            }
            Backend::Rocks => Store::open(&self.dir.path().join("s"), &Default::default()).unwrap(),
        };
        self.store = Some(Arc::new(store));
        self.fs = Some(Fs::new(self.store.clone().unwrap(), fs_opts()));
    }
    fn fh(&mut self, m: usize) -> u64 {
        if let Some(&h) = self.fh.get(&m) {
            return h;
        }
        let node = self.ids[&m];
        let h = self
            .fs()
            .open(
                &Ctx::root(),
                node,
                OpenFlags {
                    read: true,
                    write: true,
                    ..Default::default()
                },
            )
            .unwrap();
        self.fh.insert(m, h);
        h
    }
}

/// Compares bytes, reporting only the first difference (outputs can be large).
fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(TestCaseError::fail(format!(
        "{what}: lengths {} vs {} (want); first difference at {at}: got {:?} want {:?}",
        got.len(),
        want.len(),
        got.get(at..(at + 8).min(got.len())),
        want.get(at..(at + 8).min(want.len()))
    )))
}

fn kind_of(e: &FsError) -> std::mem::Discriminant<FsError> {
    std::mem::discriminant(e)
}

fn run(ops: Vec<Op>, backend: Backend) -> Result<(), TestCaseError> {
    let mut m = Model::new();
    let mut r = Real::new(backend);
    let ctx = Ctx::root();
    for op in ops {
        let dirs = m.dirs();
        let files = m.files();
        let pick_dir = |i: usize| dirs[i % dirs.len()];
        match op {
            Op::Create(d, n) | Op::Mkdir(d, n) | Op::Symlink(d, n) => {
                let d = pick_dir(d);
                let nm = name(n);
                let exists = m.dir(d).contains_key(&nm);
                let parent = r.ids[&d];
                let res = match op {
                    Op::Create(..) => r
                        .fs()
                        .create(
                            &ctx,
                            parent,
                            &nm,
                            0o644,
                            OpenFlags {
                                read: true,
                                write: true,
                                ..Default::default()
                            },
                        )
                        .map(|(a, fh)| (a, Some(fh))),
                    Op::Mkdir(..) => r.fs().mkdir(&ctx, parent, &nm, 0o755).map(|a| (a, None)),
                    _ => r
                        .fs()
                        .symlink(&ctx, parent, &nm, b"target")
                        .map(|a| (a, None)),
                };
                if exists {
                    prop_assert_eq!(res.err(), Some(FsError::Exists));
                } else {
                    let (a, fh) = res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    let id = m.nodes.len();
                    m.nodes.push(match op {
                        Op::Create(..) => MNode::File(Vec::new()),
                        Op::Mkdir(..) => MNode::Dir(BTreeMap::new()),
                        _ => MNode::Link(b"target".to_vec()),
                    });
                    m.nlink
                        .push(if matches!(op, Op::Mkdir(..)) { 2 } else { 1 });
                    m.xattrs.push(BTreeMap::new());
                    m.perm.push(None);
                    m.mtime.push(None);
                    m.dir_mut(d).insert(nm, id);
                    if matches!(op, Op::Mkdir(..)) {
                        m.nlink[d] += 1;
                    }
                    r.ids.insert(id, a.node);
                    if let Some(fh) = fh {
                        r.fh.insert(id, fh);
                    }
                }
            }
            Op::Write(f, off, len, seed) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let d = data(len, seed);
                let fh = r.fh(f);
                let node = r.ids[&f];
                let n = r
                    .fs()
                    .write(node, fh, off as u64, &d)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                prop_assert_eq!(n as usize, d.len());
                m.mtime[f] = None;
                if let MNode::File(v) = &mut m.nodes[f] {
                    let end = off as usize + d.len();
                    if v.len() < end {
                        v.resize(end, 0);
                    }
                    v[off as usize..end].copy_from_slice(&d);
                }
            }
            Op::Truncate(f, size) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                r.fs()
                    .setattr(
                        &ctx,
                        r.ids[&f],
                        SetAttr {
                            size: Some(size as u64),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                m.mtime[f] = None;
                if let MNode::File(v) = &mut m.nodes[f] {
                    v.resize(size as usize, 0);
                }
            }
            Op::Copy(a, off_in, len, b, off_out) => {
                if files.is_empty() {
                    continue;
                }
                let (a, b) = (files[a % files.len()], files[b % files.len()]);
                let src = match &m.nodes[a] {
                    MNode::File(v) => v.clone(),
                    _ => continue,
                };
                let (lo, hi) = (off_in as usize, off_in as usize + len as usize);
                // The kernel refuses overlapping ranges of one file; so does the model.
                if a == b && lo < off_out as usize + len as usize && (off_out as usize) < hi {
                    continue;
                }
                let (fa, fb) = (r.fh(a), r.fh(b));
                let n = r
                    .fs()
                    .copy_file_range(
                        r.ids[&a],
                        fa,
                        off_in as u64,
                        r.ids[&b],
                        fb,
                        off_out as u64,
                        len as u64,
                    )
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                let want = hi.min(src.len()).saturating_sub(lo);
                prop_assert_eq!(n as usize, want, "{:?}", op);
                if want == 0 {
                    continue;
                }
                m.mtime[b] = None;
                if let MNode::File(v) = &mut m.nodes[b] {
                    let end = off_out as usize + want;
                    if v.len() < end {
                        v.resize(end, 0);
                    }
                    v[off_out as usize..end].copy_from_slice(&src[lo..lo + want]);
                }
            }
            Op::Punch(f, off, len) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let fh = r.fh(f);
                r.fs()
                    .fallocate(r.ids[&f], fh, off as u64, len as u64, Fallocate::PunchHole)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                m.mtime[f] = None;
                if let MNode::File(v) = &mut m.nodes[f] {
                    let end = (off as usize + len as usize).min(v.len());
                    for b in v.iter_mut().take(end).skip(off as usize) {
                        *b = 0;
                    }
                }
            }
            Op::Read(f, off, len) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let fh = r.fh(f);
                let got = r
                    .fs()
                    .read(r.ids[&f], fh, off as u64, len as u32)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                let MNode::File(v) = &m.nodes[f] else {
                    unreachable!()
                };
                let s = (off as usize).min(v.len());
                let e = (off as usize + len as usize).min(v.len());
                same_bytes(&got, &v[s..e], &format!("{op:?}"))?;
            }
            Op::Unlink(d, n) => {
                let d = pick_dir(d);
                let nm = name(n);
                let res = r.fs().unlink(&ctx, r.ids[&d], &nm);
                match m.dir(d).get(&nm).copied() {
                    None => prop_assert_eq!(res.err(), Some(FsError::NotFound)),
                    Some(c) if matches!(m.nodes[c], MNode::Dir(_)) => {
                        prop_assert_eq!(res.err(), Some(FsError::IsDir))
                    }
                    Some(c) => {
                        res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                        m.dir_mut(d).remove(&nm);
                        m.nlink[c] -= 1;
                    }
                }
            }
            Op::Rmdir(d, n) => {
                let d = pick_dir(d);
                let nm = name(n);
                let res = r.fs().rmdir(&ctx, r.ids[&d], &nm);
                match m.dir(d).get(&nm).copied() {
                    None => prop_assert_eq!(res.err(), Some(FsError::NotFound)),
                    Some(c) => match &m.nodes[c] {
                        MNode::Dir(ch) if ch.is_empty() => {
                            res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                            m.dir_mut(d).remove(&nm);
                            m.nlink[d] -= 1;
                        }
                        MNode::Dir(_) => prop_assert_eq!(res.err(), Some(FsError::NotEmpty)),
                        _ => prop_assert_eq!(res.err(), Some(FsError::NotDir)),
                    },
                }
            }
            Op::Rename(sd, sn, dd, dn, flags) => {
                let (sd, dd) = (pick_dir(sd), pick_dir(dd));
                let (snm, dnm) = (name(sn), name(dn));
                let fl = RenameFlags {
                    noreplace: flags == 1,
                    exchange: flags == 2,
                };
                let res = r.fs().rename(&ctx, r.ids[&sd], &snm, r.ids[&dd], &dnm, fl);
                let src = m.dir(sd).get(&snm).copied();
                let dst = m.dir(dd).get(&dnm).copied();
                let isdir = |c: usize| matches!(m.nodes[c], MNode::Dir(_));
                let expect: Result<(), FsError> = match (src, dst) {
                    (None, _) => Err(FsError::NotFound),
                    (Some(_), _) if sd == dd && snm == dnm => Ok(()),
                    (Some(_), Some(_)) if fl.noreplace => Err(FsError::Exists),
                    (Some(_), None) if fl.exchange => Err(FsError::NotFound),
                    (Some(s), _) if isdir(s) && sd != dd && m.is_ancestor(s, dd) => {
                        Err(FsError::Invalid(""))
                    }
                    (Some(_), Some(t))
                        if fl.exchange && isdir(t) && sd != dd && m.is_ancestor(t, sd) =>
                    {
                        Err(FsError::Invalid(""))
                    }
                    (Some(s), Some(t)) if !fl.exchange && s == t => Ok(()),
                    (Some(s), Some(t)) if !fl.exchange && isdir(s) && !isdir(t) => {
                        Err(FsError::NotDir)
                    }
                    (Some(s), Some(t)) if !fl.exchange && !isdir(s) && isdir(t) => {
                        Err(FsError::IsDir)
                    }
                    (Some(s), Some(t)) if !fl.exchange && isdir(s) && !m.dir(t).is_empty() => {
                        Err(FsError::NotEmpty)
                    }
                    _ => Ok(()),
                };
                match (&expect, &res) {
                    (Err(a), Err(b)) => {
                        prop_assert_eq!(kind_of(a), kind_of(b), "{:?}: {:?} vs {:?}", op, a, b)
                    }
                    (Ok(()), Ok(())) => {}
                    _ => prop_assert!(false, "{:?}: model {:?}, fs {:?}", op, expect, res),
                }
                let isdir_s = src.map(isdir).unwrap_or(false);
                let isdir_t = dst.map(isdir).unwrap_or(false);
                if expect.is_ok() && !(sd == dd && snm == dnm) {
                    let s = src.unwrap_or(0);
                    if fl.exchange {
                        let t = dst.unwrap_or(0);
                        m.dir_mut(sd).insert(snm.clone(), t);
                        m.dir_mut(dd).insert(dnm.clone(), s);
                        if isdir_s != isdir_t && sd != dd {
                            let (a, b) = if isdir_s { (sd, dd) } else { (dd, sd) };
                            m.nlink[a] -= 1;
                            m.nlink[b] += 1;
                        }
                    } else if dst != Some(s) {
                        m.dir_mut(sd).remove(&snm);
                        if let Some(t) = m.dir_mut(dd).insert(dnm.clone(), s) {
                            if isdir_t {
                                m.nlink[dd] -= 1;
                            } else {
                                m.nlink[t] -= 1;
                            }
                        }
                        if isdir_s && sd != dd {
                            m.nlink[sd] -= 1;
                            m.nlink[dd] += 1;
                        }
                    }
                }
            }
            Op::Link(f, d, n) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let d = pick_dir(d);
                let nm = name(n);
                let res = r.fs().link(&ctx, r.ids[&f], r.ids[&d], &nm);
                if m.dir(d).contains_key(&nm) {
                    prop_assert_eq!(res.err(), Some(FsError::Exists));
                } else {
                    res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    m.dir_mut(d).insert(nm, f);
                    m.nlink[f] += 1;
                }
            }
            Op::Flush(f) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let fh = r.fh(f);
                r.fs()
                    .fsync(r.ids[&f], fh, false)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
            }
            Op::FlushAll => r
                .fs()
                .flush_all()
                .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?,
            Op::List(d) => {
                let d = pick_dir(d);
                let node = r.ids[&d];
                let fh = r.fs().opendir(node).unwrap();
                let mut got = Vec::new();
                let mut off = 0;
                // Small batches, to exercise resumption.
                loop {
                    let mut batch = Vec::new();
                    r.fs()
                        .readdir(node, fh, off, |e| {
                            if batch.len() >= 2 {
                                return true;
                            }
                            batch.push(e);
                            false
                        })
                        .unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    off = batch.last().unwrap().offset;
                    got.extend(batch);
                }
                r.fs().releasedir(fh);
                let mut names: Vec<Vec<u8>> = got
                    .iter()
                    .map(|e| e.name.clone())
                    .filter(|n| n != b"." && n != b"..")
                    .collect();
                names.sort();
                let want: Vec<Vec<u8>> = m.dir(d).keys().cloned().collect();
                prop_assert_eq!(names, want);
                for e in got.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    let c = m.dir(d)[&e.name];
                    prop_assert_eq!(e.node, r.ids[&c]);
                }
            }
            Op::Stat(d, n) => {
                let d = pick_dir(d);
                let nm = name(n);
                let res = r.fs().lookup(&ctx, r.ids[&d], &nm);
                match m.dir(d).get(&nm).copied() {
                    None => prop_assert_eq!(res.err(), Some(FsError::NotFound)),
                    Some(c) => {
                        let a = res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                        prop_assert_eq!(a.node, r.ids[&c]);
                        prop_assert_eq!(a.nlink, m.nlink[c], "nlink of {:?}", nm);
                        match &m.nodes[c] {
                            MNode::File(v) => {
                                prop_assert_eq!(a.kind, FileKind::RegularFile);
                                prop_assert_eq!(a.size, v.len() as u64);
                                if let Some(p) = m.perm[c] {
                                    prop_assert_eq!(a.perm, p, "mode of {:?}", nm);
                                }
                                if let Some(t) = m.mtime[c] {
                                    prop_assert_eq!(a.mtime.sec, t, "mtime of {:?}", nm);
                                }
                            }
                            MNode::Dir(ch) => {
                                prop_assert_eq!(a.kind, FileKind::Directory);
                                prop_assert_eq!(a.size, ch.len() as u64);
                            }
                            MNode::Link(t) => {
                                prop_assert_eq!(a.kind, FileKind::Symlink);
                                prop_assert_eq!(r.fs().readlink(a.node).unwrap(), t.clone());
                            }
                        }
                    }
                }
            }
            Op::SetX(f, n, v, fl) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let name = format!("user.x{n}").into_bytes();
                let res = r.fs().setxattr(r.ids[&f], &name, &[v; 3], fl);
                let exists = m.xattrs[f].contains_key(&name);
                if fl == 1 && exists {
                    prop_assert_eq!(res.err(), Some(FsError::Exists));
                } else if fl == 2 && !exists {
                    prop_assert_eq!(res.err(), Some(FsError::NoAttr));
                } else {
                    res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    m.xattrs[f].insert(name, vec![v; 3]);
                }
            }
            Op::GetX(f, n) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let name = format!("user.x{n}").into_bytes();
                let res = r.fs().getxattr(r.ids[&f], &name);
                match m.xattrs[f].get(&name) {
                    Some(v) => prop_assert_eq!(res.ok(), Some(v.clone())),
                    None => prop_assert_eq!(res.err(), Some(FsError::NoAttr)),
                }
                let mut names = r.fs().listxattr(r.ids[&f]).unwrap();
                names.sort();
                prop_assert_eq!(names, m.xattrs[f].keys().cloned().collect::<Vec<_>>());
            }
            Op::RmX(f, n) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let name = format!("user.x{n}").into_bytes();
                let res = r.fs().removexattr(r.ids[&f], &name);
                match m.xattrs[f].remove(&name) {
                    Some(_) => res.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?,
                    None => prop_assert_eq!(res.err(), Some(FsError::NoAttr)),
                }
            }
            Op::Chmod(f, p) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let a = r
                    .fs()
                    .setattr(
                        &ctx,
                        r.ids[&f],
                        SetAttr {
                            mode: Some(p as u32),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                prop_assert_eq!(a.perm, p);
                m.perm[f] = Some(p);
            }
            Op::Touch(f, t) => {
                if files.is_empty() {
                    continue;
                }
                let f = files[f % files.len()];
                let at = crate::records::Timestamp { sec: t, nsec: 0 };
                r.fs()
                    .setattr(
                        &ctx,
                        r.ids[&f],
                        SetAttr {
                            mtime: Some(SetTime::At(at)),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                m.mtime[f] = Some(t);
            }
            Op::Reopen => r.reopen(),
        }
    }
    // Finally: everything reads back after a clean reopen.
    r.reopen();
    for f in m.files() {
        let MNode::File(v) = &m.nodes[f] else {
            continue;
        };
        let fh = r.fh(f);
        let got = r.fs().read(r.ids[&f], fh, 0, v.len() as u32 + 10).unwrap();
        same_bytes(&got, v, "final read after reopen")?;
    }
    Ok(())
}

/// Case count, raised with DEDUPFS_MODEL_CASES for long soak runs.
fn cases(default: u32) -> u32 {
    std::env::var("DEDUPFS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]
    #[test]
    fn model_mem(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, Backend::Mem)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(40)))]
    #[test]
    fn model_rocks(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, Backend::Rocks)?;
    }
}

/// An `open` racing with the last `release` of the same file by another process must not
/// be left holding a file state the map has dropped: its writes would then go where no
/// read or flush looks (found by xfstests generic/451 as a lost O_DIRECT write).
#[test]
fn open_racing_a_release_never_loses_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let r = Real::new(Backend::Mem);
    let fs = r.fs();
    let rw = OpenFlags {
        read: true,
        write: true,
        ..Default::default()
    };
    let ro = OpenFlags {
        read: true,
        ..Default::default()
    };
    let (a, h) = fs.create(&Ctx::root(), r.root, b"f", 0o644, rw).unwrap();
    fs.release(h).unwrap();
    let node = a.node;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let h = fs.open(&Ctx::root(), node, ro).unwrap();
                fs.release(h).unwrap();
            }
        });
        let rounds = 20_000;
        for i in 0..rounds {
            let pattern = vec![(i % 251) as u8 + 1; 4096];
            let h = fs.open(&Ctx::root(), node, rw).unwrap();
            let w = fs.write(node, h, 0, &pattern);
            fs.release(h).unwrap();
            let h = fs.open(&Ctx::root(), node, ro).unwrap();
            let got = fs.read(node, h, 0, 4096).unwrap();
            fs.release(h).unwrap();
            if w != Ok(4096) || got != pattern {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "round {i} of {rounds}: write {w:?}, read back the pattern: {}",
                    got == pattern
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    });
}
