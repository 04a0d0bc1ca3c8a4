//! Retention locks end to end: through the CLI and a real mount, each refused operation
//! exits 7 (or EPERM through the mount) and changes nothing, read back afterwards; files
//! can still be deleted and overwritten, and the locked history brings them back; a daemon
//! whose system clock is moved a year ahead (libfaketime) does not expire a 1-day lock;
//! kill -9 in the middle of pruning never removes locked history.

use dedupfs_tests::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

fn refused(t: &TestStore, args: &[&str], what: &str) -> String {
    let out = t.cli(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 7, "{what}: exit 7 (locked) expected: {err}");
    assert!(err.contains("retention lock"), "{what}: {err}");
    err
}

/// The system clock, seconds since the epoch (the daemon under test runs on the same one).
fn wall_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `container set C --lock MODE --lock-for DURATION`, which must succeed.
fn set_lock(t: &TestStore, c: &str, mode: &str, dur: &str) {
    ok(&t.cli(&["container", "set", c, "--lock", mode, "--lock-for", dur]));
}

fn sums(dir: &Path) -> String {
    sh(&format!(
        "cd {} && find . -type f | sort | xargs -r sha256sum",
        dir.display()
    ))
}

#[test]
fn a_lock_refuses_what_would_destroy_history_and_keeps_files_changeable() {
    let t = TestStore::mounted("gc_idle=0,prune_interval=0");
    let c = t.path("c");
    fs::create_dir(&c).unwrap();
    fs::write(c.join("a"), pseudo_random(300_000, 1)).unwrap();
    fs::write(c.join("b"), b"first").unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "b1"]));
    ok(&t.cli(&["snapshot", "create", "c", "s1"]));
    let b1 = sums(&t.path(".at/c/b1"));
    ok(&t.cli(&[
        "container",
        "set",
        "c",
        "--retention",
        "all=1d,every=1d/30d",
    ]));

    // Locking needs both parts, a sane duration and a known mode (exit 2).
    for (args, why) in [
        (
            vec!["--lock", "governance"],
            "both --lock MODE and --lock-for",
        ),
        (
            vec!["--lock", "forever", "--lock-for", "1d"],
            "governance, compliance or none",
        ),
        (
            vec!["--lock", "governance", "--lock-for", "0d"],
            "positive duration",
        ),
    ] {
        let mut a = vec!["container", "set", "c"];
        a.extend(args);
        let out = t.cli(&a);
        assert_eq!(code(&out), 2, "{why}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{why}");
    }
    let show = json(&t.cli(&[
        "container",
        "set",
        "c",
        "--lock",
        "governance",
        "--lock-for",
        "1d",
        "--json",
    ]));
    assert_eq!(show["settings"]["lock"]["mode"], "governance", "{show}");
    assert_eq!(show["stats"]["lock"]["secs"], 86_400, "{show}");
    let text = ok(&t.cli(&["container", "show", "c"]));
    assert!(text.contains("governance for 1 day"), "{text}");
    let settings = || json(&t.cli(&["container", "show", "c", "--json"]))["settings"].clone();
    let before = settings();

    // Every operation that would destroy history is refused, and changes nothing.
    refused(
        &t,
        &["container", "delete", "c", "--force"],
        "container delete",
    );
    refused(&t, &["bookmark", "delete", "c", "b1"], "bookmark delete");
    refused(&t, &["snapshot", "delete", "s1"], "snapshot delete");
    refused(
        &t,
        &["container", "set", "c", "--lock", "none"],
        "lock removal",
    );
    refused(
        &t,
        &["container", "set", "c", "--lock-for", "1h"],
        "shortening",
    );
    refused(
        &t,
        &["container", "set", "c", "--retention", "all=1h"],
        "keeping less",
    );
    assert_eq!(settings(), before);

    // Files still change through the mount: backup software rotates its files.
    fs::remove_file(c.join("a")).unwrap();
    fs::write(c.join("b"), b"second").unwrap();
    assert_eq!(fs::read(c.join("b")).unwrap(), b"second");
    // The container, once empty, cannot be removed through the mount either.
    fs::remove_file(c.join("b")).unwrap();
    let e = fs::remove_dir(&c).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "rmdir of a locked container: {e}"
    );
    let log = fs::read_to_string(t.store.join("dedupfs.log")).unwrap_or_default();
    assert!(
        log.contains("deleting the container is refused"),
        "the log says why"
    );

    // Read back: points, settings and the history of the deleted files are all there.
    assert_eq!(sums(&t.path(".at/c/b1")), b1);
    assert_eq!(sums(&t.path(".snapshots/s1")), b1);
    let bms = json(&t.cli(&["bookmark", "list", "c", "--json"]));
    assert_eq!(bms.as_array().map(|a| a.len()), Some(1), "{bms}");
    // And rollback brings them back (non-destructive: the emptied state is kept too).
    ok(&t.cli(&["rollback", "c", "--to", "b1"]));
    assert_eq!(sums(&c), b1);

    // Compliance: stricter is allowed; then nothing weakens it, not even root's bypass.
    set_lock(&t, "c", "compliance", "2d");
    for (args, what) in [
        (vec!["--lock", "none"], "removal"),
        (vec!["--lock", "governance"], "weakening"),
        (vec!["--lock-for", "1d"], "shortening"),
    ] {
        let mut a = vec!["container", "set", "c", "--bypass-governance"];
        a.extend(args);
        let err = refused(&t, &a, what);
        assert!(err.contains("compliance"), "{err}");
    }
    refused(
        &t,
        &["container", "delete", "c", "--force", "--bypass-governance"],
        "compliance delete",
    );
    let stats = t.stats();
    assert!(
        stats["clock"]["compliance"].as_i64().unwrap() > 0,
        "{stats}"
    );
    let text = ok(&t.cli(&["stats"]));
    assert!(
        text.contains("locked") && text.contains("compliance for 2 days"),
        "{text}"
    );
}

#[test]
fn governance_gives_way_to_root_with_bypass_and_unmounted_stores_obey_the_same_rules() {
    let mut t = TestStore::mounted("gc_idle=0,prune_interval=0");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/f"), b"x").unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "b1"]));
    set_lock(&t, "c", "governance", "7d");
    t.umount();
    // The CLI on the store itself (no daemon) refuses the same.
    refused(
        &t,
        &["bookmark", "delete", "c", "b1"],
        "unmounted bookmark delete",
    );
    refused(
        &t,
        &["container", "delete", "c", "--force"],
        "unmounted delete",
    );
    // Root with --bypass-governance may (these tests run as root).
    ok(&t.cli(&["bookmark", "delete", "c", "b1", "--bypass-governance"]));
    ok(&t.cli(&[
        "container",
        "set",
        "c",
        "--lock",
        "none",
        "--bypass-governance",
    ]));
    ok(&t.cli(&["container", "delete", "c", "--force"]));
}

/// The libfaketime library, if installed (tests/setup.sh --test-tools installs it).
fn libfaketime() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

#[test]
fn a_daemon_whose_system_clock_jumps_a_year_ahead_keeps_a_one_day_lock() {
    let lib =
        libfaketime().expect("libfaketime (apt install faketime; tests/setup.sh --test-tools)");
    let t = TestStore::new();
    // The daemon's system clock comes from this file (re-read at every call); its
    // monotonic and boot clocks are left alone, as `date -s` leaves them alone.
    let offset = t.dir.path().join("faketime");
    fs::write(&offset, "+0").unwrap();
    let o = "allow_other,gc_idle=0,prune_interval=0";
    let out = Command::new(bin())
        .args([
            "mount",
            t.store.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
            "-o",
            o,
        ])
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    ok(&out);
    let _mounted = Unmount(t.mnt.clone());
    let c = t.path("c");
    fs::create_dir(&c).unwrap();
    fs::write(c.join("f"), b"before the jump").unwrap();
    ok(&t.cli(&["sync"]));
    let t1 = json(&t.cli(&["stats", "--json"]))["clock"]["system"]
        .as_i64()
        .unwrap();
    ok(&t.cli(&["container", "set", "c", "--retention", "all=1s"]));
    set_lock(&t, "c", "compliance", "1d");

    fs::write(&offset, "+365d").unwrap();
    fs::write(c.join("f"), b"after the jump").unwrap();
    ok(&t.cli(&["sync"]));
    let clock = &json(&t.cli(&["stats", "--json"]))["clock"];
    let skew = clock["system"].as_i64().unwrap() - clock["compliance"].as_i64().unwrap();
    assert!(
        (364 * 86_400..=366 * 86_400).contains(&skew),
        "the system clock is a year ahead of the compliance clock: {clock}"
    );
    // The daemon's own prune sees a year-old history against a 1-second policy: the lock
    // keeps it, and says so.
    let r = json(&t.cli(&["retention", "prune", "c", "--json"]));
    assert_eq!(r["pruned_versions"], 0, "{r}");
    assert!(r["held_by_lock"].as_u64().is_some(), "{r}");
    assert_eq!(
        fs::read(t.path(&format!(".at/c/@{}/f", t1 + 1))).unwrap(),
        b"before the jump"
    );
    let log = fs::read_to_string(t.store.join("dedupfs.log")).unwrap();
    assert!(
        log.contains("the system clock jumped forward"),
        "the jump is logged"
    );
    let text = ok(&t.cli(&["retention", "prune", "c"]));
    assert!(text.contains("held by lock"), "{text}");
}

#[test]
fn kill_9_during_pruning_never_removes_locked_history() {
    // Container a is locked for 20 s; b shares its data and is not locked; both keep 1 s
    // of history. Each round writes a new state, starts both prunes and kills the daemon
    // after a random delay; after the restart every state of a younger than the lock (at
    // the kill, with 2 s to spare for the clocks) reads back exactly.
    let mut t = TestStore::mounted("gc_idle=0,prune_interval=0");
    for n in ["a", "b"] {
        fs::create_dir(t.path(n)).unwrap();
        ok(&t.cli(&["container", "set", n, "--retention", "all=1s"]));
    }
    set_lock(&t, "a", "governance", "20s");
    let mut rng = Rng(7);
    let mut states: Vec<(i64, String)> = Vec::new();
    let started = std::time::Instant::now();
    let mut round = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(45) {
        round += 1;
        for n in ["a", "b"] {
            for i in 0..20u64 {
                let data = pseudo_random(40_000, rng.below(50) + i * 1000);
                fs::write(t.path(&format!("{n}/f{i}")), data).unwrap();
            }
        }
        ok(&t.cli(&["sync"]));
        // A moment after these commits and before the next round's (1.1 s later).
        let now = t.stats()["clock"]["system"].as_i64().unwrap();
        states.push((now + 1, sums(&t.path("a"))));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let pid = t.daemon_pid();
        let prunes: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| {
                Command::new(bin())
                    .args([
                        "--store",
                        t.store.to_str().unwrap(),
                        "retention",
                        "prune",
                        n,
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(150)));
        let killed_at = wall_secs();
        assert_eq!(t.daemon_pid(), pid);
        t.kill9();
        for mut p in prunes {
            let _ = p.wait();
        }
        t.mount("gc_idle=0,prune_interval=0");
        for (when, want) in &states {
            if *when > killed_at - 18 {
                let at = t.path(&format!(".at/a/@{when}"));
                assert_eq!(
                    &sums(&at),
                    want,
                    "round {round}: the state at {when} is locked"
                );
            }
        }
    }
    assert!(round >= 5, "only {round} rounds");
    let f = json(&t.cli(&["fsck", "--json"]));
    assert_eq!(
        f["unrepaired"], 0,
        "reference counts intact after the kills: {f}"
    );
}
