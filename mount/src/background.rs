//! The daemon's own background work while a store is mounted: retention (at mount, then
//! every `prune_interval`) and the idle cleaner (garbage collection once no commit has
//! happened for `gc_idle`), neither on a read-only mount; and saving the compliance clock
//! every minute.
//!
//! Invariant: [`Background::stop`] wakes both at once, cancels a GC in progress and joins
//! the threads, so nothing of this module still holds the store when the daemon closes it.

use crate::options::MountOpts;
use dedupfs_core::store::Store;
use std::sync::Arc;

/// The daemon's own background work (retention, the idle cleaner), stopped and joined at
/// unmount so that nothing still holds the store when it is closed.
pub struct Background {
    /// Set to stop; the condvar wakes sleepers at once. Lock order: a leaf.
    stop: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn start(store: &Arc<Store>, opts: &MountOpts) -> Background {
        let stop = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        // Retention runs on its own: at mount, then every prune_interval.
        if !opts.prune_interval.is_zero() && !opts.read_only {
            let (st, every, stop) = (store.clone(), opts.prune_interval, stop.clone());
            match std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || loop {
                    for (name, r) in dedupfs_snapshot::retention::prune_all(&st) {
                        match r {
                            Ok(rep) if rep.pruned_versions > 0 => log::info!(
                                "retention of '{name}': pruned {} versions; {} bytes reclaimable in the store",
                                rep.pruned_versions,
                                rep.store_reclaimable_bytes
                            ),
                            Ok(_) => {}
                            Err(e) => log::warn!("retention of '{name}': {e}"),
                        }
                    }
                    if Self::wait(&stop, every) {
                        return;
                    }
                }) {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("retention thread not started: {e}"),
            }
        }
        // The compliance clock goes to disk every minute (a crash loses at most that much
        // of it: locks then last a minute longer), read-only mounts included: the store is
        // open and its clock runs.
        {
            let (st, stop) = (store.clone(), stop.clone());
            match std::thread::Builder::new()
                .name("clock".into())
                .spawn(move || loop {
                    if Self::wait(&stop, dedupfs_core::clock::PERSIST_EVERY) {
                        return;
                    }
                    if let Err(e) = st.persist_clock() {
                        log::warn!("the compliance clock could not be saved: {e}");
                    }
                }) {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("clock thread not started: {e}"),
            }
        }
        // Packs in a bucket: seal a pack left idle (so it is uploaded) and upload metadata
        // checkpoints on schedule.
        if store.tier().is_some() && !opts.read_only {
            let (st, stop, cancel) = (store.clone(), stop.clone(), cancel.clone());
            let (every, wait) = (opts.checkpoint_interval, opts.upload_wait);
            match std::thread::Builder::new()
                .name("remote".into())
                .spawn(move || remote_upkeep(&st, every, wait, &stop, &cancel))
            {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("remote upkeep thread not started: {e}"),
            }
        }
        // The cleaner: garbage collection once the store has been idle for gc_idle.
        if !opts.gc_idle.is_zero() && !opts.read_only {
            let (st, idle, grace) = (store.clone(), opts.gc_idle, opts.gc_grace);
            let (stop, cancel) = (stop.clone(), cancel.clone());
            match std::thread::Builder::new()
                .name("gc".into())
                .spawn(move || idle_gc(&st, idle, grace, &stop, cancel))
            {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("idle cleaner not started: {e}"),
            }
        }
        Background {
            stop,
            cancel,
            threads,
        }
    }

    /// Sleeps for `d`; true when asked to stop (at once, not after `d`).
    fn wait(
        stop: &(parking_lot::Mutex<bool>, parking_lot::Condvar),
        d: std::time::Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + d;
        let mut g = stop.0.lock();
        while !*g {
            if stop.1.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        *g
    }

    /// Wakes and cancels the work, then waits for its threads to end.
    pub fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        self.cancel
            .store(true, std::sync::atomic::Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A pack that saw no append for this long is sealed and uploaded.
const SEAL_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Seals idle packs (every few seconds) and uploads a checkpoint every `every` when the
/// store changed since the last one. Returns when asked to stop.
fn remote_upkeep(
    store: &Store,
    every: std::time::Duration,
    wait: std::time::Duration,
    stop: &(parking_lot::Mutex<bool>, parking_lot::Condvar),
    cancel: &std::sync::atomic::AtomicBool,
) {
    let mut last = std::time::Instant::now();
    loop {
        if Background::wait(stop, std::time::Duration::from_secs(5)) {
            return;
        }
        if let Err(e) = store.seal_idle_pack(SEAL_IDLE) {
            log::warn!("sealing the idle pack for upload: {e}");
        }
        if every.is_zero() || last.elapsed() < every {
            continue;
        }
        last = std::time::Instant::now();
        let changed = match dedupfs_core::store::checkpoint::last(store) {
            Ok(Some(c)) => c.version != store.committer.head().0,
            Ok(None) => true,
            Err(e) => {
                log::warn!("checkpoint: {e}");
                true
            }
        };
        if changed {
            // Given up at once when the daemon stops (the unmount takes its own).
            if let Err(e) = dedupfs_core::store::checkpoint::take_until(store, wait, Some(cancel)) {
                log::error!("scheduled checkpoint failed (retried next interval): {e}");
            }
        }
    }
}

/// Runs GC whenever no commit has happened for `idle` and there is space to reclaim; at most
/// once per idle period. Returns when asked to stop.
fn idle_gc(
    store: &Store,
    idle: std::time::Duration,
    grace: std::time::Duration,
    stop: &(parking_lot::Mutex<bool>, parking_lot::Condvar),
    cancel: Arc<std::sync::atomic::AtomicBool>,
) {
    let tick = (idle / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(60),
    );
    let mut head = store.committer.head();
    let mut quiet_since = std::time::Instant::now();
    loop {
        if Background::wait(stop, tick) {
            return;
        }
        let now = store.committer.head();
        if now != head {
            head = now;
            quiet_since = std::time::Instant::now();
            continue;
        }
        if quiet_since.elapsed() < idle {
            continue;
        }
        quiet_since = std::time::Instant::now();
        let (reclaimable, pack_bytes) = match dedupfs_core::stats::store_stats(store) {
            Ok(s) => (s.reclaimable_bytes, s.pack_bytes),
            Err(e) => {
                log::warn!("background gc: cannot read the store's figures: {e}");
                continue;
            }
        };
        let condemned = match dedupfs_gc::state::condemned(store) {
            Ok(c) => !c.is_empty(),
            Err(e) => {
                log::warn!("background gc: {e}");
                continue;
            }
        };
        if !condemned && reclaimable < (1u64 << 20).max(pack_bytes / 100) {
            continue;
        }
        log::info!(
            "store idle for {} s with {reclaimable} bytes reclaimable: collecting garbage",
            idle.as_secs()
        );
        let opts = dedupfs_gc::plan::Options {
            grace,
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let r = dedupfs_gc::sweep::run(store, &opts, &mut |_, _, _| {});
        match &r {
            Ok(_) => {}
            Err(dedupfs_gc::GcError::Busy) => continue,
            Err(dedupfs_gc::GcError::Cancelled) => return,
            Err(e) => log::warn!("background gc: {e}"),
        }
        if let Err(e) =
            dedupfs_gc::state::record_run(store, dedupfs_gc::sweep::run_record(&r, t0, true))
        {
            log::warn!("background gc: cannot record the run: {e}");
        }
        head = store.committer.head();
    }
}
