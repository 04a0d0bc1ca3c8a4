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
