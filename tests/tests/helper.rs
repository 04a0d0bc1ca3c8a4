//! The mount helper: `mount -t fuse.dedupfs`, fstab lines, remount, refusing to stack on a
//! live mount, cleaning a dead one, and waiting for a previous daemon to let go.

use dedupfs_tests::*;
use std::fs::{self, File};
use std::process::Command;

fn mount(args: &[&str]) -> std::process::Output {
    Command::new("mount").args(args).output().expect("mount")
}

#[test]
fn mount_t_fuse_dedupfs_fstab_remount_stacking_and_dead_mounts() {
    // `dedupfs install` puts the binary and the helper link in place.
    let t = TestStore::new();
    let prefix = t.dir.path().join("prefix");
    let out = dedupfs(&[
        "install",
        "--prefix",
        prefix.to_str().unwrap(),
        "--sbin",
        prefix.join("sbin").to_str().unwrap(),
        "--systemd-dir",
        prefix.join("systemd").to_str().unwrap(),
    ]);
    ok(&out);
    let link = prefix.join("sbin/mount.fuse.dedupfs");
    assert_eq!(fs::read_link(&link).unwrap(), prefix.join("bin/dedupfs"));
    assert!(prefix.join("bin/dedupfs").is_file());
    // mount(8) looks in /sbin: point the helper at the binary under test.
    let helper = std::path::Path::new("/sbin/mount.fuse.dedupfs");
    let _ = fs::remove_file(helper);
    std::os::unix::fs::symlink(bin(), helper).unwrap();

    let (store, mnt) = (t.store.to_str().unwrap(), t.mnt.to_str().unwrap());
    ok(&mount(&[
        "-t",
        "fuse.dedupfs",
        store,
        mnt,
        "-o",
        "allow_other",
    ]));
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/f"), b"via mount -t").unwrap();
    let pid = t.daemon_pid();

    // A second mount on the same point is refused, naming the problem.
    let out = mount(&["-t", "fuse.dedupfs", store, mnt]);
    assert_eq!(out.status.code(), Some(32), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{out:?}"
    );

    // The mount's type names dedupfs, so findmnt and a remount without -t find it.
    let found = sh(&format!("findmnt -n -t fuse.dedupfs -o TARGET {mnt}"));
    assert_eq!(found.trim(), mnt);
    // Remount read-only: the same daemon, now refusing writes.
    ok(&mount(&["-o", "remount,ro", mnt]));
    assert_eq!(t.daemon_pid(), pid, "remount must not start another daemon");
    let e = fs::write(t.path("c/g"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    ok(&mount(&["-o", "remount,rw", mnt]));
    fs::write(t.path("c/g"), b"rw again").unwrap();
    // What cannot change live is refused by name, and nothing changes.
    for (opt, says) in [
        (
            "remount,threads=4",
            "threads=4 cannot change on a live mount",
        ),
        ("remount,frobnicate", "unknown mount option 'frobnicate'"),
        ("remount,noatime", "noatime cannot change"),
    ] {
        let out = mount(&["-o", opt, mnt]);
        assert_ne!(out.status.code(), Some(0), "{opt}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{opt}: {out:?}"
        );
    }
    fs::write(t.path("c/g"), b"rw again").unwrap();
    assert_eq!(t.daemon_pid(), pid);

    // umount returns before the daemon lets go of the store; an immediate mount waits.
    sh(&format!("umount {mnt}"));
    ok(&mount(&[
        "-t",
        "fuse.dedupfs",
        store,
        mnt,
        "-o",
        "allow_other",
    ]));
    assert_eq!(fs::read(t.path("c/f")).unwrap(), b"via mount -t");

    // A dead mount (daemon killed) is detached and mounted over.
    sh(&format!("kill -9 {}", t.daemon_pid()));
    wait_gone(t.daemon_pid());
    assert_eq!(
        fs::metadata(t.path("c/never-looked-up"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTCONN)
    );
    ok(&mount(&[
        "-t",
        "fuse.dedupfs",
        store,
        mnt,
        "-o",
        "allow_other",
    ]));
    assert_eq!(fs::read(t.path("c/g")).unwrap(), b"rw again");
    sh(&format!("umount {mnt}"));
    wait_gone(t.daemon_pid());

    // An fstab line, with a free name as the source and the store in source=.
    let fstab = t.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!("dd_fstab_test {mnt} fuse.dedupfs source={store},allow_other,noauto,nofail 0 0\n"),
    )
    .unwrap();
    ok(&mount(&["-T", fstab.to_str().unwrap(), mnt]));
    let src = sh(&format!("findmnt -n -o SOURCE {mnt}"));
    assert_eq!(src.trim(), "dd_fstab_test");
    assert_eq!(fs::read(t.path("c/f")).unwrap(), b"via mount -t");
    sh("umount dd_fstab_test");
    assert!(!is_mounted(&t.mnt));
    wait_gone(t.daemon_pid());

    // A daemon started read-only refuses writes itself: a remount rw is refused.
    ok(&mount(&["-t", "fuse.dedupfs", store, mnt, "-o", "ro"]));
    let out = mount(&["-o", "remount,rw", mnt]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("started read-only"),
        "{out:?}"
    );
    let e = fs::write(t.path("c/g"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "still read-only");
    sh(&format!("umount {mnt}"));
}

#[test]
fn container_option_mounts_one_container_as_the_root() {
    let mut t = TestStore::new();
    t.mount("container=box");
    // Files at the root, as xfstests and single-share exports need.
    fs::write(t.path("f"), b"at the root").unwrap();
    fs::create_dir(t.path("d")).unwrap();
    fs::rename(t.path("f"), t.path("d/g")).unwrap();
    assert!(
        !t.path(".at").exists(),
        "views are not shown in a container mount"
    );
    let root_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&t.mnt).unwrap());
    assert_eq!(root_ino, 1);
    // An open directory removed by rename keeps answering fstat (nlink 0).
    fs::create_dir(t.path("a")).unwrap();
    fs::create_dir(t.path("b")).unwrap();
    let open = File::open(t.path("b")).unwrap();
    fs::rename(t.path("a"), t.path("b")).unwrap();
    let m = open.metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&m), 0);
    drop(open);
    t.umount();
    t.mount("");
    assert_eq!(fs::read(t.path("box/d/g")).unwrap(), b"at the root");
    assert!(t.path("box/b").is_dir() && !t.path("box/a").exists());
    t.umount();
    let out = t.cli(&["fsck"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_store_mounted_twice_shows_one_filesystem_at_both_points() {
    // Like a block device mounted at two places (xfstests generic/732): the second mount
    // is another view served by the same daemon, which lives until the last view goes.
    let mut t = TestStore::mounted("");
    let pid = t.daemon_pid();
    let (m2, m3) = (t.dir.path().join("m2"), t.dir.path().join("m3"));
    fs::create_dir(&m2).unwrap();
    fs::create_dir(&m3).unwrap();
    let store = t.store.to_str().unwrap().to_string();
    fs::create_dir_all(t.path("c/A")).unwrap();
    ok(&dedupfs(&["mount", &store, m2.to_str().unwrap()]));
    ok(&dedupfs(&[
        "mount",
        &store,
        m3.to_str().unwrap(),
        "-o",
        "container=c,ro",
    ]));
    fs::create_dir(t.path("c/B")).unwrap();
    fs::write(t.path("c/A/f"), b"one file").unwrap();
    // Renames through one view are seen at once through the others.
    fs::rename(t.path("c/A/f"), t.path("c/B/f")).unwrap();
    assert_eq!(fs::read(m2.join("c/B/f")).unwrap(), b"one file");
    assert_eq!(fs::read(m3.join("B/f")).unwrap(), b"one file");
    fs::rename(m2.join("c/B/f"), m2.join("c/A/f")).unwrap();
    assert_eq!(fs::read(t.path("c/A/f")).unwrap(), b"one file");
    let err = fs::write(m3.join("A/g"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "the ro view refuses writes"
    );
    ok(&dedupfs(&["umount", t.mnt.to_str().unwrap()]));
    assert!(is_mounted(&m2) && is_mounted(&m3));
    assert!(running(pid));
    // Commands still find the daemon through the remaining whole view.
    let stats = ok(&dedupfs(&["stats", "--store", &store, "--json"]));
    assert!(stats.contains("\"files\""), "{stats}");
    ok(&dedupfs(&["umount", m2.to_str().unwrap()]));
    assert!(running(pid));
    ok(&dedupfs(&["umount", m3.to_str().unwrap()]));
    // The last view gone, `umount` returned only after the daemon had exited.
    assert!(!running(pid));
    t.mount("");
    assert_eq!(fs::read(t.path("c/A/f")).unwrap(), b"one file");
}

/// `dedupfs install` puts man pages (one per command), completions for three shells, the
/// systemd units naming the installed binary, and an example configuration in place.
#[test]
fn install_puts_pages_completions_and_units_in_place() {
    let t = TestStore::new();
    let p = t.dir.path().join("prefix");
    ok(&dedupfs(&[
        "install",
        "--prefix",
        p.to_str().unwrap(),
        "--sbin",
        p.join("sbin").to_str().unwrap(),
        "--systemd-dir",
        p.join("units").to_str().unwrap(),
    ]));
    // `man dedupfs-rollback` finds and renders the page.
    let page = sh(&format!(
        "MANPATH={} MANWIDTH=100 man -P cat dedupfs-rollback 2>/dev/null",
        p.join("share/man").display()
    ));
    assert!(
        page.contains("--to") && page.contains("--dry-run"),
        "{page}"
    );
    assert!(p
        .join("share/man/man1/dedupfs-container-create.1")
        .is_file());
    assert!(p.join("share/man/man1/dedupfs.1").is_file());
    // The bash completion loads and completes subcommands.
    let words = sh(&format!(
        "source {}; COMP_WORDS=(dedupfs ro); COMP_CWORD=1; _dedupfs dedupfs ro dedupfs; \
         echo \"${{COMPREPLY[@]}}\"",
        p.join("share/bash-completion/completions/dedupfs")
            .display()
    ));
    assert!(words.contains("rollback"), "{words}");
    assert!(p.join("share/zsh/site-functions/_dedupfs").is_file());
    assert!(p
        .join("share/fish/vendor_completions.d/dedupfs.fish")
        .is_file());
    // Units name the binary where it was installed.
    let unit = std::fs::read_to_string(p.join("units/dedupfs@.service")).unwrap();
    let exec = format!("ExecStart={}/bin/dedupfs mount -f", p.display());
    assert!(unit.contains(&exec), "{unit}");
    assert!(!unit.contains("/usr/local/bin/dedupfs"), "{unit}");
    for f in [
        "units/dedupfs.target",
        "units/nfs-ganesha.service.d/dedupfs.conf",
        "units/smbd.service.d/dedupfs.conf",
        "units/dedupfs-replicate@.timer",
        "share/doc/dedupfs/example.conf",
    ] {
        assert!(p.join(f).is_file(), "{f}");
    }
    let rep = std::fs::read_to_string(p.join("units/dedupfs-replicate@.service")).unwrap();
    assert!(
        rep.contains(&format!("ExecStart={}/bin/dedupfs --store", p.display())),
        "{rep}"
    );
    // `completions` prints the same script for a shell of the user's choosing.
    let zsh = ok(&dedupfs(&["completions", "zsh"]));
    assert!(zsh.contains("#compdef dedupfs"), "{zsh}");
}
