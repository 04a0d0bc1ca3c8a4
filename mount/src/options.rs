//! Mount options, parsed the way `mount -o` and fstab users expect.
//!
//! Accepts the kernel/FUSE options (`ro`, `allow_other`, `default_permissions`, …), the
//! util-linux options that mount passes through to helpers and we ignore (`defaults`,
//! `noauto`, `_netdev`, `x-*`, …) and dedupfs' own (`source=`, `threads=`, …). Anything
//! else is an error naming the option, never silently dropped.

use std::path::PathBuf;
use std::time::Duration;

/// Default kernel cache lifetime of names and attributes in containers' live trees. Long,
/// because nothing changes there behind the kernel's back: the daemon invalidates what it
/// changes on its own (rollback, apply, container deletion, data commits' block counts,
/// atime at open). Snapshots, time travel and virtual directories keep 1 s.
pub const LIVE_TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq)]
pub struct MountOpts {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    pub noatime: bool,
    /// `strictatime`: every read moves atime (else relatime).
    pub strictatime: bool,
    pub sync: bool,
    pub dirsync: bool,
    /// The store (for `mount -t fuse.dedupfs SOURCE DIR -o source=STORE`).
    pub source: Option<PathBuf>,
    pub threads: Option<usize>,
    /// Stores with packs in object storage: the local cache of pack bytes. On a local
    /// store, the chunk cache (its name before `chunk_cache=`).
    pub cache_size: Option<u64>,
    /// The in-memory cache of decompressed chunks.
    pub chunk_cache: Option<usize>,
    /// Stores with packs in object storage: writers wait while more sealed bytes than this
    /// await upload ...
    pub upload_backlog: Option<u64>,
    /// ... for at most this long, then fail with EIO.
    pub upload_wait: Duration,
    /// One request to the bucket, with its retries, gives up after this long.
    pub remote_timeout: Duration,
    /// Upload a metadata checkpoint this often (and at unmount); 0: only at unmount.
    pub checkpoint_interval: Duration,
    pub dirty_limit: Option<usize>,
    pub writeback: bool,
    /// Answer READDIRPLUS (listings with attributes); `no_readdirplus` turns it off.
    pub readdirplus: bool,
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    pub lock_wait: Duration,
    /// How often the daemon prunes history outside retention policies (0: never).
    pub prune_interval: Duration,
    /// Run GC after the store has seen no commit for this long (0: never).
    pub gc_idle: Duration,
    /// Grace period of packs condemned by background GC.
    pub gc_grace: Duration,
    pub log: Option<PathBuf>,
    /// Mount this container (created if missing) as the root of the mount.
    pub container: Option<String>,
    /// Serve Prometheus metrics at this address (`metrics=127.0.0.1:9580`); off by default.
    pub metrics: Option<std::net::SocketAddr>,
    /// Options as given, for re-exec of a background daemon.
    pub raw: Vec<String>,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            fsname: None,
            subtype: None,
            dev: false,
            suid: false,
            exec: true,
            noatime: false,
            strictatime: false,
            sync: false,
            dirsync: false,
            source: None,
            threads: None,
            cache_size: None,
            chunk_cache: None,
            upload_backlog: None,
            upload_wait: Duration::from_secs(600),
            remote_timeout: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(3600),
            dirty_limit: None,
            writeback: true,
            readdirplus: true,
            attr_timeout: LIVE_TTL,
            entry_timeout: LIVE_TTL,
            lock_wait: Duration::ZERO,
            prune_interval: Duration::from_secs(3600),
            gc_idle: Duration::from_secs(900),
            gc_grace: Duration::from_secs(10),
            log: None,
            container: None,
            metrics: None,
            raw: Vec::new(),
        }
    }
}

/// Parses "64M", "1GiB", "4096", "512k" into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 4096, 64K, 16M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    if n < 0.0 || !n.is_finite() {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_secs(opt: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        // At most ten years: Instant arithmetic must not overflow.
        .filter(|x| x.is_finite() && *x >= 0.0 && *x <= 315_360_000.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("mount option {opt}={v}: expected a number of seconds"))
}

impl MountOpts {
    /// The name the mount shows as its source: `fsname=`, else the store.
    pub fn fsname_or(&self, store: &std::path::Path) -> String {
        self.fsname
            .clone()
            .unwrap_or_else(|| store.display().to_string())
    }

    /// The mount's subtype (`fuse.SUBTYPE`): `dedupfs` unless `subtype=` names another;
    /// `subtype=` with no value means none (plain `fuse`, as xfstests' FSTYP=fuse wants).
    pub fn fs_subtype(&self) -> Option<&str> {
        match self.subtype.as_deref() {
            Some("") => None,
            Some(s) => Some(s),
            None => Some("dedupfs"),
        }
    }

    /// Parses `-o` strings (each a comma-separated list); later options win.
    pub fn parse<S: AsRef<str>>(lists: &[S]) -> Result<MountOpts, String> {
        let mut o = MountOpts::default();
        for list in lists {
            for opt in list
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                o.apply(opt)?;
                o.raw.push(opt.to_string());
            }
        }
        Ok(o)
    }

    pub(crate) fn apply(&mut self, opt: &str) -> Result<(), String> {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        fn need<'v>(key: &str, v: Option<&'v str>) -> Result<&'v str, String> {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("mount option {key} needs a value ({key}=…)"))
        }
        let flag = |v: Option<&str>| match v {
            None => Ok(()),
            Some(_) => Err(format!("mount option {key} takes no value")),
        };
        match key {
            "ro" => {
                flag(val)?;
                self.read_only = true
            }
            "rw" => {
                flag(val)?;
                self.read_only = false
            }
            "allow_other" => self.allow_other = true,
            "allow_root" => self.allow_root = true,
            "auto_unmount" => self.auto_unmount = true,
            "default_permissions" => {} // always on: the kernel checks permissions
            "fsname" => self.fsname = Some(need(key, val)?.to_string()),
            // `subtype=` (empty) mounts as plain "fuse", as xfstests' FSTYP=fuse expects.
            "subtype" => self.subtype = Some(val.unwrap_or("").to_string()),
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "exec" => self.exec = true,
            "noexec" => self.exec = false,
            "atime" | "relatime" => (self.noatime, self.strictatime) = (false, false),
            "strictatime" => (self.noatime, self.strictatime) = (false, true),
            "noatime" => (self.noatime, self.strictatime) = (true, false),
            // Listing a directory never moves its atime here, so there is nothing to turn off.
            "nodiratime" | "diratime" => {}
            "sync" => self.sync = true,
            "async" => self.sync = false,
            "dirsync" => self.dirsync = true,
            "source" => self.source = Some(PathBuf::from(need(key, val)?)),
            "threads" => {
                let n: usize = need(key, val)?.parse().map_err(|_| {
                    format!(
                        "mount option threads={}: expected a number",
                        val.unwrap_or("")
                    )
                })?;
                if !(1..=256).contains(&n) {
                    return Err(format!(
                        "mount option threads={n}: must be between 1 and 256"
                    ));
                }
                self.threads = Some(n)
            }
            "cache_size" => {
                self.cache_size = Some(
                    parse_size(need(key, val)?)
                        .map_err(|e| format!("mount option cache_size: {e}"))?,
                )
            }
            "chunk_cache" => {
                self.chunk_cache = Some(
                    parse_size(need(key, val)?)
                        .map_err(|e| format!("mount option chunk_cache: {e}"))?
                        as usize,
                )
            }
            "upload_backlog" => {
                self.upload_backlog = Some(
                    parse_size(need(key, val)?)
                        .map_err(|e| format!("mount option upload_backlog: {e}"))?,
                )
            }
            "upload_wait" => self.upload_wait = parse_secs(key, need(key, val)?)?,
            "remote_timeout" => {
                self.remote_timeout = parse_secs(key, need(key, val)?)?;
                if self.remote_timeout.is_zero() {
                    return Err("mount option remote_timeout must be more than 0".into());
                }
            }
            "checkpoint_interval" => self.checkpoint_interval = parse_secs(key, need(key, val)?)?,
            "dirty_limit" => {
                let n = parse_size(need(key, val)?)
                    .map_err(|e| format!("mount option dirty_limit: {e}"))?;
                if n < 1 << 20 {
                    return Err("mount option dirty_limit must be at least 1M".into());
                }
                self.dirty_limit = Some(n as usize)
            }
            "writeback_cache" | "writeback" => self.writeback = true,
            "no_writeback_cache" | "no_writeback" => self.writeback = false,
            "readdirplus" => self.readdirplus = true,
            "no_readdirplus" => self.readdirplus = false,
            "attr_timeout" => self.attr_timeout = parse_secs(key, need(key, val)?)?,
            "entry_timeout" => self.entry_timeout = parse_secs(key, need(key, val)?)?,
            "lock_wait" => self.lock_wait = parse_secs(key, need(key, val)?)?,
            "prune_interval" => self.prune_interval = parse_secs(key, need(key, val)?)?,
            "gc_idle" => self.gc_idle = parse_secs(key, need(key, val)?)?,
            "gc_grace" => self.gc_grace = parse_secs(key, need(key, val)?)?,
            "log" => self.log = Some(PathBuf::from(need(key, val)?)),
            "container" => self.container = Some(need(key, val)?.to_string()),
            "metrics" => {
                let v = need(key, val)?;
                self.metrics = Some(v.parse().map_err(|_| {
                    format!(
                        "mount option metrics={v}: expected IP:PORT, e.g. metrics=127.0.0.1:9580 \
                         ([::1]:9580 for IPv6)"
                    )
                })?)
            }
            // util-linux and fstab bookkeeping that reaches helpers: not ours to act on.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner" | "group"
            | "_netdev" | "nofail" | "loud" | "silent" | "remount" | "bg" | "fg" => {}
            k if k.starts_with("x-") || k.starts_with("comment") => {}
            _ => {
                return Err(format!(
                    "unknown mount option '{opt}' (see `dedupfs mount --help`)"
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_options() {
        let o = MountOpts::parse(&[
            "ro,allow_other,default_permissions",
            "source=/srv/dd,threads=4,cache_size=64M,noauto,x-systemd.automount",
        ])
        .unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.source, Some(PathBuf::from("/srv/dd")));
        assert_eq!(o.threads, Some(4));
        assert_eq!(o.cache_size, Some(64 << 20));
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        assert!(MountOpts::parse(&["frobnicate"])
            .unwrap_err()
            .contains("frobnicate"));
        assert!(MountOpts::parse(&["threads=zero"]).is_err());
        assert!(MountOpts::parse(&["threads=0"]).is_err());
        assert!(MountOpts::parse(&["cache_size=12Q"]).is_err());
        assert!(MountOpts::parse(&["ro=1"]).is_err());
        assert!(MountOpts::parse(&["source="]).is_err());
        assert!(MountOpts::parse(&["metrics=localhost"]).is_err());
        assert!(MountOpts::parse(&["metrics=127.0.0.1"]).is_err());
        assert_eq!(
            MountOpts::parse(&["metrics=127.0.0.1:9580"])
                .unwrap()
                .metrics,
            Some("127.0.0.1:9580".parse().unwrap())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("32K").unwrap(), 32 << 10);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("abc").is_err());
    }
}
