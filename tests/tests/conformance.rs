//! Conformance suites against a real mount: pjdfstest (POSIX semantics) and fsx (data
//! integrity under read/write/mmap/truncate/fallocate/punch-hole/copy_file_range).
//! Both tools are installed by tests/run.sh (`cargo install pjdfstest fsx`).

use dedupfs_tests::*;
use std::process::Command;

fn tool(name: &str) -> String {
    let found = Command::new("bash")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run tests/run.sh, which installs it with `cargo install {name}`"
    );
    name.to_string()
}

fn here(rel: &str) -> String {
    manifest_dir().join(rel).display().to_string()
}

#[test]
fn pjdfstest_passes_with_no_failures() {
    let pjd = tool("pjdfstest");
    let t = TestStore::mounted("");
    let c = t.path("c");
    std::fs::create_dir(&c).unwrap();
    sh(&format!("chmod 0777 {}", c.display()));
    let second = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = Command::new(pjd)
        .current_dir(&c)
        .env("RUST_BACKTRACE", "0")
        .args(["-c", &here("pjdfstest.toml"), "-p"])
        .arg(&c)
        .arg("-s")
        .arg(second.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let num = |word: &str| -> u32 {
        summary
            .split(',')
            .find(|p| p.contains(word))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or_else(|| panic!("{word} missing in {summary}"))
    };
    let failed_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED") || l.contains("failed:"))
        .collect();
    assert_eq!(num("failed"), 0, "{summary}\n{}", failed_lines.join("\n"));
    assert!(num("passed") >= 384, "{summary}");
    // The documented skips only (see tests/pjdfstest.toml).
    for l in stdout.lines().filter(|l| l.trim_end().ends_with("skipped")) {
        assert!(
            l.contains("erofs") || l.contains("link_count_max"),
            "undocumented skip: {l}"
        );
    }
}

#[test]
fn fsx_full_profile_100k_operations() {
    let fsx = tool("fsx");
    let t = TestStore::mounted("");
    std::fs::create_dir(t.path("c")).unwrap();
    let logs = tempfile::tempdir_in(test_root()).unwrap();
    let out = Command::new(fsx)
        .env("RUST_BACKTRACE", "0")
        .args([
            "-f",
            &here("fsx-full.toml"),
            "-N",
            "100000",
            "-S",
            "12345",
            "-P",
        ])
        .arg(logs.path())
        .arg(t.path("c/fsx.dat"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("All operations completed A-OK!"),
        "fsx failed:\n{}",
        &text[text.len().saturating_sub(4000)..]
    );
}
