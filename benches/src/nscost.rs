//! The daemon's own cost of namespace operations, without FUSE: creates, lookups, hard
//! links and unlinks of N files through the filesystem core on a real store (RocksDB and
//! packs on disk), timed per operation. The FUSE share of small-file work is what the null
//! FUSE filesystem (`nullfs`) costs; this is the rest (ARCHITECTURE.md, "Kernel caching of
//! names and attributes" and "Small files").
//!
//!     nscost [--files N] [--dir DIR]
//!
//! Prints one line per operation: microseconds per operation (median of 3 passes).

use dedupfs_core::fs::{Ctx, Fs, FsOptions, OpenFlags, ROOT_NODE};
use dedupfs_core::store::{InitOptions, OpenOptions, Store};
use std::sync::Arc;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args();
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
    }
    None
}

fn main() {
    let files: usize = arg("--files")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let base = arg("--dir").unwrap_or_else(|| "/var/tmp".into());
    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("create+release", vec![]),
        ("lookup", vec![]),
        ("link", vec![]),
        ("unlink", vec![]),
    ];
    for pass in 0..3 {
        let dir = std::path::Path::new(&base).join(format!("nscost-{}-{pass}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = Store::init(&dir, &InitOptions::default()) {
            eprintln!("nscost: init {}: {e}", dir.display());
            std::process::exit(1);
        }
        let store = match Store::open(&dir, &OpenOptions::default()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("nscost: open {}: {e}", dir.display());
                std::process::exit(1);
            }
        };
        let fs = Fs::new(store.clone(), FsOptions::default());
        let ctx = Ctx::root();
        let run = || -> Result<[f64; 4], dedupfs_core::fs::FsError> {
            let c = fs.mkdir(&ctx, ROOT_NODE, b"c", 0o755)?.node;
            let d = fs.mkdir(&ctx, c, b"d", 0o755)?.node;
            let names: Vec<Vec<u8>> = (0..files)
                .map(|i| format!("f{i:07}").into_bytes())
                .collect();
            let per = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / files as f64;
            let t = Instant::now();
            let mut nodes = Vec::with_capacity(files);
            for n in &names {
                let (a, fh) = fs.create(&ctx, d, n, 0o644, OpenFlags::write_only())?;
                fs.release(fh)?;
                nodes.push(a.node);
            }
            let create = per(t);
            let t = Instant::now();
            for n in &names {
                fs.lookup(&ctx, d, n)?;
            }
            let lookup = per(t);
            let t = Instant::now();
            for (n, node) in names.iter().zip(&nodes) {
                let mut l = n.clone();
                l.extend_from_slice(b".l");
                fs.link(&ctx, *node, d, &l)?;
            }
            let link = per(t);
            let t = Instant::now();
            for n in &names {
                fs.unlink(&ctx, d, n)?;
            }
            let unlink = per(t);
            Ok([create, lookup, link, unlink])
        };
        match run() {
            Ok(r) => {
                for (i, x) in r.iter().enumerate() {
                    results[i].1.push(*x);
                }
            }
            Err(e) => {
                eprintln!("nscost: {e}");
                std::process::exit(1);
            }
        }
        drop(fs);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("{files} files, microseconds per operation (median of 3 passes):");
    for (name, mut v) in results {
        v.sort_by(f64::total_cmp);
        println!("  {name:<15} {:8.1}", v[v.len() / 2]);
    }
}
