//! Random-operation differential test of a real mount against a plain directory (in the
//! manner of mountpoint-s3's reference tests): the same random sequence of creates, writes
//! at random offsets, truncates, renames, hard links, unlinks, mkdirs, rmdirs, fsyncs and
//! reads is applied to both, every result (success or the errno) must agree, and after
//! every step the two trees must be identical: names, types, sizes, link counts, symlink
//! targets and every byte.
//!
//! Seeds are reproducible: `DEDUPFS_DIFF_SEEDS=7,8` and `DEDUPFS_DIFF_STEPS=2000` run
//! others or longer; a failure names its seed and step.

use dedupfs_tests::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a tree holds, comparably: relative path → (kind, size, nlink, content or target).
type Snapshot = BTreeMap<String, (char, u64, u64, Vec<u8>)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let v = if ft.is_dir() {
                stack.push(p.clone());
                ('d', 0, 0, Vec::new())
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                ('l', 0, md.nlink(), t.to_string_lossy().as_bytes().to_vec())
            } else {
                let mut data = Vec::new();
                fs::File::open(&p).unwrap().read_to_end(&mut data).unwrap();
                ('f', md.len(), md.nlink(), data)
            };
            out.insert(rel, v);
        }
    }
    out
}

/// The paths of a tree by kind (files, dirs), in order, for picking operands.
fn entries(s: &Snapshot, kind: char) -> Vec<String> {
    s.iter()
        .filter(|(_, v)| v.0 == kind)
        .map(|(k, _)| k.clone())
        .collect()
}

#[derive(Debug)]
enum Op {
    Create(String),
    Mkdir(String),
    Symlink(String, String),
    Write(String, u64, usize, u64),
    Append(String, usize, u64),
    Truncate(String, u64),
    Read(String, u64, usize),
    Rename(String, String),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
    Fsync(String),
}

fn pick(r: &mut Rng, v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v[r.below(v.len() as u64) as usize].clone())
}

fn new_name(r: &mut Rng, dirs: &[String]) -> String {
    let n = format!("n{}", r.below(40));
    match pick(r, dirs) {
        Some(d) if r.below(2) == 0 => format!("{d}/{n}"),
        _ => n,
    }
}

fn gen(r: &mut Rng, s: &Snapshot) -> Op {
    let files = entries(s, 'f');
    let dirs = entries(s, 'd');
    let any: Vec<String> = s.keys().cloned().collect();
    loop {
        let op = match r.below(12) {
            0 => Op::Create(new_name(r, &dirs)),
            1 => Op::Mkdir(new_name(r, &dirs)),
            2 => Op::Symlink(new_name(r, &dirs), format!("t{}", r.below(5))),
            3 | 4 => match pick(r, &files) {
                Some(f) => Op::Write(
                    f,
                    r.below(300_000),
                    1 + r.below(70_000) as usize,
                    r.next_u64(),
                ),
                None => continue,
            },
            5 => match pick(r, &files) {
                Some(f) => Op::Append(f, 1 + r.below(40_000) as usize, r.next_u64()),
                None => continue,
            },
            6 => match pick(r, &files) {
                Some(f) => Op::Truncate(f, r.below(200_000)),
                None => continue,
            },
            7 => match pick(r, &files) {
                Some(f) => Op::Read(f, r.below(250_000), 1 + r.below(100_000) as usize),
                None => continue,
            },
            8 => match pick(r, &any) {
                Some(a) => Op::Rename(a, new_name(r, &dirs)),
                None => continue,
            },
            9 => match pick(r, &files) {
                Some(f) => Op::Link(f, new_name(r, &dirs)),
                None => continue,
            },
            10 => match pick(r, &any) {
                Some(a) if s[&a].0 == 'd' => Op::Rmdir(a),
                Some(a) => Op::Unlink(a),
                None => continue,
            },
            _ => match pick(r, &files) {
                Some(f) => Op::Fsync(f),
                None => continue,
            },
        };
        return op;
    }
}

/// Applies `op` under `root`; the outcome as comparable data (bytes read, or the errno).
fn apply(root: &Path, op: &Op) -> Result<Vec<u8>, i32> {
    let p = |s: &str| root.join(s);
    let e = |r: std::io::Error| r.raw_os_error().unwrap_or(-1);
    match op {
        Op::Create(n) => OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p(n))
            .map(|_| Vec::new())
            .map_err(e),
        Op::Mkdir(n) => fs::create_dir(p(n)).map(|_| Vec::new()).map_err(e),
        Op::Symlink(n, t) => std::os::unix::fs::symlink(t, p(n))
            .map(|_| Vec::new())
            .map_err(e),
        Op::Write(f, off, len, seed) => {
            let file = OpenOptions::new().write(true).open(p(f)).map_err(e)?;
            file.write_all_at(&pseudo_random(*len, *seed), *off)
                .map_err(e)?;
            Ok(Vec::new())
        }
        Op::Append(f, len, seed) => {
            let mut file = OpenOptions::new().append(true).open(p(f)).map_err(e)?;
            file.write_all(&pseudo_random(*len, *seed)).map_err(e)?;
            Ok(Vec::new())
        }
        Op::Truncate(f, size) => {
            let file = OpenOptions::new().write(true).open(p(f)).map_err(e)?;
            file.set_len(*size).map_err(e)?;
            Ok(Vec::new())
        }
        Op::Read(f, off, len) => {
            let file = fs::File::open(p(f)).map_err(e)?;
            let mut buf = vec![0u8; *len];
            let n = file.read_at(&mut buf, *off).map_err(e)?;
            buf.truncate(n);
            Ok(buf)
        }
        Op::Rename(a, b) => fs::rename(p(a), p(b)).map(|_| Vec::new()).map_err(e),
        Op::Link(a, b) => fs::hard_link(p(a), p(b)).map(|_| Vec::new()).map_err(e),
        Op::Unlink(a) => fs::remove_file(p(a)).map(|_| Vec::new()).map_err(e),
        Op::Rmdir(a) => fs::remove_dir(p(a)).map(|_| Vec::new()).map_err(e),
        Op::Fsync(f) => fs::File::open(p(f))
            .and_then(|f| f.sync_all())
            .map(|_| Vec::new())
            .map_err(e),
    }
}

fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("{k}: only in the mount")),
            Some(w) if w != v => out.push(format!(
                "{k}: mount {:?} size {} nlink {}, plain {:?} size {} nlink {}{}",
                v.0,
                v.1,
                v.2,
                w.0,
                w.1,
                w.2,
                if v.3 != w.3 { " (content differs)" } else { "" }
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("{k}: only in the plain directory"));
        }
    }
    out.join("\n")
}

fn run_seed(t: &TestStore, plain: &Path, seed: u64, steps: usize) {
    let mnt_root: PathBuf = t.path(&format!("c/s{seed}"));
    let plain_root = plain.join(format!("s{seed}"));
    fs::create_dir(&mnt_root).unwrap();
    fs::create_dir(&plain_root).unwrap();
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for step in 0..steps {
        let before = snapshot(&plain_root);
        let op = gen(&mut r, &before);
        let want = apply(&plain_root, &op);
        let got = apply(&mnt_root, &op);
        assert!(
            want == got,
            "seed {seed} step {step}: {op:?}: plain {:?}, mount {:?}",
            want.as_ref().map(|v| v.len()),
            got.as_ref().map(|v| v.len())
        );
        let (m, p) = (snapshot(&mnt_root), snapshot(&plain_root));
        assert!(
            m == p,
            "seed {seed} step {step} after {op:?}:\n{}",
            diff(&m, &p)
        );
    }
}

#[test]
fn random_operations_agree_with_a_plain_directory() {
    let seeds: Vec<u64> = std::env::var("DEDUPFS_DIFF_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    let steps: usize = std::env::var("DEDUPFS_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250);
    let mut t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    let plain = tempfile::Builder::new()
        .prefix("dedupfs-plain-")
        .tempdir_in(test_root())
        .unwrap();
    for &seed in &seeds {
        run_seed(&t, plain.path(), seed, steps);
    }
    // And all of it survives a remount.
    let before: Vec<Snapshot> = seeds
        .iter()
        .map(|s| snapshot(&t.path(&format!("c/s{s}"))))
        .collect();
    t.umount();
    t.mount("gc_idle=0");
    for (s, b) in seeds.iter().zip(before) {
        let after = snapshot(&t.path(&format!("c/s{s}")));
        assert!(after == b, "seed {s} after remount:\n{}", diff(&after, &b));
        assert!(
            after == snapshot(&plain.path().join(format!("s{s}"))),
            "seed {s}"
        );
    }
}
