//! Process-wide instrumentation: counters and latency histograms for the filesystem and
//! the commit path, kept in statics that the hot path updates and the Prometheus text
//! exposition (`exposition`, re-exported here) renders.
//!
//! Owns the process-wide statics below: per-op FUSE statistics ([`FUSE`], updated by
//! [`record`]), the byte, commit and sync counters and histograms, and the error counters
//! ([`count_error`]). Nothing here does I/O.
//!
//! Invariants:
//! - The hot path (every FUSE request, every commit) only touches atomics: no lock, no
//!   allocation, no syscall. A lock here would serialise every FUSE worker thread on a
//!   cache line for the sake of monitoring.
//! - All atomics use `Ordering::Relaxed`. Each value is monotonic on its own and nothing
//!   is ever synchronised through it; a scrape may see one counter a few increments ahead
//!   of another (e.g. a request counted whose latency is not yet observed). Prometheus
//!   samples are point-in-time estimates anyway, and the next scrape catches up.
//! - Histograms store non-cumulative per-bucket counts (one `fetch_add` per observation)
//!   and cumulate at render time. `_count` is the sum of the buckets rather than a
//!   separate atomic, so `le="+Inf"` equals `_count` in every scrape, even one racing an
//!   observation; `_sum` may lag or lead by the observations in flight.
//! - Everything is `const`-constructible so the statics need no lazy initialisation.

mod exposition;

pub use exposition::{escape, fmt_f64, render_process_metrics, Exposition, CONTENT_TYPE};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Wraps at 2^64, which no byte count of this process reaches.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Most bucket upper bounds a [`Histogram`] takes: the bucket array is fixed-size so the
/// histogram can be built in a `static`.
pub const MAX_BOUNDS: usize = 16;

/// Latency buckets for FUSE requests and commits, in seconds: 10 µs (a cached getattr) to
/// 10 s (a commit stuck behind a slow disk).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0, 2.5, 10.0,
];

/// A latency histogram with fixed bucket upper bounds (inclusive, as Prometheus' `le`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`; the slot after the
    /// last bound counts those above it (the `+Inf`-only bucket).
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Panics (a compile error when used in a `static`) unless `bounds` has at most
    /// [`MAX_BOUNDS`] finite, strictly increasing values; `+Inf` is implicit.
    pub const fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() <= MAX_BOUNDS, "too many histogram bounds");
        let mut i = 0;
        while i < bounds.len() {
            assert!(bounds[i].is_finite(), "histogram bounds must be finite");
            assert!(
                i == 0 || bounds[i - 1] < bounds[i],
                "histogram bounds must increase"
            );
            i += 1;
        }
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn observe(&self, d: Duration) {
        // Saturate rather than truncate: a u128 of nanoseconds past u64 is 584 years.
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.record(d.as_secs_f64(), nanos);
    }

    /// Negative and NaN inputs count as zero: a clock step must not poison the sum.
    #[inline]
    pub fn observe_secs(&self, secs: f64) {
        let secs = if secs >= 0.0 { secs } else { 0.0 };
        // `as` saturates (and +Inf becomes u64::MAX), which is the clamp wanted here.
        self.record(secs, (secs * 1e9) as u64);
    }

    #[inline]
    fn record(&self, secs: f64, nanos: u64) {
        // A linear scan over at most 16 bounds beats a binary search at this size.
        let mut slot = self.bounds.len();
        for (i, &le) in self.bounds.iter().enumerate() {
            if secs <= le {
                slot = i;
                break;
            }
        }
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Cumulative counts, one per bound, then the `+Inf` count (== [`Histogram::count`]).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0u64;
        self.buckets[..=self.bounds.len()]
            .iter()
            .map(|b| {
                acc = acc.wrapping_add(b.load(Ordering::Relaxed));
                acc
            })
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.buckets[..=self.bounds.len()]
            .iter()
            .fold(0u64, |acc, b| acc.wrapping_add(b.load(Ordering::Relaxed)))
    }

    pub fn sum_secs(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// FUSE operations, in the order of [`FUSE`]. `other` catches anything unlisted.
#[rustfmt::skip]
pub const FUSE_OPS: &[&str] = &[
    "lookup", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir",
    "symlink", "rename", "link", "open", "read", "write", "flush", "release", "fsync",
    "opendir", "readdir", "readdirplus", "releasedir", "fsyncdir", "statfs", "setxattr",
    "getxattr", "listxattr", "removexattr", "access", "create", "fallocate", "lseek",
    "copy_file_range", "forget", "other",
];
pub const FUSE_OP_COUNT: usize = FUSE_OPS.len();
/// Index of `other` in [`FUSE_OPS`].
pub const OP_OTHER: usize = FUSE_OP_COUNT - 1;

/// Index of `name` in [`FUSE_OPS`]; `const` so call sites can resolve it at compile time.
pub const fn op_index(name: &str) -> Option<usize> {
    let mut i = 0;
    while i < FUSE_OPS.len() {
        if bytes_eq(FUSE_OPS[i].as_bytes(), name.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// For `const` items only: `const READ: usize = metrics::op("read");` makes a misspelt
/// name a compile error instead of a silently empty series.
pub const fn op(name: &str) -> usize {
    match op_index(name) {
        Some(i) => i,
        None => panic!("unknown FUSE op name"),
    }
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The errnos counted separately (Linux numbers; dedupfs mounts on Linux only), by
/// label. Anything else lands in the last slot, `other`.
#[rustfmt::skip]
pub const ERRNOS: &[(i32, &str)] = &[
    (2, "ENOENT"), (17, "EEXIST"), (39, "ENOTEMPTY"), (13, "EACCES"), (1, "EPERM"),
    (28, "ENOSPC"), (5, "EIO"), (116, "ESTALE"), (30, "EROFS"), (22, "EINVAL"),
    (61, "ENODATA"), (0, "other"),
];
const ERRNO_SLOTS: usize = ERRNOS.len();

/// Slot of `errno` in [`ERRNOS`]; unlisted values (and 0) go to `other`.
pub fn errno_slot(errno: i32) -> usize {
    ERRNOS[..ERRNO_SLOTS - 1]
        .iter()
        .position(|&(n, _)| n == errno)
        .unwrap_or(ERRNO_SLOTS - 1)
}

/// Everything counted for one FUSE operation. Cache-line aligned so two worker threads
/// busy with different ops do not bounce one line between them.
#[derive(Debug)]
#[repr(align(64))]
pub struct OpStats {
    pub requests: Counter,
    pub duration: Histogram,
    pub errors: [Counter; ERRNO_SLOTS],
}

impl OpStats {
    // Private: the only instances are the ones in [`FUSE`].
    const fn new() -> Self {
        OpStats {
            requests: Counter::new(),
            duration: Histogram::new(LATENCY_BUCKETS),
            errors: [const { Counter::new() }; ERRNO_SLOTS],
        }
    }

    #[inline]
    pub fn record(&self, elapsed: Duration, result: Result<(), i32>) {
        self.requests.inc();
        self.duration.observe(elapsed);
        if let Err(errno) = result {
            self.errors[errno_slot(errno)].inc();
        }
    }
}

/// Per-op FUSE statistics, indexed like [`FUSE_OPS`].
pub static FUSE: [OpStats; FUSE_OP_COUNT] = [const { OpStats::new() }; FUSE_OP_COUNT];

/// The stats of op `index`; an out-of-range index counts as `other` rather than panic.
#[inline]
pub fn fuse_op(index: usize) -> &'static OpStats {
    FUSE.get(index).unwrap_or(&FUSE[OP_OTHER])
}

/// Records one FUSE request: `result` is `Err(errno)` when the reply was an error.
#[inline]
pub fn record(op: usize, elapsed: Duration, result: Result<(), i32>) {
    fuse_op(op).record(elapsed, result);
}

/// Bytes written to / read from files through the mount (FUSE WRITE and READ replies;
/// what `snapshot apply` copies inside the daemon is not counted).
pub static WRITE_BYTES: Counter = Counter::new();
pub static READ_BYTES: Counter = Counter::new();
/// Raw (uncompressed) bytes of chunks that were new to the store / matched a stored one.
pub static INGEST_NEW_CHUNK_BYTES: Counter = Counter::new();
pub static INGEST_DEDUP_BYTES: Counter = Counter::new();
pub static COMMITS: Counter = Counter::new();
pub static COMMIT_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);
pub static SYNCS: Counter = Counter::new();
pub static SYNC_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);

/// The error kinds of `dedupfs_errors_total{kind}`: the failures an admin alerts on (a
/// halted store is the `dedupfs_halted` gauge; its refusals count as `io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Corrupt = 0,
    Io,
    NoSpace,
    Stale,
}

/// Labels of [`ErrorKind`], in discriminant order.
pub const ERROR_KINDS: &[&str] = &["corrupt", "io", "no_space", "stale"];

impl ErrorKind {
    pub fn label(self) -> &'static str {
        ERROR_KINDS[self as usize]
    }
}

/// Indexed by `ErrorKind as usize`.
pub static ERRORS_BY_KIND: [Counter; ERROR_KINDS.len()] =
    [const { Counter::new() }; ERROR_KINDS.len()];

#[inline]
pub fn count_error(kind: ErrorKind) {
    ERRORS_BY_KIND[kind as usize].inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static H: Histogram = Histogram::new(&[0.001, 0.01, 1.0]);
        for ms in [0, 1, 5, 10, 500, 1000, 3000] {
            H.observe(Duration::from_millis(ms));
        }
        H.observe_secs(-1.0); // clamped to 0
        assert_eq!(H.cumulative(), vec![3, 5, 7, 8]);
        assert_eq!(H.count(), 8);
        assert!((H.sum_secs() - 4.516).abs() < 1e-9);
    }

    #[test]
    fn op_and_errno_lookup() {
        const READ: usize = op("read");
        assert_eq!(FUSE_OPS[READ], "read");
        for (i, name) in FUSE_OPS.iter().enumerate() {
            assert_eq!(op_index(name), Some(i));
        }
        assert_eq!(op_index("nope"), None);
        let label = |errno| ERRNOS[errno_slot(errno)].1;
        assert_eq!(
            [label(2), label(61), label(1)],
            ["ENOENT", "ENODATA", "EPERM"]
        );
        assert_eq!([label(0), label(9999), label(-1)], ["other"; 3]);
        assert!(std::ptr::eq(fuse_op(10_000), &FUSE[OP_OTHER]));
        assert_eq!(ErrorKind::NoSpace.label(), "no_space");
        assert_eq!(ErrorKind::Stale.label(), "stale");
    }

    #[test]
    fn concurrent_observations_all_land() {
        static H: Histogram = Histogram::new(LATENCY_BUCKETS);
        let observe =
            |t: u64| move || (0..1000).for_each(|i| H.observe_secs(1e-6 * (i * t) as f64));
        let threads: Vec<_> = (0..4).map(|t| std::thread::spawn(observe(t))).collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(H.count(), 4000);
        assert_eq!(H.cumulative().last().copied(), Some(4000));
    }
}
