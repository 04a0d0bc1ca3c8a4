//! A replication receive cut in the middle waits on its staging branch; retention that
//! runs at the target meanwhile (days later, with a short window) must keep what the
//! publish will show. Two real stores, the real protocol over a socket pair, a faked
//! clock at the target; the published replica is checked with `--verify`'s digests.

use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::clock::FakeTime;
use dedupfs_core::containers::lock::Authority;
use dedupfs_core::fs::{Ctx, Fs, FsOptions, OpenFlags, ROOT_NODE};
use dedupfs_core::records::Timestamp;
use dedupfs_core::replica::{receive, send};
use dedupfs_core::store::{InitOptions, OpenOptions, Store};
use dedupfs_snapshot::retention;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

fn open(dir: &std::path::Path, clock: Arc<FakeTime>) -> Arc<Store> {
    Store::init(
        dir,
        &InitOptions {
            chunking: ChunkParams {
                min: 2048,
                avg: 8192,
                max: 32768,
            },
            gear_seed: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let opts = OpenOptions {
        time: clock,
        ..Default::default()
    };
    Arc::new(Store::open(dir, &opts).unwrap())
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A writer that fails after `left` bytes: the link is cut there.
struct Cut<W: Write> {
    w: W,
    left: usize,
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = b.len().min(self.left);
        self.left -= n;
        self.w.write(&b[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// One replication run from `src` to `dst` (`cut`: bytes after which the link fails).
fn run(
    src: &Store,
    dst: &Arc<Store>,
    cut: Option<usize>,
    verify: bool,
) -> Result<send::SendReport, String> {
    let (a, b) = UnixStream::pair().unwrap();
    let d = dst.clone();
    let recv = std::thread::spawn(move || {
        let mut r = a.try_clone().unwrap();
        let mut w = a;
        receive::serve_as(&d, None, &mut r, Some(&mut w), &mut |_| {}).map_err(|e| e.to_string())
    });
    let mut opts = send::SendOptions::new("c");
    opts.verify = verify;
    // Both ends of this side close before the receiver is joined (it then sees EOF).
    let res = {
        let mut r = b.try_clone().unwrap();
        let mut w = Cut {
            w: b,
            left: cut.unwrap_or(usize::MAX),
        };
        send::run(
            src,
            "c",
            &opts,
            Some(&mut r as &mut dyn Read),
            &mut w,
            &mut |_| {},
        )
    };
    let got = recv.join().unwrap();
    match (res, got) {
        (Ok(r), Ok(_)) => Ok(r),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
    }
}

/// The state of container `c` at its bookmark `b`, as per-inode digests.
fn digests_at(
    store: &Store,
    b: &str,
) -> std::collections::BTreeMap<dedupfs_core::ids::Ino, [u8; 16]> {
    let ci = store.registry().by_name("c").unwrap();
    let p = dedupfs_core::points::resolve(store, &ci.rec, b).unwrap();
    let rp = store.registry().read_point(p.branch, p.version);
    let key = dedupfs_core::replica::PairKey([9; 32]);
    dedupfs_core::replica::verify::digests(store, &rp, ci.root(), &key).unwrap()
}

fn write(fs: &Fs, c: u64, name: &str, data: &[u8]) {
    let (node, fh) = match fs.lookup(&Ctx::root(), c, name.as_bytes()) {
        Ok(a) => {
            fs.truncate(a.node, 0).unwrap();
            (
                a.node,
                fs.open(&Ctx::root(), a.node, OpenFlags::write_only())
                    .unwrap(),
            )
        }
        Err(_) => {
            let (a, fh) = fs
                .create(
                    &Ctx::root(),
                    c,
                    name.as_bytes(),
                    0o644,
                    OpenFlags::write_only(),
                )
                .unwrap();
            (a.node, fh)
        }
    };
    fs.write(node, fh, 0, data).unwrap();
    fs.release(fh).unwrap();
    fs.flush_all().unwrap();
}

#[test]
fn target_retention_keeps_an_unfinished_receive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp {
        sec: 1_800_000_000,
        nsec: 0,
    };
    let (sclock, dclock) = (FakeTime::new(t0), FakeTime::new(t0));
    let src = open(&dir.path().join("a"), sclock);
    let dst = open(&dir.path().join("b"), dclock.clone());
    let scratch = open(&dir.path().join("s"), FakeTime::new(t0));
    let fs = Fs::new(
        src.clone(),
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    for i in 0..4u64 {
        write(&fs, c, &format!("f{i}"), &noise(3 << 20, i + 1));
    }
    // Two points: the bookmark, then the live state where f0 was rewritten.
    dedupfs_snapshot::bookmark::create(&src, Some(&**fs.core()), "c", "b1", "user").unwrap();
    write(&fs, c, "f0", &noise(1 << 20, 99));

    // How long the whole stream is (a run into another fresh store), then a run into
    // the target cut 3 bytes before its end: every point arrived, the publish did not.
    let whole = run(&src, &scratch, None, false).unwrap().wire_bytes as usize;
    assert!(run(&src, &dst, Some(whole - 3), false).is_err());
    let cid = dst.registry().by_name("c").unwrap().id();
    let st = receive::staging(&dst, cid)
        .unwrap()
        .expect("an unfinished receive");
    assert_eq!(st.done.len(), 2, "{st:?}");

    // Three days later the target prunes with a one-hour window.
    dclock.advance(Duration::from_secs(3 * 86_400));
    dedupfs_core::admin::set_container(
        &dst,
        "c",
        &dedupfs_core::admin::SettingsChange {
            retention: Some(Some("all=1h".into())),
            ..Default::default()
        },
        Authority::Normal,
        &retention::keeps_less,
    )
    .unwrap();
    retention::prune(&dst, "c", dst.committer.clock().wall()).unwrap();

    // The next run resumes and publishes: the live state and the bookmark are whole.
    let rep = run(&src, &dst, None, true).unwrap();
    assert!(rep.resumed, "{rep:?}");
    let v = rep.verify.expect("verified");
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.inodes, 5);
    assert_eq!(digests_at(&dst, "b1"), digests_at(&src, "b1"));
}

fn hello(target: &str) -> dedupfs_core::replica::wire::Msg {
    dedupfs_core::replica::wire::Msg::Hello {
        proto: dedupfs_core::replica::PROTOCOL,
        source_store: "0123456789abcdef0123456789abcdef".into(),
        source_container: "c".into(),
        target_container: target.into(),
        pair_key: [5; 32],
        chunk_max: 32768,
        interactive: false,
        mode: dedupfs_core::replica::wire::Mode::Normal,
    }
}

/// A receive of `msgs` (a one-way stream) into `dst`.
fn receive_msgs(dst: &Store, msgs: &[dedupfs_core::replica::wire::Msg]) -> String {
    let mut buf = Vec::new();
    for m in msgs {
        dedupfs_core::replica::wire::write_msg(&mut buf, m).unwrap();
    }
    match receive::serve_as(dst, None, &mut buf.as_slice(), None, &mut |_| {}) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_second_receive_into_a_container_is_refused_and_bad_names_are_protocol_errors() {
    use dedupfs_core::replica::wire::{encode_items, Item, Msg};
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp {
        sec: 1_800_000_000,
        nsec: 0,
    };
    let dst = open(&dir.path().join("b"), FakeTime::new(t0));

    // A receive waiting for its plan holds the container; a second one is refused.
    let (a, mut b) = UnixStream::pair().unwrap();
    dedupfs_core::replica::wire::write_msg(&mut b, &hello("r")).unwrap();
    let d = dst.clone();
    let first = std::thread::spawn(move || {
        let mut r = a;
        receive::serve_as(&d, None, &mut r, None, &mut |_| {}).map_err(|e| e.to_string())
    });
    let mut second = String::new();
    for _ in 0..200 {
        second = receive_msgs(&dst, &[hello("r")]);
        if second.contains("already running") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(second.contains("already running"), "{second}");
    drop(b);
    assert!(first.join().unwrap().is_err());

    // An entry name with a '/' (or '.', '..', empty) never reaches the store.
    let plan = Msg::Plan {
        plan_id: 1,
        base: None,
        base_local: None,
        points: vec![dedupfs_core::replica::PointMeta {
            kind: dedupfs_core::replica::PointKind::Live,
            name: String::new(),
            bookmark_kind: String::new(),
            source_branch: 1,
            source_version: 5,
            time: t0.sec,
            time_nsec: 0,
        }],
        resume: false,
        root: 3,
    };
    for bad in [&b"a/b"[..], b"..", b""] {
        let items = vec![Item::Dirents {
            dir: dedupfs_core::ids::Ino(3),
            changes: vec![(
                bad.to_vec(),
                Some(dedupfs_core::records::DirentRec {
                    ino: dedupfs_core::ids::Ino(4),
                    kind: dedupfs_core::records::FileKind::RegularFile,
                }),
            )],
        }];
        let batch = Msg::Batch {
            point: 0,
            first_item: 0,
            n_items: 1,
            items: encode_items(&items),
            n_chunks: 0,
            chunks: dedupfs_core::replica::wire::pack_chunks(&[], 1).unwrap(),
        };
        let e = receive_msgs(&dst, &[hello("r"), plan.clone(), batch]);
        assert!(e.contains("not a valid file name"), "{e}");
    }
    // A huge inode number is refused before the allocator could be raised to it.
    let items = vec![Item::Gone {
        ino: dedupfs_core::ids::Ino(u64::MAX - 1),
    }];
    let batch = Msg::Batch {
        point: 0,
        first_item: 0,
        n_items: 1,
        items: encode_items(&items),
        n_chunks: 0,
        chunks: dedupfs_core::replica::wire::pack_chunks(&[], 1).unwrap(),
    };
    let e = receive_msgs(&dst, &[hello("r"), plan, batch]);
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn a_point_a_send_reads_is_kept_by_a_prune_that_runs_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp {
        sec: 1_800_000_000,
        nsec: 0,
    };
    let clock = FakeTime::new(t0);
    let src = open(&dir.path().join("a"), clock.clone());
    let fs = Fs::new(
        src.clone(),
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    write(&fs, c, "f", &noise(200_000, 1));
    let ci = src.registry().by_name("c").unwrap();
    let (b, v) = (ci.branch(), src.committer.head());
    let key = dedupfs_core::replica::PairKey([9; 32]);
    let rp = src.registry().read_point(b, v);
    let before = dedupfs_core::replica::verify::digests(&src, &rp, ci.root(), &key).unwrap();
    // Two later states: the one a day later is where the prune's floor lands.
    clock.advance(Duration::from_secs(86_400));
    write(&fs, c, "f", &noise(200_000, 3));
    clock.advance(Duration::from_secs(2 * 86_400));
    write(&fs, c, "f", &noise(200_000, 2));
    dedupfs_core::admin::set_container(
        &src,
        "c",
        &dedupfs_core::admin::SettingsChange {
            retention: Some(Some("all=1h".into())),
            ..Default::default()
        },
        Authority::Normal,
        &retention::keeps_less,
    )
    .unwrap();
    // A send reading (b, v) holds a pin: the prune keeps that state whole.
    let pin = dedupfs_core::replica::Pin::new(ci.id(), &[(b.0, v.0)]);
    retention::prune(&src, "c", src.committer.clock().wall()).unwrap();
    let after = dedupfs_core::replica::verify::digests(&src, &rp, ci.root(), &key).unwrap();
    assert_eq!(before, after);
    drop(pin);
    assert!(dedupfs_core::replica::pinned(ci.id()).is_empty());
}
