//! The Prometheus endpoint (`-o metrics=IP:PORT`): scraped over HTTP from a live mount,
//! parsed by the reference client library's parser, and checked against what the mount
//! did and what `dedupfs stats` says.

use dedupfs_tests::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// A port nothing listens on right now (the kernel's pick, released at once).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// GET `path` over HTTP/1.1; (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

type Samples = Vec<(String, HashMap<String, String>, f64)>;

/// Scrapes /metrics and parses it with prometheus_client (fails on malformed output).
fn scrape(port: u16) -> Samples {
    let (status, body) = get(port, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    let mut p = Command::new(venv_python())
        .arg(manifest_dir().join("clients/promparse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python with prometheus_client (tests/setup.sh --test-tools)");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, HashMap<String, String>, serde_json::Value)> =
        serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|(n, l, x)| {
            let f = match &x {
                serde_json::Value::String(s) if s == "+Inf" => f64::INFINITY,
                _ => x.as_f64().unwrap(),
            };
            (n, l, f)
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|x| x.2)
}

#[test]
fn metrics_endpoint_reports_what_the_mount_did() {
    let port = free_port();
    let mut t = TestStore::mounted(&format!("metrics=127.0.0.1:{port}"));
    ok(&t.cli(&["container", "create", "c"]));
    ok(&t.cli(&["container", "create", "d"]));
    ok(&t.cli(&[
        "container",
        "set",
        "d",
        "--lock",
        "compliance",
        "--lock-for",
        "30d",
    ]));
    let data = pseudo_random(3 << 20, 7);
    std::fs::write(t.path("c/a"), &data).unwrap();
    ok(&t.cli(&["sync"]));
    std::fs::write(t.path("d/b"), &data).unwrap(); // all of it deduplicated
    assert!(std::fs::metadata(t.path("c/missing")).is_err());
    ok(&t.cli(&["sync"]));
    // Out of the page cache, so the read reaches the daemon.
    sh("sync && echo 3 > /proc/sys/vm/drop_caches");
    assert_eq!(std::fs::read(t.path("c/a")).unwrap().len(), data.len());
    let stats = t.stats();
    let s = scrape(port);

    // Store figures are stats' figures.
    let logical = |c: &str| value(&s, "dedupfs_logical_bytes", &[("container", c)]);
    assert_eq!(logical("c"), Some(data.len() as f64));
    assert_eq!(logical("d"), Some(data.len() as f64));
    assert_eq!(
        value(&s, "dedupfs_store_unique_bytes", &[]),
        stats["unique_bytes"].as_f64()
    );
    assert_eq!(
        value(&s, "dedupfs_pack_bytes", &[]),
        stats["pack_bytes"].as_f64()
    );
    assert!(value(&s, "dedupfs_dedup_ratio", &[("container", "d")]).is_some());
    assert_eq!(value(&s, "dedupfs_halted", &[]), Some(0.0));
    assert!(value(&s, "dedupfs_filesystem_free_bytes", &[]).unwrap() > 0.0);
    assert!(value(
        &s,
        "dedupfs_retention_window_seconds",
        &[("container", "c")]
    )
    .is_some());
    assert!(value(&s, "dedupfs_build_info", &[]).is_some());
    // The retention lock, its window and the clock it is measured by.
    let lock = [("container", "d"), ("mode", "compliance")];
    assert_eq!(
        value(&s, "dedupfs_retention_lock_seconds", &lock),
        Some(30.0 * 86_400.0)
    );
    let start = value(
        &s,
        "dedupfs_retention_lock_window_start_timestamp_seconds",
        &lock,
    );
    let clock = value(&s, "dedupfs_compliance_clock_timestamp_seconds", &[]).unwrap();
    // Read within one scrape, possibly a second apart.
    let start = start.unwrap();
    assert!(
        (start - (clock - 30.0 * 86_400.0)).abs() <= 1.0,
        "{start} vs {clock}"
    );
    assert_eq!(
        stats["clock"]["compliance"]
            .as_f64()
            .map(|c| (c - clock).abs() <= 5.0),
        Some(true)
    );
    assert!(
        value(
            &s,
            "dedupfs_retention_lock_oldest_expiry_timestamp_seconds",
            &lock
        )
        .unwrap()
            > clock
    );
    assert!(value(&s, "dedupfs_clock_skew_seconds", &[]).unwrap().abs() <= 60.0);
    assert_eq!(
        value(
            &s,
            "dedupfs_retention_lock_seconds",
            &[("container", "c"), ("mode", "compliance")]
        ),
        None
    );

    // Traffic: both writes arrived, one of them entirely as duplicates.
    assert!(value(&s, "dedupfs_write_bytes_total", &[]).unwrap() >= 2.0 * data.len() as f64);
    assert!(value(&s, "dedupfs_ingest_new_bytes_total", &[]).unwrap() >= data.len() as f64);
    assert!(
        value(&s, "dedupfs_ingest_deduplicated_bytes_total", &[]).unwrap() >= data.len() as f64
    );
    assert!(value(&s, "dedupfs_read_bytes_total", &[]).unwrap() >= data.len() as f64);
    assert!(value(&s, "dedupfs_commits_total", &[]).unwrap() > 0.0);
    assert!(value(&s, "dedupfs_syncs_total", &[]).unwrap() >= 1.0);

    // Requests by operation, with latency histograms whose +Inf bucket is the count.
    let writes = value(&s, "dedupfs_fuse_requests_total", &[("op", "write")]).unwrap();
    assert!(writes > 0.0);
    let inf = value(
        &s,
        "dedupfs_fuse_request_duration_seconds_bucket",
        &[("op", "write"), ("le", "+Inf")],
    );
    let count = value(
        &s,
        "dedupfs_fuse_request_duration_seconds_count",
        &[("op", "write")],
    );
    assert_eq!(inf, count);
    assert!(count.unwrap() >= writes - 1.0, "{count:?} vs {writes}");
    assert!(
        value(
            &s,
            "dedupfs_fuse_errors_total",
            &[("op", "lookup"), ("errno", "ENOENT")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(value(&s, "dedupfs_commit_duration_seconds_count", &[]).unwrap() > 0.0);

    // Counters only grow.
    std::fs::write(t.path("c/more"), b"x").unwrap();
    ok(&t.cli(&["sync"]));
    let s2 = scrape(port);
    for name in ["dedupfs_commits_total", "dedupfs_write_bytes_total"] {
        assert!(
            value(&s2, name, &[]).unwrap() > value(&s, name, &[]).unwrap(),
            "{name}"
        );
    }
    assert!(get(port, "/nothing").0.contains(" 404 "));
    t.umount();
    // Gone with the mount.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_metrics_port_in_use_fails_the_mount_by_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let t = TestStore::new();
    let o = dedupfs(&[
        "mount",
        t.store.to_str().unwrap(),
        t.mnt.to_str().unwrap(),
        "-o",
        &format!("metrics=127.0.0.1:{port}"),
    ]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("metrics"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!is_mounted(&t.mnt));
    let o = dedupfs(&[
        "mount",
        t.store.to_str().unwrap(),
        t.mnt.to_str().unwrap(),
        "-o",
        "metrics=localhost",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
