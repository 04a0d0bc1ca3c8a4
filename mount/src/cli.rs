//! Command-line definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (I/O error, busy, conflict)
  2  bad usage or invalid argument
  3  store unavailable (missing, not a store, newer format, in use by another process)
  4  mount problem (mount point missing or busy, no FUSE)
  5  not found (no such container, snapshot or bookmark)
  6  permission denied (another user's store or daemon)

Logging goes to stderr (the daemon's to STORE/dedupfs.log); set RUST_LOG=debug for more.";

/// dedupfs: a deduplicating FUSE filesystem for backups.
///
/// Top-level directories of the mount are containers. Every write is chunked and
/// deduplicated inline across all containers, and every change is kept as history.
#[derive(Parser, Debug)]
#[command(name = "dedupfs", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Store directory or mount point to act on [default: $DEDUPFS_STORE, or the only mounted store]
    #[arg(short = 's', long = "store", global = true, value_name = "STORE")]
    pub store: Option<PathBuf>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a new, empty store in a new or empty directory
    Init(InitArgs),
    /// Mount a store (in the background unless -f)
    #[command(after_help = MOUNT_HELP)]
    Mount(MountArgs),
    /// Unmount a mounted store and wait until its daemon has finished writing
    Umount {
        /// The mount point
        mountpoint: PathBuf,
        /// Detach now even if files are open (the daemon exits when they close)
        #[arg(short, long)]
        lazy: bool,
        /// Seconds to wait for the daemon's final flush; 0 waits as long as it runs (the
        /// systemd unit's choice: systemd bounds the stop itself)
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Install the binary, the mount helper, man pages, shell completions and systemd units
    ///
    /// Copies the binary to PREFIX/bin/dedupfs, links SBIN/mount.fuse.dedupfs to it (for
    /// `mount -t fuse.dedupfs` and fstab), writes man pages (`man dedupfs-rollback`) to
    /// PREFIX/share/man/man1, bash, zsh and fish completions under PREFIX/share, and the
    /// units dedupfs@.service and dedupfs.target (with drop-ins ordering NFS and SMB
    /// servers after dedupfs) to SYSTEMD_DIR. An fstab line then reads:
    ///   /srv/backup-store  /mnt/backup  fuse.dedupfs  allow_other,nofail  0  0
    /// and a service: /etc/dedupfs/backup.conf, `systemctl enable --now dedupfs@backup`.
    Install {
        #[arg(long, default_value = "/usr/local", value_name = "PREFIX")]
        prefix: PathBuf,
        #[arg(long, default_value = "/sbin", value_name = "SBIN")]
        sbin: PathBuf,
        /// Where the systemd units go
        #[arg(
            long,
            default_value = "/etc/systemd/system",
            value_name = "SYSTEMD_DIR"
        )]
        systemd_dir: PathBuf,
        /// Do not install the systemd units
        #[arg(long)]
        no_systemd: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// `dedupfs install` puts bash, zsh and fish scripts in place; this is for other
    /// places, e.g. `dedupfs completions bash > ~/.local/share/bash-completion/completions/dedupfs`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Create, list, inspect, change and delete containers
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Replicate a container's history to another store (here, or over ssh)
    ///
    /// Sends the points the target lacks (bookmarks, read-only snapshots, and the live
    /// state now) and only the chunks it does not hold; the target container is a
    /// read-only replica with the same points until `container promote`. A cut run
    /// (either side killed, the link lost) resumes where it stopped on the next run; a
    /// partial transfer is never visible at the target. TARGET is a store directory or
    /// ssh://[user@]host[:port]/path/to/store (ssh runs `dedupfs serve` there; set
    /// DEDUPFS_SSH for ssh options). Run it from a timer for a schedule (see the README).
    Replicate {
        /// The container to replicate
        container: String,
        /// The target store
        #[arg(long, value_name = "TARGET")]
        to: String,
        /// Name of the replica container at the target [default: the same name]
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Limit the bytes sent per second (e.g. 20M, 500k)
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<String>,
        /// Send a promoted replica back into the container it was promoted from: the
        /// target's changes since that point are kept in its history, and it becomes a
        /// replica of this one
        #[arg(long)]
        failback: bool,
        /// The program ssh runs on the remote host
        #[arg(long, default_value = "dedupfs", value_name = "PATH")]
        remote_cmd: String,
        /// Then compare both sides' trees of the newest point (records, attributes,
        /// entries and the hash of every chunk's bytes as read back); exits 1 listing
        /// the paths that differ. Reads all data of the tree on both sides
        #[arg(long)]
        verify: bool,
    },
    /// Write a container's replication stream to stdout (for `dedupfs receive`)
    ///
    /// A one-way stream carries every chunk its changes need (there is no channel to ask
    /// what the target has; `replicate` asks). Without --since it is a full stream.
    Send {
        container: String,
        /// Name of the replica container at the target [default: the same name]
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Send only what changed since this point (a bookmark, snapshot or time the
        /// target's replica already has as its newest point)
        #[arg(long, value_name = "POINT")]
        since: Option<String>,
        /// Limit the bytes written per second (e.g. 20M)
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<String>,
    },
    /// Receive a replication stream from stdin into a replica container
    Receive {
        /// The target store [default: --store]
        #[arg(value_name = "STORE")]
        path: Option<PathBuf>,
        /// The replica container [default: the name the stream carries]
        container: Option<String>,
        /// Discard the unfinished receive into CONTAINER instead
        #[arg(long)]
        abort: bool,
    },
    /// The receiving end of `replicate` on stdin/stdout (started by it, locally or by ssh)
    #[command(hide = true)]
    Serve,
    /// Reclaim space: drop unreferenced chunks, rewrite mostly-dead packs, delete empty ones
    ///
    /// Works while the store is mounted and written. Chunks still referenced by the live
    /// state, a snapshot or history kept by retention are never touched. Packs are deleted
    /// in two phases: condemned first, removed after the grace period.
    Gc {
        /// The store (or its mount point) [default: --store, $DEDUPFS_STORE, the only mount]
        #[arg(value_name = "STORE")]
        path: Option<PathBuf>,
        /// Print the plan (per pack: keep, rewrite or delete; reclaimable bytes per
        /// container and in total) and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Seconds a condemned pack stays on disk for reads in flight
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
        grace: f64,
        /// Rewrite a pack when at least this share of its bytes is reclaimable
        #[arg(long, default_value_t = 0.5, value_name = "FRACTION")]
        min_reclaim: f64,
        /// List every pack of the plan
        #[arg(short, long)]
        verbose: bool,
    },
    /// Check every reference and reference count; with --scrub, every chunk's content
    ///
    /// Exits 1 when a problem remains. Each problem names the container, path, version,
    /// chunk and pack it concerns.
    Fsck {
        /// The store (or its mount point) [default: --store, $DEDUPFS_STORE, the only mount]
        #[arg(value_name = "STORE")]
        path: Option<PathBuf>,
        /// Read every chunk and check it against its hash (reads all stored data)
        #[arg(long)]
        scrub: bool,
        /// Fix what has one right answer: reference counts, counters, orphan packs, lost
        /// unreferenced chunks; says what it cannot fix
        #[arg(long)]
        repair: bool,
    },
    /// Commit every buffered write and make all of it durable (pack data, then the
    /// metadata log); fails if any of it cannot be written
    Sync,
    /// Upload a metadata checkpoint to the store's bucket now (stores with packs in
    /// object storage): seals the current pack, waits for every pack to be uploaded, then
    /// uploads a compressed copy of the metadata. `init --recover-from` starts from the
    /// newest one. Also done every checkpoint_interval and at unmount
    Checkpoint {
        /// The store (or its mount point) [default: --store, $DEDUPFS_STORE, the only mount]
        #[arg(value_name = "STORE")]
        path: Option<PathBuf>,
        /// Wait at most this many seconds for pending uploads
        #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
        wait: f64,
    },
    /// List mounted stores: mount points and views, options, daemon health
    ///
    /// Every mounted store this user can see, or only the one --store names. Exits 1 when
    /// a daemon does not answer within 5 s or its store is halted.
    Status,
    /// Show what the store holds and costs: live data, data held for history, disk use,
    /// and what writes brought in (dedup, compression and savings of the data written)
    ///
    /// Figures: "live" is what is there now; "held" counts chunks referenced by the live
    /// data and the kept history; "on disk" is what du says of the store; "written" and
    /// "kept" are what applications wrote since the date shown and what of it the store
    /// had to keep — the ratios describe that, so keeping history never lowers them.
    Stats {
        /// Only this container
        container: Option<String>,
        /// Refresh every SECONDS (default 2) until interrupted; with --json, one JSON
        /// object per line. Buffered writes are not forced out, so figures may lag them by
        /// a few seconds.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Named consistency points of a container
    #[command(subcommand)]
    Bookmark(BookmarkCmd),
    /// Virtual snapshots: read-only, read-write and read-write-tracking
    #[command(subcommand, after_help = TIME_HELP)]
    Snapshot(SnapshotCmd),
    /// Make a container's live contents what they were at a time, bookmark or snapshot
    #[command(after_help = TIME_HELP)]
    Rollback {
        container: String,
        /// A time, bookmark or snapshot (e.g. --to -15m, --to before-upgrade)
        #[arg(
            long,
            value_name = "TIME|BOOKMARK|SNAPSHOT",
            allow_hyphen_values = true
        )]
        to: String,
        /// Show what would change, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show or apply a container's history retention
    #[command(subcommand)]
    Retention(RetentionCmd),
}

pub const TIME_HELP: &str = "\
Times: 'YYYY-MM-DD HH:MM[:SS]' (in this shell's time zone, $TZ; add Z or +HH:MM for
another), '@EPOCH_SECONDS', '-15m', '2h ago', 'now'. Times in the future are refused.
A bookmark or snapshot name is accepted wherever a time is. Browse any moment without
creating anything under MOUNTPOINT/.at/CONTAINER/TIME/ (there a local time is the
daemon's zone) and snapshots under MOUNTPOINT/.snapshots/NAME/.";

#[derive(Subcommand, Debug)]
pub enum BookmarkCmd {
    /// Commit the container's buffered writes, then name this moment
    Create {
        container: String,
        name: String,
        /// app (application-consistent), fs (file-system-consistent) or user
        #[arg(long, default_value = "user")]
        kind: String,
    },
    /// List a container's bookmarks
    List { container: String },
    /// Delete a bookmark (the history it pointed to stays, subject to retention)
    ///
    /// Refused (exit 7) for a bookmark inside a retention lock's window.
    Delete {
        container: String,
        name: String,
        /// Root only, governance locks only: delete it although the lock covers it
        #[arg(long)]
        bypass_governance: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Create a snapshot of a container, now or at an earlier point (O(1))
    Create {
        container: String,
        name: String,
        /// ro, rw (writes stay in the snapshot) or rw-tracking (rw, and changes can be
        /// listed and applied elsewhere)
        #[arg(long, default_value = "ro")]
        mode: String,
        /// A time, bookmark or snapshot instead of now (e.g. --at -2m)
        #[arg(long, value_name = "TIME|BOOKMARK", allow_hyphen_values = true)]
        at: Option<String>,
        /// Do not commit buffered writes first (instant; the snapshot shows what was
        /// committed, writes younger than ~5 s may be missing)
        #[arg(long)]
        no_flush: bool,
    },
    /// List snapshots
    List {
        /// Only this container's
        container: Option<String>,
    },
    /// Show one snapshot
    Show { name: String },
    /// Delete a snapshot (never changes the container or other snapshots)
    ///
    /// Refused (exit 7) for a snapshot created, showing a moment, or written inside a
    /// retention lock's window.
    Delete {
        name: String,
        /// Root only, governance locks only: delete it although the lock covers it
        #[arg(long)]
        bypass_governance: bool,
    },
    /// List what a rw-tracking snapshot changed: paths, and byte ranges of files
    Changes { name: String },
    /// Replay a rw-tracking snapshot's changes onto a container or a rw snapshot
    ///
    /// A path the target changed too since the snapshot was taken (its content, size,
    /// type, mode, owner or extended attributes; never its times) is a conflict: it is
    /// reported and left as the target has it, while every other change is applied; the
    /// command then exits 1. With --force the snapshot's version replaces the target's.
    Apply {
        name: String,
        /// The container or snapshot to change
        #[arg(long)]
        onto: String,
        /// Take the snapshot's side where the target changed a path too
        #[arg(long)]
        force: bool,
    },
    /// Mount a snapshot on its own mount point (a bind mount of MOUNT/.snapshots/NAME;
    /// the store must be mounted). Unmount with umount(8).
    Mount { name: String, mountpoint: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum RetentionCmd {
    /// The window available, points kept, bytes held by history
    Show { container: String },
    /// Prune history outside the container's policy now (the daemon also does it every
    /// prune_interval, see `dedupfs mount --help`)
    Prune { container: String },
}

const MOUNT_HELP: &str = "\
Mount options (-o, comma-separated, repeatable):
  ro, rw                 read-only / read-write (default rw)
  allow_other, allow_root  let other users (or root) access the mount
  default_permissions    accepted; permissions are always checked by the kernel
  fsname=NAME, subtype=T what mount(8) and df show (default: the store path, fuse.dedupfs)
  dev, nodev, suid, nosuid, exec, noexec, sync, dirsync, auto_unmount
  relatime, strictatime, noatime  when reads move atime (default relatime)
  source=STORE           the store (for mount -t fuse.dedupfs and fstab)
  threads=N              FUSE worker threads
  chunk_cache=SIZE       in-memory cache of decompressed chunks (default 32M)
  cache_size=SIZE        packs in object storage: local disk cache of pack bytes
                         (default 1G); on a local store, the same as chunk_cache=
  upload_backlog=SIZE    packs in object storage: writers wait while more sealed pack
                         bytes than this await upload (default 4G) ...
  upload_wait=S          ... and fail with EIO after S seconds (default 600)
  remote_timeout=S       one request to the bucket, retries included (default 60)
  checkpoint_interval=S  upload a metadata checkpoint every S seconds and at unmount
                         (default 3600; 0: only at unmount)
  dirty_limit=SIZE       buffered writes before writers wait (default 48M)
  no_writeback_cache     disable the kernel writeback cache
  no_readdirplus         list directories without attributes (a LOOKUP per entry)
  attr_timeout=S, entry_timeout=S  kernel attribute/entry cache lifetimes in live
                         container trees (default 3600; snapshots, .at and the
                         virtual directories: at most 1)
  lock_wait=S            wait up to S seconds for another process to release the store
  prune_interval=S       prune history outside retention policies every S seconds
                         (default 3600; 0 never; also at mount)
  gc_idle=S              collect garbage once the store has been idle for S seconds
                         (default 900; 0 never); shown in `dedupfs stats`
  gc_grace=S             how long background GC keeps condemned packs (default 10)
  log=PATH               daemon log (default STORE/dedupfs.log)
  container=NAME         mount one container (created if missing) as the mount's root,
                         e.g. to export it alone; .at and .snapshots are then not shown
  metrics=IP:PORT        serve Prometheus metrics at http://IP:PORT/metrics (off by
                         default; no authentication: bind to 127.0.0.1 or a private
                         network)
fstab options like defaults, noauto, nofail, _netdev and x-* are accepted and ignored.

Data acknowledged by fsync survives a crash of the daemon or the machine; other writes
become durable within about 10 seconds of reaching the daemon.";

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory for the new store (created if missing; must be empty)
    pub store: PathBuf,
    /// Smallest chunk
    #[arg(long, default_value = "8K", value_name = "SIZE")]
    pub chunk_min: String,
    /// Average chunk (content-defined boundaries aim at this size)
    #[arg(long, default_value = "32K", value_name = "SIZE")]
    pub chunk_avg: String,
    /// Largest chunk
    #[arg(long, default_value = "128K", value_name = "SIZE")]
    pub chunk_max: String,
    /// Size at which pack files roll over
    #[arg(long, default_value = "64M", value_name = "SIZE")]
    pub pack_size: String,
    /// Compare bytes whenever a chunk matches one already stored
    #[arg(long)]
    pub verify_dedup: bool,
    /// Cut chunks like the store SOURCE (its sizes and boundary seed, not its secret):
    /// for a replication target, so data it stores itself dedupes with what it receives
    #[arg(long, value_name = "SOURCE", conflicts_with_all = ["chunk_min", "chunk_avg", "chunk_max"])]
    pub like: Option<PathBuf>,
    /// Keep packs in S3-compatible object storage at s3://BUCKET/PREFIX (sealed packs are
    /// uploaded; metadata stays local, checkpointed to the bucket). Credentials come from
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials (AWS_PROFILE)
    #[arg(long, value_name = "URL")]
    pub packs: Option<String>,
    /// S3 endpoint for --packs/--recover-from, e.g. http://127.0.0.1:8333 (default:
    /// AWS_ENDPOINT_URL, else AWS). Requests are path-style
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, the profile's, else us-east-1)
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Rebuild a store from its bucket alone (disaster recovery), up to the newest
    /// metadata checkpoint there; prints that checkpoint's time
    #[arg(long, value_name = "URL", conflicts_with_all = ["packs", "like", "chunk_min", "chunk_avg", "chunk_max", "pack_size", "verify_dedup"])]
    pub recover_from: Option<String>,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The store to mount
    pub store: Option<PathBuf>,
    /// Where to mount it
    pub mountpoint: Option<PathBuf>,
    /// Stay in the foreground (logs to stderr; Ctrl-C unmounts)
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options, see below
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Make a replica an ordinary, writable container (failover)
    Promote { name: String },
    /// Create a container (also: mkdir at the mount root)
    Create {
        name: String,
        /// off, zstd:LEVEL (runs of chunks compressed together), or zstd-chunk:LEVEL (each
        /// chunk alone: faster random reads, e.g. for VM images); LEVEL 1..19
        #[arg(long, default_value = "zstd:3")]
        compression: String,
        /// Lock it from the start: governance or compliance, with --lock-for (see
        /// `dedupfs container set --help`)
        #[arg(long, value_name = "MODE", requires = "lock_for")]
        lock: Option<String>,
        /// How long the lock keeps every state: e.g. 30d, 12w, 7y
        #[arg(long, value_name = "DURATION", requires = "lock")]
        lock_for: Option<String>,
    },
    /// List containers with their usage
    List,
    /// Show a container's settings and usage
    Show { name: String },
    /// Change a container's settings
    Set {
        name: String,
        /// off, zstd:LEVEL or zstd-chunk:LEVEL with LEVEL 1..19 (applies to data written
        /// from now on)
        #[arg(long)]
        compression: Option<String>,
        /// History to keep: comma-separated all=DURATION, every=INTERVAL/HORIZON,
        /// bookmarks=KIND/HORIZON, max=SIZE; e.g. 'all=24h,every=4h/48h,bookmarks=app/4w'.
        /// 'forever' keeps everything (the default)
        #[arg(long, value_name = "POLICY")]
        retention: Option<String>,
        /// Retention lock: 'governance' or 'compliance' (with --lock-for): every state of
        /// the container younger than the duration stays readable and cannot be pruned,
        /// rolled away or deleted; files can still be changed and deleted through the
        /// mount. Measured by the store's compliance clock (see `dedupfs stats`).
        /// A compliance lock can only be lengthened; a governance lock can be shortened
        /// or removed ('none') by root with --bypass-governance. Refusals exit 7.
        #[arg(long, value_name = "MODE")]
        lock: Option<String>,
        /// How long the lock keeps every state: e.g. 30d, 12w, 7y
        #[arg(long, value_name = "DURATION")]
        lock_for: Option<String>,
        /// Root only, governance locks only: allow shortening or removing the lock, or a
        /// retention policy that keeps less
        #[arg(long)]
        bypass_governance: bool,
    },
    /// Delete a container with all its data and history
    ///
    /// Refused (exit 7) while the container has a retention lock.
    Delete {
        name: String,
        /// Delete even if it holds files
        #[arg(long)]
        force: bool,
        /// Root only, governance locks only: delete it although it is locked
        #[arg(long)]
        bypass_governance: bool,
    },
}
