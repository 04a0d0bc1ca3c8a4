//! The CLI side of history commands: pushing the kernel's dirty pages to the daemon
//! before a consistency point, mounting a snapshot on its own mount point, and printing
//! bookmark, snapshot, rollback and retention results as text.

use crate::output::{size, table};
use crate::{locate, CliError, ExitKind};
use std::path::{Path, PathBuf};

fn mountpoint_of(store: &Path) -> Option<PathBuf> {
    locate::mounts()
        .into_iter()
        .find(|m| m.store == store)
        .map(|m| m.mountpoint)
}

/// Hands the kernel's dirty pages of a mounted store to its daemon (`syncfs`), so that a
/// bookmark, snapshot or rollback that follows includes every completed write.
pub fn sync_mount(store: &Path) {
    let Some(mnt) = mountpoint_of(store) else {
        return;
    };
    match std::fs::File::open(&mnt) {
        Ok(f) => {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
            let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
            // The kernel writes dirty pages back before it asks the filesystem to sync;
            // only that first part matters here, so the reply to the second is ignored.
            if rc != 0 {
                log::debug!(
                    "syncfs {}: {}",
                    mnt.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Err(e) => log::warn!("cannot open {}: {e}", mnt.display()),
    }
}

/// Bind-mounts `MOUNT/.snapshots/NAME` on `target`, read-only for ro snapshots (a
/// read-only bind mount refuses writes in the kernel, before they reach the daemon).
pub fn mount_snapshot(
    store: &Path,
    name: &str,
    target: &Path,
    read_only: bool,
) -> Result<(), CliError> {
    let mnt = mountpoint_of(store).ok_or_else(|| {
        CliError::new(
            ExitKind::Mount,
            format!(
                "the store {} is not mounted; mount it first",
                store.display()
            ),
        )
    })?;
    let src = mnt.join(".snapshots").join(name);
    let meta = std::fs::metadata(&src)
        .map_err(|_| CliError::new(ExitKind::NotFound, format!("no snapshot named '{name}'")))?;
    if !meta.is_dir() {
        return Err(CliError::new(
            ExitKind::NotFound,
            format!("no snapshot named '{name}'"),
        ));
    }
    crate::daemon::check_mountpoint(target)?;
    crate::daemon::bind_mount(&src, target, read_only)?;
    println!(
        "snapshot '{name}' mounted on {}{} (unmount with: umount {})",
        target.display(),
        if read_only { " read-only" } else { "" },
        target.display()
    );
    Ok(())
}

fn s(v: &serde_json::Value, k: &str) -> String {
    match v.get(k) {
        Some(serde_json::Value::String(x)) => x.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

fn when(v: &serde_json::Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_i64())
        .map(dedupfs_core::points::format_local)
        .unwrap_or_default()
}

fn print_changes(list: &[serde_json::Value]) {
    for c in list {
        let ranges = c
            .get("ranges")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|x| Some((x.get(0)?.as_u64()?, x.get(1)?.as_u64()?)))
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .map(|r| {
                if r.is_empty() {
                    String::new()
                } else {
                    format!(" bytes {r}")
                }
            })
            .unwrap_or_else(|| {
                if s(c, "kind") == "modified" && s(c, "file_type") == "file" {
                    " whole file".into()
                } else {
                    String::new()
                }
            });
        let sign = match s(c, "kind").as_str() {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        println!("{sign} {} ({}){ranges}", s(c, "path"), s(c, "file_type"));
    }
}

pub fn print(v: &serde_json::Value, what: &str, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    match what {
        "bookmark create" => println!(
            "bookmark '{}' ({}) at {} (version {})",
            s(v, "name"),
            s(v, "kind"),
            when(v, "time"),
            n(v, "version")
        ),
        "bookmark list" => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| {
                            vec![
                                s(b, "name"),
                                s(b, "kind"),
                                when(b, "time"),
                                n(b, "version").to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(&["NAME", "KIND", "TIME", "VERSION"], &rows);
        }
        "snapshot create" | "snapshot show" => println!(
            "snapshot '{}' ({}) of container {} as of {}{}",
            s(v, "name"),
            s(v, "mode"),
            v.get("container_name")
                .and_then(|x| x.as_str())
                .map(|x| format!("'{x}'"))
                .unwrap_or_else(|| s(v, "container")),
            when(v, "at_time"),
            v.get("seconds")
                .and_then(|x| x.as_f64())
                .map(|x| format!(" (created in {:.1} ms)", x * 1000.0))
                .unwrap_or_default()
        ),
        "snapshot list" => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            vec![
                                s(x, "name"),
                                s(x, "mode"),
                                s(x, "container"),
                                when(x, "at_time"),
                                s(x, "origin"),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(&["NAME", "MODE", "CONTAINER", "AS OF", "ORIGIN"], &rows);
        }
        "snapshot changes" => print_changes(v.as_array().map(|a| a.as_slice()).unwrap_or(&[])),
        "snapshot apply" => {
            let applied = v
                .get("applied")
                .and_then(|a| a.as_array())
                .cloned()
                .unwrap_or_default();
            print_changes(&applied);
            for c in v
                .get("conflicts")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                println!("CONFLICT {}: {}", s(c, "path"), s(c, "reason"));
            }
            println!(
                "{} changes applied, {} copied, {} conflicts",
                applied.len(),
                size(n(v, "bytes_copied")),
                v.get("conflicts")
                    .and_then(|a| a.as_array())
                    .map_or(0, |a| a.len())
            );
        }
        "rollback" => {
            let dry = v.get("dry_run").and_then(|d| d.as_bool()).unwrap_or(false);
            if dry {
                print_changes(
                    v.get("changes")
                        .and_then(|a| a.as_array())
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                );
                println!(
                    "dry run: rolling '{}' back to {} would add {}, remove {}, modify {} paths",
                    s(v, "container"),
                    s(v, "to"),
                    n(v, "added"),
                    n(v, "removed"),
                    n(v, "modified")
                );
            } else {
                println!(
                    "'{}' rolled back to {}; the previous state is snapshot '{}' (undo: dedupfs rollback {} --to '{}')",
                    s(v, "container"),
                    s(v, "to"),
                    s(v, "undo_snapshot"),
                    s(v, "container"),
                    s(v, "undo_snapshot")
                );
            }
        }
        "retention show" | "retention prune" => {
            println!("container     {}", s(v, "container"));
            println!(
                "policy        {}",
                v.get("policy")
                    .and_then(|p| p.as_str())
                    .unwrap_or("keep everything")
            );
            println!("window        from {}", when(v, "window_start"));
            println!("bookmarks     {}", n(v, "bookmarks"));
            println!("snapshots     {}", n(v, "snapshots"));
            println!(
                "history       {} of superseded data kept",
                size(n(v, "history_bytes"))
            );
            if what == "retention prune" {
                println!(
                    "pruned        {} versions, {} of extents released",
                    n(v, "pruned_versions"),
                    size(n(v, "released_bytes"))
                );
            }
            if let Some(h) = v.get("history_held_bytes").and_then(|x| x.as_u64()) {
                println!(
                    "only history  {} of packs at the last gc (what pruning could release)",
                    size(h)
                );
            }
            println!(
                "reclaimable   {} in the whole store, now (`dedupfs gc` frees it)",
                size(n(v, "store_reclaimable_bytes"))
            );
        }
        _ => println!("{v}"),
    }
}
