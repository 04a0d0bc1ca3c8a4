//! Owner-only permissions of everything in a store.
//!
//! A store holds every byte that was backed up into it, so other local users must read
//! none of it: directories are 0700 and files 0600. These functions create entries that
//! way whatever the umask, and tighten a tree whose modes are looser.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates a directory (and missing parents) that only its owner can enter.
pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(p)?;
    make_private_dir(p)
}

/// Sets an existing directory to 0700 (a umask can only have removed bits, and an existing
/// directory keeps whatever it had).
pub fn make_private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Makes every directory under `root` (and `root`) 0700 and every file 0600 where group or
/// other users had any access. Symbolic links are left alone (their modes mean nothing).
/// Returns what was changed, with the mode it had.
pub fn tighten(root: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    let mut changed = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_dir() {
            if mode & 0o077 != 0 || mode & DIR_MODE != DIR_MODE {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(DIR_MODE))?;
                if mode & 0o077 != 0 {
                    changed.push((p.clone(), mode));
                }
            }
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if !ft.is_symlink() && mode & 0o077 != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(FILE_MODE))?;
            changed.push((p, mode));
        }
    }
    Ok(changed)
}

/// A few of the changed paths, for a log line.
pub fn summary(changed: &[(PathBuf, u32)]) -> String {
    let mut s: Vec<String> = changed
        .iter()
        .take(5)
        .map(|(p, m)| format!("{} (was {m:04o})", p.display()))
        .collect();
    if changed.len() > 5 {
        s.push(format!("and {} more", changed.len() - 5));
    }
    s.join(", ")
}

/// The uid owning `p`.
pub fn owner(p: &Path) -> Option<u32> {
    std::fs::metadata(p).ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tighten_closes_group_and_other_access() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = sub.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private = sub.join("p");
        std::fs::write(&private, b"x").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let changed = tighten(d.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(d.path()), 0o700);
        assert!(changed.iter().any(|(p, m)| p == &f && *m == 0o644));
        assert!(!changed.iter().any(|(p, _)| p == &private));
        assert!(
            tighten(d.path()).unwrap().is_empty(),
            "nothing left to change"
        );
    }
}
