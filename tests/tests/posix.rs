//! POSIX semantics on a real mount, driven through the kernel with std and libc calls.
//! Each test states one behaviour from SEMANTICS.md.

use dedupfs_tests::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn container(t: &TestStore) -> std::path::PathBuf {
    let p = t.path("c");
    fs::create_dir(&p).unwrap();
    p
}

#[test]
fn files_directories_symlinks_and_hard_links() {
    let t = TestStore::mounted("");
    let d = container(&t);
    fs::create_dir_all(d.join("a/b/c")).unwrap();
    fs::write(d.join("a/b/c/f"), b"hello").unwrap();
    assert_eq!(fs::read(d.join("a/b/c/f")).unwrap(), b"hello");
    std::os::unix::fs::symlink("b/c/f", d.join("a/link")).unwrap();
    assert_eq!(
        fs::read_link(d.join("a/link")).unwrap().to_str(),
        Some("b/c/f")
    );
    assert_eq!(fs::read(d.join("a/link")).unwrap(), b"hello");
    fs::hard_link(d.join("a/b/c/f"), d.join("a/hard")).unwrap();
    let (m1, m2) = (
        fs::metadata(d.join("a/b/c/f")).unwrap(),
        fs::metadata(d.join("a/hard")).unwrap(),
    );
    assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2));
    fs::remove_file(d.join("a/b/c/f")).unwrap();
    assert_eq!(fs::metadata(d.join("a/hard")).unwrap().nlink(), 1);
    assert_eq!(fs::read(d.join("a/hard")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(d.join("a")).unwrap().nlink(),
        3,
        "a holds one subdirectory"
    );
    let err = fs::remove_dir(d.join("a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
}

#[test]
fn rename_noreplace_and_exchange() {
    let t = TestStore::mounted("");
    let d = container(&t);
    fs::write(d.join("x"), b"X").unwrap();
    fs::write(d.join("y"), b"Y").unwrap();
    let (x, y) = (c(&d.join("x")), c(&d.join("y")));
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            x.as_ptr(),
            libc::AT_FDCWD,
            y.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!((rc, errno()), (-1, libc::EEXIST));
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            x.as_ptr(),
            libc::AT_FDCWD,
            y.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(fs::read(d.join("x")).unwrap(), b"Y");
    assert_eq!(fs::read(d.join("y")).unwrap(), b"X");
    fs::rename(d.join("x"), d.join("y")).unwrap();
    assert_eq!(fs::read(d.join("y")).unwrap(), b"Y");
    assert!(!d.join("x").exists());
    fs::create_dir(d.join("dir")).unwrap();
    let err = fs::rename(d.join("dir"), d.join("dir/sub")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn an_unlinked_open_file_stays_readable_until_closed() {
    let t = TestStore::mounted("");
    let d = container(&t);
    fs::write(d.join("f"), pseudo_random(300_000, 1)).unwrap();
    let mut f = File::open(d.join("f")).unwrap();
    fs::remove_file(d.join("f")).unwrap();
    assert!(!d.join("f").exists());
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, pseudo_random(300_000, 1));
    assert_eq!(f.metadata().unwrap().nlink(), 0);
}

#[test]
fn syncfs_after_deleting_files_succeeds() {
    // The kernel writes back cached times of deleted files at syncfs; the build before
    // this failed `sync -f` with ENOENT after any `rm`.
    let t = TestStore::mounted("");
    let d = container(&t);
    for i in 0..20 {
        fs::write(d.join(format!("f{i}")), b"x").unwrap();
    }
    for i in 0..20 {
        fs::remove_file(d.join(format!("f{i}"))).unwrap();
    }
    sh(&format!("sync -f {}", d.display()));
    assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
}

#[test]
fn block_counts_follow_data_commits_despite_long_attribute_caching() {
    // Names and attributes of live trees are cached by the kernel for an hour. Zeros
    // written over data become a hole when the flush commits them, after the write
    // returned: the commit tells the kernel to drop the file's attributes, from a thread
    // of its own, so this waits for that notification, bounded. (Without the notice the
    // kernel shows 2048 blocks for the hour.)
    let t = TestStore::mounted("");
    let d = container(&t);
    fs::write(d.join("f"), pseudo_random(1 << 20, 3)).unwrap();
    sh(&format!("sync -f {}", d.display()));
    // The file stays open: a close would make the kernel drop its cached block count
    // itself, so only the commit's notice can correct it.
    let f = OpenOptions::new().write(true).open(d.join("f")).unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    assert_eq!(
        fs::metadata(d.join("f")).unwrap().blocks(),
        2048,
        "cached before the commit"
    );
    f.sync_all().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut blocks = u64::MAX;
    while std::time::Instant::now() < deadline {
        blocks = fs::metadata(d.join("f")).unwrap().blocks();
        if blocks == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(blocks, 0, "st_blocks once the zeros are a hole");
    drop(f);
}

#[test]
fn chmod_chown_and_utimens() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o4751);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let m = fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123,
        },
        libc::timespec {
            tv_sec: 2_000_000_000,
            tv_nsec: 456_789,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c(&p).as_ptr(), times.as_ptr(), 0) },
        0
    );
    let m = fs::metadata(&p).unwrap();
    assert_eq!(
        (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()),
        (1_000_000_000, 123, 2_000_000_000, 456_789)
    );
}

#[test]
fn truncate_up_and_down() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("f");
    let data = pseudo_random(1_000_000, 2);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(300_001).unwrap();
    f.set_len(700_000).unwrap();
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 700_000);
    assert_eq!(&got[..300_001], &data[..300_001]);
    assert!(
        got[300_001..].iter().all(|&b| b == 0),
        "bytes past a truncation read as zeros"
    );
}

#[test]
fn sparse_files_cost_nothing_and_read_as_zeros() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("sparse");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", (1 << 30) - 4).unwrap();
    f.sync_all().unwrap();
    let m = f.metadata().unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "a 1 GiB sparse file allocates {} blocks",
        m.blocks()
    );
    let mut buf = vec![1u8; 65536];
    f.read_exact_at(&mut buf, 500 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // SEEK_HOLE / SEEK_DATA see the hole.
    // SAFETY: lseek on an open fd.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    let data = unsafe { libc::lseek(f.as_raw_fd(), hole, libc::SEEK_DATA) };
    assert!(hole > 0 && hole < 1 << 20, "first hole at {hole}");
    assert!(data > 1000 << 20 && data < 1 << 30, "next data at {data}");
    drop(f);
    let s = t.stats();
    assert!(
        s["stored_bytes"].as_u64().unwrap() < 1 << 20,
        "holes are not stored: {s}"
    );
}

#[test]
fn fallocate_extends_and_punches_holes() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("f");
    let data = pseudo_random(2 << 20, 3);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().write(true).read(true).open(&p).unwrap();
    // SAFETY: fallocate on an open fd.
    assert_eq!(
        unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 3 << 20) },
        0,
        "errno {}",
        errno()
    );
    assert_eq!(f.metadata().unwrap().len(), 3 << 20);
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            100_000,
            500_000,
        )
    };
    assert_eq!(rc, 0, "errno {}", errno());
    assert_eq!(f.metadata().unwrap().len(), 3 << 20);
    let mut got = vec![0u8; 2 << 20];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got[..100_000], &data[..100_000]);
    assert!(got[100_000..600_000].iter().all(|&b| b == 0));
    assert_eq!(&got[600_000..], &data[600_000..]);
}

#[test]
fn extended_attributes() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = c(&d.join("f"));
    fs::write(d.join("f"), b"x").unwrap();
    let name = CString::new("user.backup-id").unwrap();
    // SAFETY: valid paths, names and buffers of the given sizes.
    unsafe {
        assert_eq!(
            libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                b"v1".as_ptr().cast(),
                2,
                libc::XATTR_CREATE
            ),
            0
        );
        assert_eq!(
            libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                b"v2".as_ptr().cast(),
                2,
                libc::XATTR_CREATE
            ),
            -1
        );
        assert_eq!(errno(), libc::EEXIST);
        let mut buf = [0u8; 16];
        let n = libc::getxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!(&buf[..n as usize], b"v1");
        let mut list = [0u8; 64];
        let n = libc::listxattr(p.as_ptr(), list.as_mut_ptr().cast(), list.len());
        assert_eq!(&list[..n as usize], b"user.backup-id\0");
        assert_eq!(libc::removexattr(p.as_ptr(), name.as_ptr()), 0);
        assert_eq!(
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len()
            ),
            -1
        );
        assert_eq!(errno(), libc::ENODATA);
    }
}

#[test]
fn statfs_reports_real_numbers() {
    let t = TestStore::mounted("");
    // SAFETY: statvfs fills the struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c(&t.mnt).as_ptr(), &mut s) }, 0);
    let mut under: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c(&t.store).as_ptr(), &mut under) },
        0
    );
    assert!(s.f_blocks > 0 && s.f_bavail > 0 && s.f_bavail <= s.f_blocks);
    assert_eq!(s.f_namemax, 255);
    let size = |st: &libc::statvfs| st.f_blocks as u128 * st.f_frsize as u128;
    assert_eq!(
        size(&s) / (1 << 20),
        size(&under) / (1 << 20),
        "capacity is the store's filesystem's"
    );
}

#[test]
fn fsync_fdatasync_and_locks() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("f");
    let mut f = File::create(&p).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_data().unwrap();
    f.sync_all().unwrap();
    // flock: exclusive lock conflicts with a second open file description.
    let g = File::open(&p).unwrap();
    // SAFETY: flock on open fds.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    assert_eq!(
        unsafe { libc::flock(g.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        -1
    );
    assert_eq!(errno(), libc::EWOULDBLOCK);
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) }, 0);
    // fcntl record locks: another process sees the conflict.
    let lk = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lk) }, 0);
    let py = format!(
        "import fcntl,sys\nf=open('{}','r+')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\n sys.exit(0)\nexcept OSError:\n sys.exit(7)",
        p.display()
    );
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(py)
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(7),
        "the fcntl lock held here blocks another process"
    );
}

#[test]
fn shared_mmap_writes_reach_the_file() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("m");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.set_len(1 << 20).unwrap();
    // SAFETY: a shared mapping of a 1 MiB file we own; unmapped below, no aliasing.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            1 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts_mut(m as *mut u8, 1 << 20);
        s[..5].copy_from_slice(b"mmap!");
        s[(1 << 20) - 3..].copy_from_slice(b"end");
        assert_eq!(libc::msync(m, 1 << 20, libc::MS_SYNC), 0);
        libc::munmap(m, 1 << 20);
    }
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[..5], b"mmap!");
    assert_eq!(&got[got.len() - 3..], b"end");
}

#[test]
fn o_append_writes_go_to_the_end() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("log");
    let mut a = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"one\n").unwrap();
    b.write_all(b"two\n").unwrap();
    a.write_all(b"three\n").unwrap();
    drop((a, b));
    assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\nthree\n");
}

#[test]
fn files_larger_than_4_gib() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let p = d.join("big");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let off = 5u64 << 30;
    f.seek(SeekFrom::Start(off)).unwrap();
    let data = pseudo_random(3 << 20, 4);
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), off + data.len() as u64);
    let f = File::open(&p).unwrap();
    let mut got = vec![0u8; data.len()];
    f.read_exact_at(&mut got, off).unwrap();
    assert!(got == data);
}

#[test]
fn names_up_to_255_bytes() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let ok_name = "n".repeat(255);
    fs::write(d.join(&ok_name), b"x").unwrap();
    assert!(fs::read_dir(&d)
        .unwrap()
        .any(|e| e.unwrap().file_name().len() == 255));
    let err = fs::write(d.join("n".repeat(256)), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
}

#[test]
fn a_directory_of_100000_entries_lists_and_looks_up() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let big = d.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..100_000 {
        File::create(big.join(format!("entry-{i:06}"))).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&big)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 100_000);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 100_000, "no entry listed twice");
    for i in (0..100_000).step_by(997) {
        assert!(big.join(format!("entry-{i:06}")).exists());
    }
    assert!(!big.join("entry-100000").exists());
    assert_eq!(fs::metadata(&big).unwrap().len(), 100_000);
}

#[test]
fn inode_numbers_are_stable_across_remounts() {
    let mut t = TestStore::mounted("");
    let d = container(&t);
    fs::create_dir(d.join("dir")).unwrap();
    fs::write(d.join("dir/f"), b"x").unwrap();
    let before: Vec<u64> = ["", "dir", "dir/f"]
        .iter()
        .map(|p| fs::metadata(d.join(p)).unwrap().ino())
        .collect();
    t.umount();
    t.mount("");
    let after: Vec<u64> = ["", "dir", "dir/f"]
        .iter()
        .map(|p| fs::metadata(t.path("c").join(p)).unwrap().ino())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn the_mount_root_holds_only_containers() {
    let t = TestStore::mounted("");
    let err = fs::write(t.path("file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    fs::create_dir(t.path("nightly")).unwrap();
    let list = ok(&t.cli(&["container", "list", "--json"]));
    assert!(list.contains("\"nightly\""), "{list}");
    fs::write(t.path("nightly/f"), b"x").unwrap();
    assert_eq!(
        fs::remove_dir(t.path("nightly"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::remove_file(t.path("nightly/f")).unwrap();
    fs::remove_dir(t.path("nightly")).unwrap();
    assert!(!ok(&t.cli(&["container", "list", "--json"])).contains("nightly"));
    let err = fs::create_dir(t.path(".hidden")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EINVAL),
        "names starting with '.' are reserved at the root"
    );
}

/// A container that user `nobody` (65534) can reach, and a shell running as nobody in it.
fn shared_container(t: &TestStore) -> std::path::PathBuf {
    fs::set_permissions(t.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let d = container(t);
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn as_nobody(d: &Path, cmd: &str) -> std::process::Output {
    as_nobody_argv(d, &["sh", "-c", cmd])
}

fn as_nobody_argv(d: &Path, argv: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .current_dir(d)
        .output()
        .expect("setpriv")
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn posix_acls_grant_access_follow_chmod_and_are_inherited() {
    let t = TestStore::mounted("");
    let d = shared_container(&t);
    let f = d.join("secret");
    fs::write(&f, b"s3cret").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!as_nobody(&d, "cat secret").status.success());
    // A named entry: the kernel grants access by it; the mode's group bits show the mask.
    sh(&format!("setfacl -m u:nobody:r {}", f.display()));
    assert_eq!(mode_of(&f), 0o640);
    let out = as_nobody(&d, "cat secret");
    assert_eq!(
        out.stdout,
        b"s3cret",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // chmod rewrites the mask, which now denies the named entry.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(sh(&format!("getfacl -cp {}", f.display())).contains("mask::---"));
    assert!(!as_nobody(&d, "cat secret").status.success());
    // An ACL that says no more than a mode is a mode: nothing stored.
    sh(&format!("setfacl -b {}", f.display()));
    sh(&format!("setfacl -m u::rwx,g::r,o::- {}", f.display()));
    assert_eq!(mode_of(&f), 0o740);
    assert!(!sh(&format!("getfattr -d -m - {}", f.display())).contains("posix_acl_access"));

    // Default ACLs are inherited, narrowed by the mode the creator asked for.
    let dir = d.join("shared");
    fs::create_dir(&dir).unwrap();
    sh(&format!(
        "setfacl -d -m u:nobody:rwx,g::rx,o::- {}",
        dir.display()
    ));
    sh(&format!(
        "cd {} && umask 077 && touch file && mkdir sub",
        dir.display()
    ));
    let file_acl = sh(&format!("getfacl -cp {}/file", dir.display()));
    assert!(file_acl.contains("user:nobody:rwx"), "{file_acl}");
    assert!(file_acl.contains("mask::rw-"), "{file_acl}");
    assert_eq!(
        mode_of(&dir.join("file")),
        0o660,
        "umask ignored under a default ACL"
    );
    let sub_acl = sh(&format!("getfacl -cp {}/sub", dir.display()));
    assert!(sub_acl.contains("default:user:nobody:rwx"), "{sub_acl}");
    assert!(as_nobody(&dir, "echo hi > file").status.success());
    // Without a default ACL the umask applies (the kernel leaves it to us).
    sh(&format!(
        "cd {} && umask 027 && touch plain && mkdir plaind",
        d.display()
    ));
    assert_eq!(mode_of(&d.join("plain")), 0o640);
    assert_eq!(mode_of(&d.join("plaind")), 0o750);
    // ACLs survive a remount.
    let mut t = t;
    t.umount();
    t.mount("");
    assert!(sh(&format!("getfacl -cp {}/file", dir.display())).contains("user:nobody:rwx"));
}

#[test]
fn unprivileged_data_changes_clear_setuid_and_setgid() {
    let t = TestStore::mounted("");
    let d = shared_container(&t);
    let f = d.join("prog");
    fs::write(&f, vec![1u8; 8192]).unwrap();
    // Written back first, so that nothing but the kill can refresh the kernel's attributes.
    File::open(&f).unwrap().sync_all().unwrap();
    sh(&format!(
        "chown 65534:65534 {0} && chmod 6755 {0}",
        f.display()
    ));
    assert_eq!(mode_of(&f), 0o6755, "the kernel now caches the mode");
    // O_DIRECT write: the kernel flags it and we clear the bits; stat right after must
    // see it (the kernel's cached attributes are dropped, no waiting for their timeout).
    let out = as_nobody_argv(
        &d,
        &[
            "dd",
            "if=/dev/zero",
            "of=prog",
            "bs=4096",
            "count=1",
            "oflag=direct",
        ]
        .into_iter()
        .chain(["conv=notrunc", "status=none"])
        .collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode_of(&f), 0o755);
    // fallocate asks nothing of us, yet must clear them too; setgid without group-execute
    // goes when the caller is not in the file's group.
    sh(&format!("chown 0:0 {0} && chmod 6766 {0}", f.display()));
    assert_eq!(mode_of(&f), 0o6766);
    let out = as_nobody_argv(&d, &["fallocate", "-l", "16384", "prog"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode_of(&f), 0o766);
    // Root keeps them.
    sh(&format!(
        "chmod 6755 {0} && fallocate -l 32768 {0}",
        f.display()
    ));
    assert_eq!(mode_of(&f), 0o6755);
}

#[test]
fn a_hard_link_never_makes_ctime_run_backwards() {
    // The kernel stamps the linked inode's ctime with its own coarse clock; files created
    // just before must not carry a later ctime (xfstests generic/423).
    let t = TestStore::mounted("");
    let d = container(&t);
    for i in 0..50 {
        let a = d.join(format!("a{i}"));
        fs::write(&a, b"x").unwrap();
        // A directory: its ctime is ours alone (a written file's is the kernel's).
        fs::create_dir(d.join(format!("b{i}"))).unwrap();
        fs::hard_link(&a, d.join(format!("l{i}"))).unwrap();
        let b = fs::metadata(d.join(format!("b{i}"))).unwrap();
        let l = fs::metadata(d.join(format!("l{i}"))).unwrap();
        assert!(
            (l.ctime(), l.ctime_nsec()) >= (b.ctime(), b.ctime_nsec()),
            "round {i}: link ctime {}.{:09} before the earlier file's {}.{:09}",
            l.ctime(),
            l.ctime_nsec(),
            b.ctime(),
            b.ctime_nsec()
        );
    }
}

#[test]
fn fallocate_beyond_free_space_is_refused() {
    let t = TestStore::mounted("");
    let d = container(&t);
    let f = File::create(d.join("big")).unwrap();
    // SAFETY: statvfs into a zeroed struct; fallocate on an open fd.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c(&d).as_ptr(), &mut st) }, 0);
    let free = st.f_bavail * st.f_frsize;
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, (2 * free) as i64) };
    assert_eq!((rc, errno()), (-1, libc::ENOSPC));
    assert_eq!(f.metadata().unwrap().len(), 0, "nothing changed");
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(rc, 0, "a request that fits is accepted");
}

fn set_times(p: &Path, atime: i64, mtime: i64) {
    let ts = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat errno {}", errno());
}

#[test]
fn reads_move_atime_the_relatime_way() {
    let mut t = TestStore::mounted("");
    let d = container(&t);
    let f = d.join("f");
    fs::write(&f, b"data").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // atime not newer than mtime: a read moves it to now, and the next stat sees it.
    set_times(&f, 1_000, 2_000);
    let ctime = fs::metadata(&f).unwrap().ctime();
    assert_eq!(fs::read(&f).unwrap(), b"data");
    let m = fs::metadata(&f).unwrap();
    assert!(
        m.atime() >= now,
        "atime {} not moved by the read",
        m.atime()
    );
    assert_eq!((m.mtime(), m.ctime()), (2_000, ctime), "only atime moves");
    // atime newer than mtime and ctime (and less than a day old): a read leaves it.
    set_times(&f, now + 3_600, 2_000);
    fs::read(&f).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().atime(), now + 3_600);
    // strictatime: every read moves it.
    t.umount();
    t.mount("strictatime");
    set_times(&f, now + 3_600, 2_000);
    fs::read(&f).unwrap();
    let a = fs::metadata(&f).unwrap().atime();
    assert!(a >= now && a < now + 3_600, "strictatime: atime {a}");
    // noatime: reads never move it.
    t.umount();
    t.mount("noatime");
    set_times(&f, 1_000, 2_000);
    fs::read(&f).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().atime(), 1_000);
}

#[test]
fn seek_data_sees_data_still_in_the_page_cache() {
    // Written through the kernel's writeback cache and not yet closed: the daemon has not
    // seen the data, yet SEEK_DATA/SEEK_HOLE on the same descriptor must find it.
    let t = TestStore::mounted("");
    let d = container(&t);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(d.join("f"))
        .unwrap();
    // (No truncate: that would make the kernel write back by itself.)
    f.write_all_at(&[7u8; 8192], 8192).unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an open fd.
    let data = unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) };
    assert_eq!(data, 8192, "errno {}", errno());
    let hole = unsafe { libc::lseek(fd, 8192, libc::SEEK_HOLE) };
    assert_eq!(hole, 16384);
    let none = unsafe { libc::lseek(fd, 16384, libc::SEEK_DATA) };
    assert_eq!(
        (none, errno()),
        (-1, libc::ENXIO),
        "nothing at the end of the file"
    );
}
