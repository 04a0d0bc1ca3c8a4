//! Retention locks on the core, under a faked clock: a jump of the system clock does not
//! expire a lock, an expired lock releases its history to pruning, every refused operation
//! changes nothing (read back afterwards), and the core's pruning refuses a batch inside
//! the window whatever its caller decided.

use dedupfs_core::admin::{self, LockChange, SettingsChange};
use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::clock::FakeTime;
use dedupfs_core::containers::lock::{Authority, LockMode};
use dedupfs_core::containers::{ContainerError, SnapshotMode};
use dedupfs_core::fs::{Ctx, Fs, FsOptions, OpenFlags, ROOT_NODE};
use dedupfs_core::history::{self, Family, Pruning};
use dedupfs_core::ids::ContainerId;
use dedupfs_core::kv::mem::MemKv;
use dedupfs_core::records::Timestamp;
use dedupfs_core::store::{OpenOptions, Store, StoreError};
use dedupfs_snapshot::retention::{self, keeps_less};
use dedupfs_snapshot::snapshot::{self, CreateRequest};
use dedupfs_snapshot::{bookmark, HistoryError};
use std::sync::Arc;
use std::time::Duration;

const PARAMS: ChunkParams = ChunkParams {
    min: 2048,
    avg: 8192,
    max: 32768,
};
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

struct T {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    fs: Fs,
    clock: Arc<FakeTime>,
    t0: i64,
    c: u64,
}

fn setup(retention: &str) -> T {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp {
        sec: 1_800_000_000,
        nsec: 0,
    };
    let clock = FakeTime::new(t0);
    let opts = OpenOptions {
        time: clock.clone(),
        ..Default::default()
    };
    let store = Arc::new(
        Store::open_with_kv_opts(dir.path(), PARAMS, Arc::new(MemKv::new()), &opts).unwrap(),
    );
    let fs = Fs::new(
        store.clone(),
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    set_policy(&store, retention);
    T {
        _dir: dir,
        store,
        fs,
        clock,
        t0: t0.sec,
        c,
    }
}

fn set(store: &Store, ch: SettingsChange, who: Authority) -> Result<(), StoreError> {
    admin::set_container(store, "c", &ch, who, &keeps_less).map(|_| ())
}

/// Sets the retention policy (which must be allowed).
fn set_policy(store: &Store, policy: &str) {
    let ch = SettingsChange {
        retention: Some(Some(policy.into())),
        ..Default::default()
    };
    set(store, ch, Authority::Normal).unwrap();
}

fn lock(mode: LockMode, secs: u64) -> SettingsChange {
    SettingsChange {
        lock: Some(LockChange::Set {
            mode: Some(mode),
            secs: Some(secs as i64),
        }),
        ..Default::default()
    }
}

fn write(t: &T, name: &str, data: &[u8]) {
    let fh = match t.fs.lookup(&Ctx::root(), t.c, name.as_bytes()) {
        Ok(a) => {
            t.fs.truncate(a.node, 0).unwrap();
            let fh =
                t.fs.open(&Ctx::root(), a.node, OpenFlags::write_only())
                    .unwrap();
            (a.node, fh)
        }
        Err(_) => {
            let (a, fh) =
                t.fs.create(
                    &Ctx::root(),
                    t.c,
                    name.as_bytes(),
                    0o644,
                    OpenFlags::write_only(),
                )
                .unwrap();
            (a.node, fh)
        }
    };
    t.fs.write(fh.0, fh.1, 0, data).unwrap();
    t.fs.release(fh.1).unwrap();
    t.fs.flush_all().unwrap();
}

/// Runs retention now (the store's system clock).
fn prune_now(t: &T) -> retention::RetentionReport {
    retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap()
}

/// Writes `f` as `a`, then two hours later as `b`.
fn two_states(t: &T, a: &[u8], b: &[u8]) {
    write(t, "f", a);
    t.clock.advance(Duration::from_secs(2 * HOUR));
    write(t, "f", b);
}

/// The file as the container held it at `at` (an expression `@SECONDS`), read through a
/// read-only snapshot made for the purpose; `None` when that moment cannot be read.
fn read_at(t: &T, at: i64, name: &str) -> Option<Vec<u8>> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let snap = format!("probe{n}");
    let at = format!("@{at}");
    snapshot::create(
        &t.store,
        Some(t.fs.core()),
        &CreateRequest {
            container: "c",
            name: &snap,
            mode: SnapshotMode::Ro,
            at: Some(&at),
            flush: true,
        },
    )
    .map_err(|e| eprintln!("read_at {at}: {e}"))
    .ok()?;
    let snaps =
        t.fs.lookup(&Ctx::root(), ROOT_NODE, b".snapshots")
            .unwrap()
            .node;
    let root =
        t.fs.lookup(&Ctx::root(), snaps, snap.as_bytes())
            .unwrap()
            .node;
    let out =
        t.fs.lookup(&Ctx::root(), root, name.as_bytes())
            .ok()
            .map(|a| {
                let fh =
                    t.fs.open(&Ctx::root(), a.node, OpenFlags::read_only())
                        .unwrap();
                let d = t.fs.read(a.node, fh, 0, 1 << 20).unwrap();
                t.fs.release(fh).unwrap();
                d
            });
    // Under a governance lock root's bypass removes the probe; under compliance it stays
    // (created inside the window), which is why each probe has its own name.
    let _ = snapshot::delete(
        &t.store,
        Some(t.fs.core()),
        &snap,
        Authority::BypassGovernance,
    );
    out
}

fn locked(e: StoreError) -> String {
    match e {
        StoreError::Container(ContainerError::Locked { message, .. }) => message,
        other => panic!("expected a lock refusal, got {other}"),
    }
}

fn hist_locked(e: HistoryError) -> String {
    match e {
        HistoryError::Container(ContainerError::Locked { message, .. }) => message,
        HistoryError::Store(s) => locked(s),
        other => panic!("expected a lock refusal, got {other}"),
    }
}

#[test]
fn a_year_forward_jump_of_the_system_clock_does_not_expire_a_one_day_lock() {
    let t = setup("all=1h");
    two_states(&t, b"version one", b"version two");
    set(&t.store, lock(LockMode::Compliance, DAY), Authority::Normal).unwrap();
    // Someone sets the system clock a year ahead; twenty minutes pass.
    t.clock.set_wall_by(365 * DAY as i64);
    t.clock.advance(Duration::from_secs(1200));
    let now = t.store.committer.clock().wall();
    let r = retention::prune(&t.store, "c", now).unwrap();
    assert_eq!(
        r.pruned_versions, 0,
        "nothing inside the lock is pruned: {r:?}"
    );
    assert!(r.held_by_lock.is_some(), "the prune says the lock held it");
    let w = r.lock.expect("the report shows the lock");
    assert!(
        w.start < t.t0 + 1,
        "the window starts a day before the compliance clock, not the system clock: {w:?}"
    );
    assert_eq!(read_at(&t, t.t0 + 1, "f").unwrap(), b"version one");
    assert_eq!(
        read_at(&t, t.t0 + 2 * HOUR as i64 + 1, "f").unwrap(),
        b"version two"
    );
    // 23 hours after the first write (the compliance clock caught up ~24 minutes of the
    // jump meanwhile), the first state is still inside the 1-day window.
    t.clock.advance(Duration::from_secs(20 * HOUR + 40 * 60));
    let r = retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap();
    assert_eq!(r.pruned_versions, 0, "{r:?}");
    assert_eq!(read_at(&t, t.t0 + 1, "f").unwrap(), b"version one");
    // Three more hours: the window starts after the second write, so the first state has
    // left it and the 1-hour policy prunes it.
    t.clock.advance(Duration::from_secs(3 * HOUR));
    let r = retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap();
    assert!(r.pruned_versions > 0, "{r:?}");
    assert_eq!(read_at(&t, t.t0 + 1, "f"), None);
}

#[test]
fn an_expired_lock_releases_its_history_and_pruning_then_proceeds() {
    let t = setup("all=1h");
    set(&t.store, lock(LockMode::Governance, DAY), Authority::Normal).unwrap();
    two_states(&t, b"old", b"new");
    t.clock.advance(Duration::from_secs(2 * HOUR));
    let r = retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap();
    assert_eq!(r.pruned_versions, 0, "inside the lock");
    assert!(r.held_by_lock.is_some());
    assert_eq!(read_at(&t, t.t0 + 1, "f").unwrap(), b"old");
    // A day later the old state has left the window: the policy (1 hour) now prunes it.
    t.clock.advance(Duration::from_secs(DAY));
    let r = retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap();
    assert!(r.pruned_versions > 0, "{r:?}");
    assert_eq!(r.held_by_lock, None);
    assert_eq!(
        read_at(&t, t.t0 + 1, "f"),
        None,
        "pruned: that moment is gone"
    );
    assert_eq!(
        read_at(&t, t.store.committer.clock().wall().sec - 60, "f").unwrap(),
        b"new",
        "the state at the window's start stays"
    );
}

#[test]
fn each_refused_operation_changes_nothing() {
    let t = setup("all=7d,every=1d/30d");
    write(&t, "f", b"kept");
    bookmark::create(&t.store, Some(t.fs.core()), "c", "b1", "app").unwrap();
    let rw = CreateRequest {
        container: "c",
        name: "rw",
        mode: SnapshotMode::Rw,
        at: None,
        flush: true,
    };
    snapshot::create(&t.store, Some(t.fs.core()), &rw).unwrap();
    t.clock.advance(Duration::from_secs(HOUR));
    set(
        &t.store,
        lock(LockMode::Compliance, 30 * DAY),
        Authority::Normal,
    )
    .unwrap();
    let settings = || {
        t.store
            .registry()
            .by_name("c")
            .unwrap()
            .rec
            .settings
            .clone()
    };
    let before = settings();

    let root = Authority::BypassGovernance;
    for (what, change) in [
        (
            "removing",
            SettingsChange {
                lock: Some(LockChange::Remove),
                ..Default::default()
            },
        ),
        ("shortening", lock(LockMode::Compliance, DAY)),
        ("weakening", lock(LockMode::Governance, 30 * DAY)),
        (
            "keeping less",
            SettingsChange {
                retention: Some(Some("all=1d".into())),
                ..Default::default()
            },
        ),
    ] {
        let m = locked(set(&t.store, change, root).unwrap_err());
        assert!(m.contains("compliance"), "{what}: {m}");
        assert_eq!(settings(), before, "{what} changed nothing");
    }
    let m = locked(admin::delete_container(&t.store, "c", true, root, &mut |_| {}).unwrap_err());
    assert!(m.contains("deleting the container"), "{m}");
    let m = hist_locked(bookmark::delete(&t.store, "c", "b1", root).unwrap_err());
    assert!(m.contains("bookmark 'b1'"), "{m}");
    let m = hist_locked(snapshot::delete(&t.store, Some(t.fs.core()), "rw", root).unwrap_err());
    assert!(m.contains("snapshot 'rw'"), "{m}");
    // Through the filesystem: rmdir of the (emptied) container is EPERM; files still go.
    t.fs.unlink(&Ctx::root(), t.c, b"f").unwrap();
    t.fs.flush_all().unwrap();
    let e = t.fs.rmdir(&Ctx::root(), ROOT_NODE, b"c").unwrap_err();
    assert_eq!(format!("{e:?}"), "NotPermitted(\"retention lock\")");

    // Read back: every point is there, and the deleted file in the history.
    assert!(t.store.registry().by_name("c").is_some());
    assert_eq!(bookmark::list(&t.store, "c").unwrap().len(), 1);
    assert!(snapshot::record(&t.store, "rw").is_ok());
    assert_eq!(read_at(&t, t.t0 + 1, "f").unwrap(), b"kept");
    assert_eq!(settings(), before);
    // Lengthening, and a policy that keeps more, are allowed.
    set(
        &t.store,
        lock(LockMode::Compliance, 60 * DAY),
        Authority::Normal,
    )
    .unwrap();
    set_policy(&t.store, "all=14d,every=1d/60d");
}

#[test]
fn governance_yields_to_root_bypass_only() {
    let t = setup("all=1h");
    write(&t, "f", b"x");
    bookmark::create(&t.store, Some(t.fs.core()), "c", "b1", "user").unwrap();
    set(&t.store, lock(LockMode::Governance, DAY), Authority::Normal).unwrap();
    let m = hist_locked(bookmark::delete(&t.store, "c", "b1", Authority::Normal).unwrap_err());
    assert!(m.contains("--bypass-governance"), "{m}");
    let m = locked(
        set(
            &t.store,
            lock(LockMode::Governance, HOUR),
            Authority::Normal,
        )
        .unwrap_err(),
    );
    assert!(m.contains("shortening"), "{m}");
    bookmark::delete(&t.store, "c", "b1", Authority::BypassGovernance).unwrap();
    set(
        &t.store,
        lock(LockMode::Governance, HOUR),
        Authority::BypassGovernance,
    )
    .unwrap();
    set(
        &t.store,
        SettingsChange {
            lock: Some(LockChange::Remove),
            ..Default::default()
        },
        Authority::BypassGovernance,
    )
    .unwrap();
    admin::delete_container(&t.store, "c", true, Authority::Normal, &mut |_| {}).unwrap();
}

#[test]
fn old_read_only_snapshots_may_go_but_read_write_ones_are_live_and_stay() {
    let t = setup("all=1h");
    write(&t, "f", b"x");
    for (name, mode) in [("ro", SnapshotMode::Ro), ("rw", SnapshotMode::Rw)] {
        let req = CreateRequest {
            container: "c",
            name,
            mode,
            at: None,
            flush: true,
        };
        snapshot::create(&t.store, Some(t.fs.core()), &req).unwrap();
    }
    set(&t.store, lock(LockMode::Compliance, DAY), Authority::Normal).unwrap();
    t.clock.advance(Duration::from_secs(3 * DAY));
    write(&t, "f", b"y");
    // Three days old, outside the 1-day window: the read-only one may be deleted.
    snapshot::delete(&t.store, Some(t.fs.core()), "ro", Authority::Normal).unwrap();
    // The read-write one's tree is readable now, so it is inside the window whatever its age.
    let m = hist_locked(
        snapshot::delete(&t.store, Some(t.fs.core()), "rw", Authority::Normal).unwrap_err(),
    );
    assert!(m.contains("snapshot 'rw'"), "{m}");
    assert!(snapshot::record(&t.store, "rw").is_ok());
}

#[test]
fn the_cores_pruning_refuses_a_batch_inside_the_window() {
    let t = setup("all=1h");
    write(&t, "f", b"one");
    t.clock.advance(Duration::from_secs(10));
    write(&t, "f", b"two");
    set(&t.store, lock(LockMode::Compliance, DAY), Authority::Normal).unwrap();
    // A caller that ignores the lock: plans to keep only the newest state and drops the
    // older version of every inode.
    let ci = t.store.registry().by_name("c").unwrap();
    let mut p = Pruning::new(dedupfs_core::ids::Version(t.store.committer.head().0));
    history::walk_branch(&t.store, Family::Inodes, ci.branch(), |r| {
        if let Some(v) = r.versions.get(1) {
            p.drop_version(r, v);
        }
        Ok::<_, dedupfs_core::kv::KvError>(())
    })
    .unwrap();
    assert!(!p.is_empty());
    let m = locked(p.commit(&t.store, ContainerId(ci.rec.id)).unwrap_err());
    assert!(m.contains("locked history"), "{m}");
    assert_eq!(read_at(&t, t.t0, "f").unwrap(), b"one");
}

#[test]
fn a_finer_tier_added_later_does_not_resurrect_pruned_moments() {
    // Not a lock rule but the floor's: a tier point below an earlier floor would name a
    // state that prune already cut (only partly readable); it must stay refused.
    let t = setup("all=1h");
    for (i, data) in [b"s0", b"s1", b"s2", b"s3"].iter().enumerate() {
        if i > 0 {
            t.clock.advance(Duration::from_secs(600));
        }
        write(&t, "f", *data);
    }
    t.clock.advance(Duration::from_secs(3 * HOUR));
    assert!(prune_now(&t).pruned_versions > 0);
    set_policy(&t.store, "all=1h,every=10m/1d");
    // A new state, and time for the cut to move past it: the next prune plans again.
    write(&t, "f", b"s4");
    t.clock.advance(Duration::from_secs(2 * HOUR));
    retention::prune(&t.store, "c", t.store.committer.clock().wall()).unwrap();
    let at = format!("@{}", t.t0 + 900);
    let r = snapshot::create(
        &t.store,
        Some(t.fs.core()),
        &CreateRequest {
            container: "c",
            name: "old",
            mode: SnapshotMode::Ro,
            at: Some(&at),
            flush: true,
        },
    );
    assert!(r.is_err(), "a pruned moment is refused, not half read");
}

#[test]
fn a_time_view_in_use_when_its_moment_is_pruned_goes_stale() {
    // Not a lock rule but the floor's: a `.at` view a process holds (a shell inside it,
    // an open file) must not read a half-pruned tree after a prune cut its moment.
    let t = setup("all=1h");
    two_states(&t, b"old", b"new");
    let at = t.fs.lookup(&Ctx::root(), ROOT_NODE, b".at").unwrap().node;
    let c_at = t.fs.lookup(&Ctx::root(), at, b"c").unwrap().node;
    let when = format!("@{}", t.t0 + 1);
    let root =
        t.fs.lookup(&Ctx::root(), c_at, when.as_bytes())
            .unwrap()
            .node;
    let f = t.fs.lookup(&Ctx::root(), root, b"f").unwrap().node;
    assert!(t.fs.getattr(f).is_ok());
    // Two hours on, the 1-hour policy cuts everything before "new".
    t.clock.advance(Duration::from_secs(2 * HOUR));
    assert!(prune_now(&t).pruned_versions > 0);
    assert!(t.fs.getattr(f).is_err(), "stale, not half read");
    assert!(t.fs.getattr(root).is_err());
    // A moment still kept (the live one) reads on.
    let live = t.fs.lookup(&Ctx::root(), t.c, b"f").unwrap().node;
    assert!(t.fs.getattr(live).is_ok());
}
