//! Replication end to end, with the real binary: `replicate` between mounted stores (the
//! daemons run both halves) and unmounted ones, the one-way `send | receive` pipe, kill -9
//! of either side at random moments followed by a resume, a chunk damaged in transit,
//! failover (promote) and failback, and the ssh form against an sshd on 127.0.0.1.
//!
//! Trees are compared by everything `find` and `getfattr` show (type, mode, owner, link
//! count, size, mtime, symlink target, xattrs) and by content hashes.

use dedupfs_tests::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

/// Everything a tree shows, as text (for equality).
fn sig(dir: &Path) -> String {
    sh(&format!(
        "cd {d} && find . -mindepth 1 -printf '%P %y %m %U %G %n %s %T@ %l\\n' | sort && \
         find . -type f | sort | xargs -r sha256sum && getfattr -R -d -m - . 2>/dev/null | sort",
        d = dir.display()
    ))
}

/// Unmounts and mounts again, so the tree reads as committed (the kernel can hold a
/// file's mtime a few ms off what the daemon committed until it drops its cache).
fn remount(t: &mut TestStore) {
    t.umount();
    t.mount("gc_idle=0,prune_interval=0");
}

/// The replica `c` of unmounted `dst` reads as the source's `c` (mounted `src`, read as
/// committed); both are unmounted after.
fn replica_matches(src: &mut TestStore, dst: &mut TestStore, c: &Path) {
    remount(src);
    dst.mount("ro");
    same_tree(c, &dst.path("c"));
    dst.umount();
    src.umount();
}

fn same_tree(a: &Path, b: &Path) {
    let (x, y) = (sig(a), sig(b));
    if x != y {
        let d = sh(&format!(
            "diff <(echo {:?}) <(echo {:?}) | head -20 || true",
            x, y
        ));
        panic!("{} and {} differ:\n{d}", a.display(), b.display());
    }
}

/// A mixed tree: random and repetitive files, a hard link, a symlink, an xattr, nesting.
fn fill(dir: &Path, seed: u64, files: usize) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for i in 0..files {
        let len = 4096 + (seed as usize * 7919 + i * 104_729) % 300_000;
        fs::write(
            dir.join(format!("sub/f{i}.bin")),
            pseudo_random(len, seed + i as u64),
        )
        .unwrap();
    }
    fs::write(dir.join("sub/deeper/text.txt"), "hello\n".repeat(5000)).unwrap();
    fs::hard_link(dir.join("sub/f0.bin"), dir.join("hard")).unwrap();
    std::os::unix::fs::symlink("sub/deeper/text.txt", dir.join("sym")).unwrap();
    sh(&format!(
        "setfattr -n user.tag -v v{seed} {}",
        dir.join("sub/f1.bin").display()
    ));
}

fn replicate(src: &TestStore, c: &str, to: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["replicate", c, "--to", to.to_str().unwrap(), "--json"];
    a.extend_from_slice(extra);
    json(&src.cli(&a))
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn mounted_stores_replicate_full_then_only_what_changed() {
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let mut dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    dst.mount("gc_idle=0,prune_interval=0");
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 1, 12);
    ok(&src.cli(&["bookmark", "create", "c", "b1"]));
    ok(&src.cli(&["snapshot", "create", "c", "s1"]));
    let full = replicate(&src, "c", &dst.store, &[]);
    assert!(n(&full, "chunks_sent") > 0, "{full}");
    remount(&mut src);
    same_tree(&c, &dst.path("c"));
    same_tree(&src.path(".at/c/b1"), &dst.path(".at/c/b1"));
    same_tree(&src.path(".snapshots/s1"), &dst.path(".snapshots/s1"));
    // The replica is read-only until promoted.
    let err = fs::write(dst.path("c/new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let show = json(&dst.cli(&["container", "show", "c", "--json"]));
    assert!(show.to_string().contains("\"replica\""), "{show}");
    // A snapshot of a replica's point, made at the target, shows that point.
    ok(&dst.cli(&["snapshot", "create", "c", "at-b1", "--at", "b1"]));
    same_tree(&src.path(".at/c/b1"), &dst.path(".snapshots/at-b1"));
    // Nor can it be rolled back: its head must stay what the source last sent.
    let rb = dst.cli(&["rollback", "c", "--to", "b1"]);
    assert!(!rb.status.success());
    assert!(
        String::from_utf8_lossy(&rb.stderr).contains("replica"),
        "{rb:?}"
    );
    // A container of the target's own is never overwritten by a replication.
    fs::create_dir(dst.path("own")).unwrap();
    let out = src.cli(&[
        "replicate",
        "c",
        "--to",
        dst.store.to_str().unwrap(),
        "--as",
        "own",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a replica"),
        "{out:?}"
    );

    // Changes: one block of a file rewritten, a rename, a delete, a new file, an xattr.
    sh(&format!(
        "dd if=/dev/urandom of={f} bs=4096 count=1 seek=3 conv=notrunc status=none && \
         mv {d}/sub/f2.bin {d}/moved.bin && rm {d}/sub/f3.bin && \
         setfattr -n user.more -v 1 {d}/sub/deeper/text.txt && head -c 100000 /dev/urandom > {d}/new.bin",
        f = c.join("sub/f5.bin").display(),
        d = c.display()
    ));
    let inc = replicate(&src, "c", &dst.store, &["--verify"]);
    let v = &inc["verify"];
    assert!(n(v, "inodes") > 10, "{inc}");
    assert_eq!(v["differ"].as_array().map(|a| a.len()), Some(0), "{inc}");
    assert_eq!(v["missing"].as_array().map(|a| a.len()), Some(0), "{inc}");
    remount(&mut src);
    same_tree(&c, &dst.path("c"));
    // Only the new bytes travel: the rewritten block's chunk(s) and the new file.
    let sent = n(&inc, "chunk_bytes_sent");
    assert!((100_000..500_000).contains(&sent), "{inc}");
    assert!(!inc["resumed"].as_bool().unwrap(), "{inc}");
    // The first state is still there at the target, as at the source.
    same_tree(&src.path(".at/c/b1"), &dst.path(".at/c/b1"));

    // Another container with a copy of data the target already has: no chunk travels.
    fs::create_dir(src.path("d")).unwrap();
    sh(&format!(
        "cp -a {} {}",
        c.join("sub").display(),
        src.path("d").display()
    ));
    let other = replicate(&src, "d", &dst.store, &[]);
    assert_eq!(n(&other, "chunks_sent"), 0, "{other}");
    assert!(n(&other, "chunks_referenced") > 10, "{other}");
    remount(&mut src);
    same_tree(&src.path("d"), &dst.path("d"));

    // Nothing changed: nothing but the handshake moves.
    let again = replicate(&src, "c", &dst.store, &[]);
    assert_eq!(n(&again, "chunks_sent"), 0, "{again}");
    src.umount();
    dst.umount();
    ok(&dst.cli(&["fsck"]));

    // Damage at the target: --verify reads every chunk back there and fails, naming it.
    sh(&format!(
        "f=$(find {}/packs -name '*.pack' -size +200k | head -1) && test -n \"$f\" && \
         printf 'XXXXXXXXXXXXXXXX' | dd of=$f bs=1 seek=3000 conv=notrunc status=none",
        dst.store.display()
    ));
    let out = src.cli(&[
        "replicate",
        "c",
        "--to",
        dst.store.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("chunk") || err.contains("differ"), "{err}");
}

#[test]
fn a_dead_receiver_costs_the_run_not_the_mount_and_big_files_fit_in_frames() {
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    // 72 MiB of incompressible data in one file: more than one stream frame (64 MiB).
    sh(&format!(
        "head -c 75497472 /dev/urandom > {}/big.bin",
        c.display()
    ));
    // The receiver dies at once (the target is no store): the daemon that sends gets
    // EPIPE, reports it, and keeps serving the mount.
    let nowhere = src.dir.path().join("not-a-store");
    fs::create_dir(&nowhere).unwrap();
    let out = src.cli(&["replicate", "c", "--to", nowhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        fs::metadata(c.join("big.bin")).is_ok(),
        "the source mount died"
    );
    ok(&src.cli(&["stats"]));
    let mut dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    let v = replicate(&src, "c", &dst.store, &[]);
    assert_eq!(n(&v, "chunk_bytes_sent"), 75_497_472, "{v}");
    replica_matches(&mut src, &mut dst, &c);
}

#[test]
fn a_one_way_pipe_carries_a_full_stream_then_one_since_a_bookmark() {
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let mut dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    dst.mount("gc_idle=0,prune_interval=0");
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 2, 6);
    ok(&src.cli(&["bookmark", "create", "c", "n1"]));
    let pipe = |since: &str| {
        sh(&format!(
            "{b} --store {s} send c {since} | {b} receive {d} r",
            b = bin().display(),
            s = src.store.display(),
            d = dst.store.display()
        ))
    };
    pipe("");
    same_tree(&src.path(".at/c/n1"), &dst.path("r"));
    fs::write(c.join("later.txt"), "later\n").unwrap();
    sh(&format!("sync -f {}", c.display()));
    ok(&src.cli(&["bookmark", "create", "c", "n2"]));
    // The first stream ended at n1 (a one-way stream ends at the newest bookmark).
    pipe("--since n1");
    same_tree(&src.path(".at/c/n2"), &dst.path("r"));
    same_tree(&src.path(".at/c/n1"), &dst.path(".at/r/n1"));
    // A base that is not the replica's newest point is refused, and nothing changes.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {b} --store {s} send c --since n1 | {b} receive {d} r",
            b = bin().display(),
            s = src.store.display(),
            d = dst.store.display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newest point"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_tree(&src.path(".at/c/n2"), &dst.path("r"));
    src.umount();
    dst.umount();
}

/// Pid of the `serve` child of a running `replicate` to `store`.
fn serve_pid(store: &Path) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("serve --store {}", store.display())])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
}

#[test]
fn kill_9_of_either_side_at_random_moments_then_resume() {
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 3, 240);
    remount(&mut src);
    let expected = sig(&c);
    src.umount();
    let mut dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    let mut rng = Rng(0x5eed);
    let start = std::time::Instant::now();
    let mut kills = 0;
    // Bounded in time: at most 5 cuts (the whole transfer takes 18 s at 2M/s).
    while kills < 5 && start.elapsed().as_secs() < 60 {
        let mut child = Command::new(bin())
            .args([
                "--store",
                src.store.to_str().unwrap(),
                "replicate",
                "c",
                "--to",
            ])
            .arg(&dst.store)
            .args(["--bwlimit", "2M", "--json"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first cut comes after at least one batch (4 MiB, 2 s at 2M/s) was committed;
        // the others at any moment.
        let wait = if kills == 0 {
            2500 + rng.below(1000)
        } else {
            200 + rng.below(2800)
        };
        std::thread::sleep(std::time::Duration::from_millis(wait));
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                break;
            }
            continue;
        }
        // Alternate: the sender (this replicate process) or the receiver (its serve child).
        let victim = if kills % 2 == 0 {
            child.id()
        } else {
            serve_pid(&dst.store).unwrap_or(child.id())
        };
        let _ = Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        if let Some(p) = serve_pid(&dst.store) {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            wait_gone(p);
        }
        kills += 1;
        // Whatever arrived is invisible: the replica is absent, empty or complete.
        dst.mount("gc_idle=0,prune_interval=0");
        let r = dst.path("c");
        if r.exists() && fs::read_dir(&r).unwrap().count() > 0 {
            assert_eq!(
                sig(&r),
                expected,
                "a cut transfer left a partial replica visible"
            );
        }
        dst.umount();
    }
    assert!(
        kills >= 2,
        "the transfer finished before it could be cut twice"
    );
    let fin = replicate(&src, "c", &dst.store, &[]);
    // The last run continues the cut ones (the staging stays until a publish), and what
    // arrived and was verified before a cut is not sent again.
    assert_eq!(fin["resumed"].as_bool(), Some(true), "{fin}");
    assert!(
        n(&fin, "chunk_bytes_sent") < n(&fin, "tree_bytes"),
        "everything was resent: {fin}"
    );
    src.mount("gc_idle=0,prune_interval=0");
    dst.mount("gc_idle=0,prune_interval=0");
    same_tree(&src.path("c"), &dst.path("c"));
    src.umount();
    dst.umount();
    ok(&dst.cli(&["fsck"]));
}

#[test]
fn a_chunk_damaged_in_transit_is_rejected_and_sent_again() {
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let mut dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 4, 8);
    let out = Command::new(bin())
        .args([
            "--store",
            src.store.to_str().unwrap(),
            "replicate",
            "c",
            "--to",
        ])
        .arg(&dst.store)
        .arg("--json")
        .env("DEDUPFS_TEST_CORRUPT_CHUNKS", "2")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(n(&v, "chunks_resent"), 2, "{v}");
    assert_eq!(n(&v["receiver"], "chunks_rejected"), 2, "{v}");
    replica_matches(&mut src, &mut dst, &c);
}

#[test]
fn failover_then_failback_sends_only_what_changed() {
    let mut a = TestStore::mounted("gc_idle=0,prune_interval=0");
    let mut b = TestStore::new_with(&["--like", a.store.to_str().unwrap()]);
    b.mount("gc_idle=0,prune_interval=0");
    let c = a.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 5, 10);
    replicate(&a, "c", &b.store, &[]);
    // Site A is lost; B takes over.
    ok(&b.cli(&["container", "promote", "c"]));
    fs::write(b.path("c/after-failover.txt"), "written at B\n").unwrap();
    sh(&format!(
        "head -c 50000 /dev/urandom > {}",
        b.path("c/b-data.bin").display()
    ));
    fs::remove_file(b.path("c/sub/f4.bin")).unwrap();
    // A change at A that never reached B: kept in A's history, not in the result.
    fs::write(c.join("lost-at-a.txt"), "only at A\n").unwrap();
    sh(&format!("sync -f {}", c.display()));
    // Failback: B → A sends only what changed at B.
    let back = replicate(&b, "c", &a.store, &["--failback"]);
    let sent = n(&back, "chunk_bytes_sent");
    assert!((50_000..200_000).contains(&sent), "{back}");
    remount(&mut b);
    same_tree(&b.path("c"), &a.path("c"));
    assert!(!c.join("lost-at-a.txt").exists());
    // A is now the replica; promote it back and B may become its replica again.
    let err = fs::write(c.join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    ok(&a.cli(&["container", "promote", "c"]));
    fs::write(c.join("back-home.txt"), "A again\n").unwrap();
    let home = replicate(&a, "c", &b.store, &["--failback"]);
    assert!(n(&home, "chunk_bytes_sent") < 10_000, "{home}");
    remount(&mut a);
    same_tree(&a.path("c"), &b.path("c"));
    a.umount();
    b.umount();
}

#[test]
fn ssh_form_against_sshd_on_loopback() {
    let Some(sshd) = ["/usr/sbin/sshd", "/sbin/sshd"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        eprintln!("SKIP: no sshd (tests/setup.sh --test-tools installs openssh-server)");
        return;
    };
    let mut src = TestStore::mounted("gc_idle=0,prune_interval=0");
    let dst = TestStore::new_with(&["--like", src.store.to_str().unwrap()]);
    let c = src.path("c");
    fs::create_dir(&c).unwrap();
    fill(&c, 6, 5);
    let w = src.dir.path().join("ssh");
    fs::create_dir(&w).unwrap();
    let port = 20000 + (std::process::id() % 20000);
    sh(&format!(
        "cd {w} && ssh-keygen -q -t ed25519 -N '' -f host && ssh-keygen -q -t ed25519 -N '' -f user && \
         cp user.pub authorized_keys && chmod 600 authorized_keys && mkdir -p /run/sshd && \
         printf 'Port {port}\\nListenAddress 127.0.0.1\\nHostKey {w}/host\\nPidFile {w}/sshd.pid\\n\
AuthorizedKeysFile {w}/authorized_keys\\nPermitRootLogin prohibit-password\\nPasswordAuthentication no\\n\
StrictModes no\\nUsePAM no\\n' > sshd_config",
        w = w.display()
    ));
    sh(&format!(
        "{} -f {}/sshd_config",
        sshd.display(),
        w.display()
    ));
    let pid: u32 = {
        let mut p = None;
        for _ in 0..100 {
            if let Ok(s) = fs::read_to_string(w.join("sshd.pid")) {
                p = s.trim().parse().ok();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        p.expect("sshd started")
    };
    // sshd goes with the test, whatever happens to it.
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop = Stop(pid);
    let to = format!("ssh://root@127.0.0.1:{port}{}", dst.store.display());
    let out = Command::new(bin())
        .args(["--store", src.store.to_str().unwrap(), "replicate", "c", "--to", &to])
        .args(["--remote-cmd", bin().to_str().unwrap(), "--json"])
        .env(
            "DEDUPFS_SSH",
            format!(
                "ssh -i {}/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                w.display()
            ),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let v = json(&out);
    assert!(n(&v, "chunks_sent") > 0, "{v}");
    let mut dst = dst;
    replica_matches(&mut src, &mut dst, &c);
}
