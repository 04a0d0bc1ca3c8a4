//! Packs in S3-compatible object storage, against a real server (SeaweedFS on 127.0.0.1,
//! started and stopped by each test): upload on seal, reads through the bounded cache after
//! the local copies are gone, kill -9 between the local write and the upload, a server
//! restart and an outage mid-write, GC's two-phase remote deletes, fsck naming missing
//! objects, recovery from the bucket alone, and clear errors for a bad endpoint,
//! credentials, bucket or prefix.

use dedupfs_tests::s3::S3Server;
use dedupfs_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Content hashes of every file under `dir`, sorted by path.
fn digest(dir: &Path) -> String {
    sh(&format!(
        "cd {} && find . -type f | sort | xargs -r sha256sum",
        dir.display()
    ))
}

fn stats(t: &TestStore) -> serde_json::Value {
    serde_json::from_str(&ok(&t.cli(&["stats", "--json"]))).expect("stats json")
}

fn pack_objects(s3: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    s3.list(bucket, &format!("{prefix}/packs/"))
}

fn local_packs(t: &TestStore) -> usize {
    sh(&format!(
        "find {} -name '*.pack' | wc -l",
        t.store.join("packs").display()
    ))
    .trim()
    .parse()
    .unwrap()
}

fn du(p: &Path) -> u64 {
    sh(&format!("du -sb {} | cut -f1", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Writes `n` files of `mib` MiB of pseudo-random data (and a copy of each: deduplicated)
/// into `dir`.
fn write_files(dir: &Path, n: usize, mib: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let data = pseudo_random(mib << 20, seed + i as u64);
        std::fs::write(dir.join(format!("f{i}")), &data).unwrap();
        std::fs::write(dir.join(format!("copy{i}")), &data).unwrap();
    }
}

fn new_store(s3: &S3Server, bucket: &str, prefix: &str, extra: &[&str]) -> TestStore {
    let url = format!("s3://{bucket}/{prefix}");
    let mut args = vec!["--packs", url.as_str()];
    args.extend_from_slice(extra);
    TestStore::new_env(&args, s3.env())
}

#[test]
fn packs_go_to_the_bucket_and_read_back_through_a_bounded_cache() {
    let s3 = S3Server::start();
    s3.create_bucket("ddb");
    let mut t = new_store(&s3, "ddb", "one", &["--pack-size", "4M"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.mount(&format!("cache_size=8M,metrics=127.0.0.1:{port}"));
    let c = t.path("backups");
    write_files(&c, 3, 6, 1);
    sh(&format!(
        "cp -a {}/src {}/",
        manifest_dir().display(),
        c.display()
    ));
    let want = digest(&c);
    // A checkpoint seals the current pack and waits for every upload.
    let out = ok(&t.cli(&["checkpoint", "--json"]));
    let ck: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        ck["key"].as_str().unwrap().starts_with("checkpoints/"),
        "{out}"
    );
    let st = stats(&t);
    assert_eq!(st["remote"]["pending_packs"], 0, "{st}");
    // Prometheus sees the tier too.
    let scrape = sh(&format!("curl -sf http://127.0.0.1:{port}/metrics"));
    for m in [
        "dedupfs_remote_pending_bytes 0",
        "dedupfs_remote_upload_failing 0",
        "dedupfs_remote_uploaded_bytes_total ",
        "dedupfs_remote_last_checkpoint_timestamp_seconds ",
    ] {
        assert!(scrape.contains(m), "{m} missing from:\n{scrape}");
    }
    let objects = pack_objects(&s3, "ddb", "one");
    assert!(
        objects.len() >= 5,
        "18 MiB of unique data in 4 MiB packs: {objects:?}"
    );
    assert_eq!(s3.list("ddb", "one/checkpoints/").len(), 1);
    assert_eq!(s3.list("ddb", "one/dedupfs.json").len(), 1);
    t.umount();
    // Every pack left the local disk; the cache kept within its budget.
    assert_eq!(local_packs(&t), 0);
    assert!(du(&t.store.join("cache")) <= 8 << 20, "cache over budget");
    // Cold: no cache at all. Everything reads back from the bucket.
    sh(&format!("rm -rf {}", t.store.join("cache").display()));
    t.mount("cache_size=8M");
    assert_eq!(digest(&t.path("backups")), want);
    let st = stats(&t);
    assert!(
        st["remote"]["cache"]["fetched_bytes"].as_u64().unwrap() > 10 << 20,
        "{st}"
    );
    assert!(
        st["remote"]["cache"]["used"].as_u64().unwrap() <= 8 << 20,
        "{st}"
    );
    let fsck = t.cli(&["fsck", "--scrub"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    t.umount();
    assert!(du(&t.store.join("cache")) <= 8 << 20);

    // An object lost in the bucket: fsck names the pack and the object, and fails.
    let victim = pack_objects(&s3, "ddb", "one")[0].clone();
    s3.delete("ddb", &victim);
    sh(&format!("rm -rf {}", t.store.join("cache").display()));
    let out = t.cli(&["fsck"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let pack_hex = victim.rsplit('/').next().unwrap().trim_end_matches(".pack");
    assert!(
        text.contains(&format!("pack {pack_hex} is missing"))
            && text.contains(&format!("s3://ddb/{victim}")),
        "{text}"
    );
}

#[test]
fn kill_9_before_upload_loses_nothing_and_a_server_restart_mid_write_is_survived() {
    let mut s3 = S3Server::start();
    s3.create_bucket("ddb");
    let mut t = new_store(&s3, "ddb", "two", &["--pack-size", "1M"]);
    // Uploads held back: what fsync acknowledged is only on local disk.
    t.env.push(("DEDUPFS_TEST_HOLD_UPLOADS".into(), "1".into()));
    t.mount("");
    let c = t.path("c");
    write_files(&c, 2, 3, 10);
    sh(&format!("sync -f {}/f0", c.display()));
    ok(&t.cli(&["sync"]));
    let want = digest(&c);
    t.kill9();
    assert!(
        pack_objects(&s3, "ddb", "two").is_empty(),
        "nothing was uploaded"
    );
    assert!(local_packs(&t) >= 6);
    // Mounted again without the hold: the packs left behind are uploaded at open.
    t.env.pop();
    t.mount("");
    assert_eq!(digest(&t.path("c")), want);
    ok(&t.cli(&["checkpoint", "--wait", "120"]));
    assert!(pack_objects(&s3, "ddb", "two").len() >= 6);

    // The server goes away mid-write: writes still succeed (local), uploads wait.
    s3.kill();
    let d = t.path("d");
    write_files(&d, 2, 2, 20);
    ok(&t.cli(&["sync"]));
    let st = stats(&t);
    assert!(st["remote"]["pending_packs"].as_u64().unwrap() > 0, "{st}");
    s3.restart();
    // Uploads resume by themselves; a checkpoint waits for them.
    ok(&t.cli(&["checkpoint", "--wait", "120"]));
    let want_d = digest(&d);
    t.umount();
    assert_eq!(local_packs(&t), 0, "all uploaded after the restart");
    sh(&format!("rm -rf {}", t.store.join("cache").display()));
    t.mount("");
    assert_eq!(digest(&t.path("c")), want);
    assert_eq!(digest(&t.path("d")), want_d);
    let fsck = t.cli(&["fsck", "--scrub"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn an_outage_makes_writers_fail_with_eio_after_upload_wait_and_then_recovers() {
    let mut s3 = S3Server::start();
    s3.create_bucket("ddb");
    let mut t = new_store(&s3, "ddb", "three", &["--pack-size", "1M"]);
    // A cache of one pack and (almost) no chunk cache: reads of older data need the server.
    t.mount("upload_backlog=2M,upload_wait=3,remote_timeout=2,cache_size=1M,chunk_cache=4K");
    let c = t.path("c");
    std::fs::create_dir(&c).unwrap();
    std::fs::write(c.join("before"), pseudo_random(1 << 20, 5)).unwrap();
    for i in 0..3 {
        std::fs::write(c.join(format!("filler{i}")), pseudo_random(1 << 20, 7 + i)).unwrap();
    }
    ok(&t.cli(&["checkpoint"]));
    sh("echo 3 > /proc/sys/vm/drop_caches");
    s3.kill();
    // A read that needs the bucket fails with EIO (after remote_timeout), not wrong data.
    let out = std::process::Command::new("cat")
        .arg(c.join("before"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // More than the backlog: the writer waits 3 s, then gets EIO.
    let t0 = Instant::now();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 1 12); do dd if=/dev/urandom of={}/big$i bs=1M count=1 conv=fsync status=none || exit 1; done",
            c.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "writes past the backlog must fail while the server is down"
    );
    assert!(err.contains("Input/output error"), "{err}");
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "writers waited first"
    );
    let st = stats(&t);
    assert!(st["remote"]["last_error"].is_string(), "{st}");
    s3.restart();
    // Back: the backlog drains and writes work again; acknowledged data is intact.
    ok(&t.cli(&["checkpoint", "--wait", "120"]));
    std::fs::write(c.join("after"), pseudo_random(1 << 20, 6)).unwrap();
    ok(&t.cli(&["sync"]));
    assert_eq!(
        std::fs::read(c.join("before")).unwrap(),
        pseudo_random(1 << 20, 5)
    );
    assert_eq!(
        std::fs::read(c.join("after")).unwrap(),
        pseudo_random(1 << 20, 6)
    );
    let fsck = t.cli(&["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn a_store_comes_back_from_the_bucket_alone() {
    let s3 = S3Server::start();
    s3.create_bucket("ddb");
    let mut t = new_store(&s3, "ddb", "four", &["--pack-size", "2M"]);
    t.mount("");
    let c = t.path("nightly");
    write_files(&c, 2, 3, 30);
    sh(&format!(
        "cp -a {}/src {}/",
        manifest_dir().display(),
        c.display()
    ));
    ok(&t.cli(&["snapshot", "create", "nightly", "n1"]));
    let want = digest(&c);
    t.umount(); // uploads and checkpoints
    let containers = ok(&t.cli(&["container", "list"]));
    // The machine is lost: only the bucket is left.
    sh(&format!("rm -rf {}", t.store.display()));
    let out = t.run(&[
        "init",
        t.store.to_str().unwrap(),
        "--recover-from",
        "s3://ddb/four",
    ]);
    let text = ok(&out);
    assert!(text.contains("metadata as of"), "{text}");
    assert_eq!(ok(&t.cli(&["container", "list"])), containers);
    t.mount("");
    assert_eq!(digest(&t.path("nightly")), want);
    assert_eq!(digest(&t.path(".snapshots/n1")), want);
    let fsck = t.cli(&["fsck", "--scrub"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // The recovered store writes on, with new packs that never reuse an id.
    write_files(&t.path("more"), 1, 2, 40);
    ok(&t.cli(&["checkpoint"]));
    t.umount();
    // A second recovery, into a non-empty directory, is refused.
    let out = t.run(&[
        "init",
        t.store.to_str().unwrap(),
        "--recover-from",
        "s3://ddb/four",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gc_deletes_remote_packs_after_the_grace_period_and_a_newer_checkpoint() {
    let s3 = S3Server::start();
    s3.create_bucket("ddb");
    let mut t = new_store(&s3, "ddb", "five", &["--pack-size", "1M"]);
    t.mount("gc_idle=0");
    let keep = t.path("c/keep");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::write(&keep, pseudo_random(1 << 20, 50)).unwrap();
    std::fs::write(t.path("c/gone"), pseudo_random(6 << 20, 51)).unwrap();
    ok(&t.cli(&["checkpoint"]));
    let before = pack_objects(&s3, "ddb", "five").len();
    assert_eq!(s3.list("ddb", "five/checkpoints/").len(), 1);
    std::fs::remove_file(t.path("c/gone")).unwrap();
    ok(&t.cli(&["container", "set", "c", "--retention", "all=1s"]));
    // Retention counts whole seconds: the deleted file's versions leave the window.
    std::thread::sleep(Duration::from_secs(2));
    ok(&t.cli(&["retention", "prune", "c"]));
    ok(&t.cli(&["sync"]));
    // The newest checkpoint still names the condemned packs, so GC uploads a newer one
    // before it deletes them.
    let out = ok(&t.cli(&["gc", "--grace", "0", "--json"]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["checkpoint"].is_string(), "{out}");
    assert_eq!(s3.list("ddb", "five/checkpoints/").len(), 2);
    let after = pack_objects(&s3, "ddb", "five").len();
    assert!(
        after + 5 <= before,
        "6 MiB of dead packs deleted: {before} -> {after}"
    );
    let fsck = t.cli(&["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // The bucket alone still holds everything live: recover from it after the deletes.
    t.umount();
    sh(&format!("rm -rf {}", t.store.display()));
    ok(&t.run(&[
        "init",
        t.store.to_str().unwrap(),
        "--recover-from",
        "s3://ddb/five",
    ]));
    t.mount("gc_idle=0");
    assert_eq!(std::fs::read(&keep).unwrap(), pseudo_random(1 << 20, 50));
    assert!(!t.path("c/gone").exists());
    let fsck = t.cli(&["fsck", "--scrub"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // A pack in the bucket that nothing names: `fsck --repair` condemns it (the newest
    // checkpoint could name it) rather than deleting it; GC deletes it.
    let orphan = "five/packs/0003f/0000fff0.pack";
    s3.put("ddb", orphan, "not really a pack");
    let out = ok(&t.cli(&["fsck", "--repair"]));
    assert!(out.contains("condemned 1 orphan"), "{out}");
    assert_eq!(s3.list("ddb", orphan).len(), 1, "still there after fsck");
    let out = ok(&t.cli(&["gc", "--grace", "0", "--json"]));
    assert!(s3.list("ddb", orphan).is_empty(), "deleted by gc: {out}");
}

#[test]
fn bad_endpoint_credentials_bucket_and_prefix_are_clear_errors() {
    let s3 = S3Server::start();
    s3.create_bucket("ddb");
    let root = tempfile::tempdir_in(test_root()).unwrap();
    let init = |url: &str, env: &[(String, String)]| {
        let dir = root.path().join(format!("s{}", rand_suffix()));
        let out = dedupfs_env(&["init", dir.to_str().unwrap(), "--packs", url], env);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        // A refused init leaves nothing behind.
        assert!(out.status.success() || !dir.exists(), "{text}");
        (out.status.code(), text)
    };
    let (code, text) = init("s3://nosuchbucket/x", &s3.env());
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("bucket does not exist"), "{text}");
    let mut bad = s3.env();
    bad[1].1 = "wrong-secret".into();
    let (code, text) = init("s3://ddb/x", &bad);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("credentials refused"), "{text}");
    let mut dead = s3.env();
    dead[2].1 = "http://127.0.0.1:9".into();
    let (code, text) = init("s3://ddb/x", &dead);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    // Credentials from a shared credentials file and a named profile instead of the
    // environment.
    let creds = root.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
             [backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            dedupfs_tests::s3::KEY,
            dedupfs_tests::s3::SECRET
        ),
    )
    .unwrap();
    let profile_env: Vec<(String, String)> = vec![
        ("AWS_ACCESS_KEY_ID".into(), String::new()),
        ("AWS_SECRET_ACCESS_KEY".into(), String::new()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            creds.display().to_string(),
        ),
        ("AWS_PROFILE".into(), "backup".into()),
        ("AWS_ENDPOINT_URL".into(), s3.endpoint()),
    ];
    let (code, text) = init("s3://ddb/profile", &profile_env);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = init("http://dd/x", &s3.env());
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("s3://"), "{text}");
    // A prefix that holds a store already is refused, naming what to do.
    let (code, _) = init("s3://ddb/taken", &s3.env());
    assert_eq!(code, Some(0));
    let (code, text) = init("s3://ddb/taken", &s3.env());
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("--recover-from"), "{text}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
