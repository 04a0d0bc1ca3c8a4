//! The lock types that the core's concurrency-critical protocols are written against:
//! parking_lot's normally; shuttle's with `--features shuttle`, so that a randomized
//! scheduler can explore those protocols' interleavings (`src/shuttle_locks.rs`, a test target of its own), in the
//! manner of mountpoint-s3's `sync` module.

#[cfg(not(feature = "shuttle"))]
pub use parking_lot::{Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
mod shuttled {
    /// shuttle's mutex with parking_lot's interface (no poisoning in the product).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(shuttle::sync::Mutex<T>);

    pub type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(v))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}

#[cfg(feature = "shuttle")]
pub use shuttled::{Mutex, MutexGuard};

/// A condition variable paired with [`Mutex`]: parking_lot's normally, shuttle's under the
/// `shuttle` feature, behind one interface (`wait` takes and returns the guard).
#[cfg(not(feature = "shuttle"))]
#[derive(Debug, Default)]
pub struct Condvar(parking_lot::Condvar);

#[cfg(not(feature = "shuttle"))]
impl Condvar {
    pub fn new() -> Self {
        Condvar(parking_lot::Condvar::new())
    }
    pub fn wait<'a, T>(&self, mut g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(&mut g);
        g
    }
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}

#[cfg(feature = "shuttle")]
#[derive(Debug, Default)]
pub struct Condvar(shuttle::sync::Condvar);

#[cfg(feature = "shuttle")]
impl Condvar {
    pub fn new() -> Self {
        Condvar(shuttle::sync::Condvar::new())
    }
    pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(g).unwrap_or_else(|p| p.into_inner())
    }
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}
