//! `dedupfs install`: puts the binary, the mount helper, the man pages, shell completions and
//! the systemd units where a Linux system looks for them.
//!
//! Invariants:
//! - The binary is copied beside its target and renamed over it, so a running daemon's
//!   executable is never overwritten in place.
//! - Man pages and completions are generated from the same clap definitions the binary
//!   parses its arguments with, so they cannot drift from the command line.
//! - Unit files name the binary where this install put it (`PREFIX/bin/dedupfs`).
//! - Every file is written whole under a temporary name and renamed, so a reader (man,
//!   systemd, a shell) never sees half a file.

use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Where `dedupfs install` puts things.
#[derive(Debug, Clone)]
pub struct Layout {
    /// PREFIX: `bin/`, `share/man/man1/`, `share/bash-completion/completions/`,
    /// `share/zsh/site-functions/`, `share/fish/vendor_completions.d/`.
    pub prefix: PathBuf,
    /// Where mount(8) looks for `mount.fuse.dedupfs`.
    pub sbin: PathBuf,
    /// Where the systemd units go; `None` skips them.
    pub systemd: Option<PathBuf>,
}

/// The units and drop-ins shipped with the binary (`mount/systemd/`), by their path under
/// the systemd unit directory.
pub const UNITS: &[(&str, &str)] = &[
    (
        "dedupfs@.service",
        include_str!("../systemd/dedupfs@.service"),
    ),
    ("dedupfs.target", include_str!("../systemd/dedupfs.target")),
    (
        "dedupfs-replicate@.service",
        include_str!("../systemd/dedupfs-replicate@.service"),
    ),
    (
        "dedupfs-replicate@.timer",
        include_str!("../systemd/dedupfs-replicate@.timer"),
    ),
    (
        "nfs-ganesha.service.d/dedupfs.conf",
        include_str!("../systemd/nfs-ganesha.service.d/dedupfs.conf"),
    ),
    (
        "nfs-server.service.d/dedupfs.conf",
        include_str!("../systemd/nfs-server.service.d/dedupfs.conf"),
    ),
    (
        "smbd.service.d/dedupfs.conf",
        include_str!("../systemd/smbd.service.d/dedupfs.conf"),
    ),
];

/// The binary path the shipped units name.
const UNIT_BINARY: &str = "/usr/local/bin/dedupfs";

/// Writes `data` to `path` through a temporary file and a rename.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.install"));
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The man pages: `dedupfs.1` and one page per subcommand (`dedupfs-rollback.1`,
/// `dedupfs-container-create.1`, …), rendered in memory.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut pages = Vec::new();
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    render_pages(&cmd, "dedupfs", &mut pages)?;
    Ok(pages)
}

fn render_pages(
    cmd: &clap::Command,
    name: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| format!("rendering the man page of {name}: {e}"))?;
    out.push((format!("{name}.1"), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_pages(sub, &format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(())
}

/// A completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "dedupfs", &mut buf);
    buf
}

/// Installs everything; returns one line per thing done.
pub fn install(l: &Layout) -> Result<Vec<String>, String> {
    use clap_complete::Shell;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bin_dir = l.prefix.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
    std::fs::create_dir_all(&l.sbin).map_err(|e| format!("{}: {e}", l.sbin.display()))?;
    let target = bin_dir.join("dedupfs");
    let mut done = Vec::new();
    if std::fs::canonicalize(&exe).ok() != std::fs::canonicalize(&target).ok() {
        // Copy then rename, so a running daemon's binary is never overwritten in place.
        let tmp = bin_dir.join(".dedupfs.install");
        std::fs::copy(&exe, &tmp).map_err(|e| format!("copy to {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        done.push(format!("installed {}", target.display()));
    }
    // The link too is made under a temporary name and renamed over the old one, so
    // mount(8) never finds the helper missing.
    let helper = l.sbin.join("mount.fuse.dedupfs");
    let tmp_link = l.sbin.join(".mount.fuse.dedupfs.install");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&target, &tmp_link)
        .map_err(|e| format!("{}: {e}", tmp_link.display()))?;
    std::fs::rename(&tmp_link, &helper).map_err(|e| format!("{}: {e}", helper.display()))?;
    done.push(format!(
        "linked {} -> {}",
        helper.display(),
        target.display()
    ));

    let man_dir = l.prefix.join("share/man/man1");
    let pages = man_pages()?;
    for (name, page) in &pages {
        write_file(&man_dir.join(name), page, 0o644)?;
    }
    done.push(format!(
        "wrote {} man pages to {}",
        pages.len(),
        man_dir.display()
    ));

    for (shell, path) in [
        (Shell::Bash, "share/bash-completion/completions/dedupfs"),
        (Shell::Zsh, "share/zsh/site-functions/_dedupfs"),
        (Shell::Fish, "share/fish/vendor_completions.d/dedupfs.fish"),
    ] {
        let p = l.prefix.join(path);
        write_file(&p, &completions(shell), 0o644)?;
        done.push(format!("wrote {shell} completions to {}", p.display()));
    }

    if let Some(dir) = &l.systemd {
        let binary = target.to_string_lossy();
        for (name, text) in UNITS {
            let p = dir.join(name);
            write_file(&p, text.replace(UNIT_BINARY, &binary).as_bytes(), 0o644)?;
            done.push(format!("wrote {}", p.display()));
        }
        let example = l.prefix.join("share/doc/dedupfs/example.conf");
        write_file(&example, include_bytes!("../systemd/example.conf"), 0o644)?;
        done.push(format!("wrote {}", example.display()));
        done.push(
            "systemd: put STORE=, MOUNTPOINT= and OPTIONS= in /etc/dedupfs/NAME.conf, then \
             `systemctl daemon-reload && systemctl enable --now dedupfs@NAME` (docs/service.md)"
                .to_string(),
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_and_completions_name_them() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "dedupfs.1",
            "dedupfs-rollback.1",
            "dedupfs-container-create.1",
            "dedupfs-snapshot-create.1",
            "dedupfs-mount.1",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let rollback = pages
            .iter()
            .find(|(n, _)| n == "dedupfs-rollback.1")
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .unwrap();
        assert!(rollback.contains(".TH dedupfs-rollback 1"), "{rollback}");
        assert!(rollback.contains("\\-\\-to"), "{rollback}");
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        for sub in ["rollback", "snapshot", "container", "retention"] {
            assert!(bash.contains(sub), "bash completion lacks {sub}");
        }
    }

    #[test]
    fn shipped_units_name_the_installed_binary() {
        let (_, unit) = UNITS[0];
        assert!(unit.contains(UNIT_BINARY), "{unit}");
    }
}
