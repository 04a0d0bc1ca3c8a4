//! The store's compliance clock: the time retention locks are measured by, which setting
//! the system clock cannot move forward.
//!
//! The clock is kept in the store (one record in the `default` family) and advances only
//! by *elapsed time while the store is open*, read from `CLOCK_BOOTTIME` (monotonic:
//! `settimeofday`, `date -s` and NTP steps do not move it; unlike `CLOCK_MONOTONIC` it
//! counts suspend, which is real elapsed time). When the system clock is ahead
//! of it — after downtime, or after someone set the system clock forward — it drifts
//! towards the system clock at most [`CATCH_UP_PER_YEAR`] per year of running time
//! (NetApp's ComplianceClock rule: one week per year), never past it. It never goes
//! backwards. So a 1-day lock cannot be shortened by more than about 28 minutes per day of
//! running, whatever the system clock says; a store that was down for a week holds its
//! locks a week longer (QoreStor's compliance clock does not count downtime at all;
//! NetApp's catches up slowly — we do the latter).
//!
//! Persistence: the clock is written at open, by [`ComplianceClock::persist`] (the
//! daemon's clock thread, every [`PERSIST_EVERY`]) and when the committer is dropped. It is not synced on its own: after a crash it restarts
//! from an older value, which only makes locks last longer (the safe direction).
//!
//! Invariants: [`ComplianceClock::now`] never decreases within a process nor across
//! reopens (the persisted value is at most what `now` returned); a wall-clock jump of more
//! than [`JUMP_LOG`] between two readings is logged once, with both clocks.

use crate::keys::MetaKey;
use crate::kv::{Batch, Cf, Kv, KvError};
use crate::records::Timestamp;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How far the compliance clock may catch up with a system clock ahead of it, per year of
/// running time.
pub const CATCH_UP_PER_YEAR: Duration = Duration::from_secs(7 * 86_400);
/// How often the daemon writes the clock.
pub const PERSIST_EVERY: Duration = Duration::from_secs(60);
/// A change of the system clock's offset from monotonic time larger than this is logged.
pub const JUMP_LOG: Duration = Duration::from_secs(60);

const YEAR_NS: i128 = 365 * 86_400 * 1_000_000_000;

/// Where the store's wall and monotonic times come from. The product uses [`SystemTime`];
/// tests move a fake one to see what a jump of the system clock does.
pub trait TimeSource: Send + Sync {
    /// The system (wall) clock.
    fn wall(&self) -> Timestamp;
    /// Monotonic nanoseconds from an arbitrary origin; never decreases.
    fn monotonic_ns(&self) -> u64;
}

/// The real clocks: `CLOCK_REALTIME`, and `CLOCK_BOOTTIME` for elapsed time — monotonic
/// like `CLOCK_MONOTONIC` (no `settimeofday` or NTP step moves it) but counting time the
/// machine spent suspended, which did pass.
pub struct SystemTime {
    origin: u64,
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        // Every Linux since 2.6.39 has it; without it, time simply does not advance here
        // (locks last longer, never shorter).
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Default for SystemTime {
    fn default() -> Self {
        SystemTime {
            origin: boottime_ns(),
        }
    }
}

impl TimeSource for SystemTime {
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }
    fn monotonic_ns(&self) -> u64 {
        boottime_ns().saturating_sub(self.origin)
    }
}

/// A clock for tests: both readings set by hand.
#[derive(Default)]
pub struct FakeTime {
    /// (wall nanoseconds since the epoch, monotonic nanoseconds). Lock order: a leaf.
    st: Mutex<(i128, u64)>,
}

impl FakeTime {
    pub fn new(wall: Timestamp) -> Arc<FakeTime> {
        Arc::new(FakeTime {
            st: Mutex::new((wall.as_nanos(), 0)),
        })
    }
    /// Time passes: both clocks move by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.st.lock();
        s.0 += d.as_nanos() as i128;
        s.1 += d.as_nanos() as u64;
    }
    /// Someone sets the system clock: only the wall clock moves (by `d_secs`, either way).
    pub fn set_wall_by(&self, d_secs: i64) {
        self.st.lock().0 += d_secs as i128 * 1_000_000_000;
    }
}

impl TimeSource for FakeTime {
    fn wall(&self) -> Timestamp {
        from_ns(self.st.lock().0)
    }
    fn monotonic_ns(&self) -> u64 {
        self.st.lock().1
    }
}

fn from_ns(ns: i128) -> Timestamp {
    Timestamp {
        sec: ns.div_euclid(1_000_000_000) as i64,
        nsec: ns.rem_euclid(1_000_000_000) as u32,
    }
}

/// The persisted record.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockRecord {
    /// The compliance clock, nanoseconds since the epoch.
    pub clock_ns: i128,
    /// The system clock when it was written (to report the skew at the next open).
    pub wall_ns: i128,
}

#[derive(Debug)]
struct State {
    clock_ns: i128,
    /// The monotonic reading `clock_ns` belongs to.
    mono: u64,
    /// `wall - monotonic` at the last reading, to notice jumps of the system clock.
    offset_ns: i128,
}

/// The compliance clock of one open store.
pub struct ComplianceClock {
    src: Arc<dyn TimeSource>,
    /// The clock's last reading. Lock order: a leaf (taken under the commit lock, never
    /// across I/O: [`ComplianceClock::persist`] copies the value out first).
    st: Mutex<State>,
    /// Held while the clock is written (off the hot path: the daemon's clock thread, open
    /// and close), so writes land in reading order. Lock order: before `st`.
    persisting: Mutex<()>,
}

impl std::fmt::Debug for ComplianceClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComplianceClock({:?})", self.st.lock())
    }
}

/// What `stats`, `container show` and the metrics say of the clock.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ClockReading {
    /// The compliance clock, seconds since the epoch.
    pub compliance: i64,
    /// The system clock, seconds since the epoch.
    pub system: i64,
}

impl ClockReading {
    /// How far the system clock is ahead of the compliance clock (negative: behind).
    pub fn skew(&self) -> i64 {
        self.system - self.compliance
    }
}

impl ComplianceClock {
    /// Loads the clock from `kv`, or starts it from the system clock (never before
    /// `not_before`, the newest commit time) if the store has none yet, and writes it.
    pub fn open(
        kv: &dyn Kv,
        src: Arc<dyn TimeSource>,
        not_before: Timestamp,
    ) -> Result<ComplianceClock, KvError> {
        let wall = src.wall().as_nanos();
        let mono = src.monotonic_ns();
        let clock_ns = match kv.get(Cf::Meta, &MetaKey::ComplianceClock.encode())? {
            Some(raw) => {
                let r: ClockRecord = serde_json::from_slice(&raw)
                    .map_err(|e| KvError::Corrupt(format!("compliance clock record: {e}")))?;
                let behind = wall - r.clock_ns;
                if behind > JUMP_LOG.as_nanos() as i128 {
                    log::warn!(
                        "the compliance clock ({}) is {} behind the system clock ({}): the \
                         store was closed meanwhile or the system clock was set forward; \
                         retention locks are measured by the compliance clock, which catches \
                         up at most 7 days per year of running",
                        fmt_ns(r.clock_ns),
                        human_ns(behind),
                        fmt_ns(wall)
                    );
                } else if -behind > JUMP_LOG.as_nanos() as i128 {
                    log::warn!(
                        "the system clock ({}) is {} behind the compliance clock ({}); the \
                         compliance clock goes on from where it was",
                        fmt_ns(wall),
                        human_ns(-behind),
                        fmt_ns(r.clock_ns)
                    );
                }
                r.clock_ns
            }
            None => {
                let start = wall.max(not_before.as_nanos());
                log::info!("compliance clock started at {}", fmt_ns(start));
                start
            }
        };
        let c = ComplianceClock {
            src,
            st: Mutex::new(State {
                clock_ns,
                mono,
                offset_ns: wall - mono as i128,
            }),
            persisting: Mutex::new(()),
        };
        c.persist(kv)?;
        Ok(c)
    }

    /// The compliance clock now (see the module doc for how it moves).
    pub fn now(&self) -> Timestamp {
        from_ns(self.tick().0)
    }

    /// The system clock of this store's time source.
    pub fn wall(&self) -> Timestamp {
        self.src.wall()
    }

    /// Both clocks, read together.
    pub fn reading(&self) -> ClockReading {
        let (c, w) = self.tick();
        ClockReading {
            compliance: from_ns(c).sec,
            system: from_ns(w).sec,
        }
    }

    /// Advances the clock to now; returns (compliance, wall) nanoseconds.
    fn tick(&self) -> (i128, i128) {
        let mut s = self.st.lock();
        let wall = self.src.wall().as_nanos();
        let mono = self.src.monotonic_ns().max(s.mono);
        let dt = (mono - s.mono) as i128;
        let mut c = s.clock_ns + dt;
        if wall > c {
            let catch_up = dt * CATCH_UP_PER_YEAR.as_nanos() as i128 / YEAR_NS;
            c = (c + catch_up).min(wall);
        }
        let offset = wall - mono as i128;
        let jump = offset - s.offset_ns;
        if jump.abs() > JUMP_LOG.as_nanos() as i128 {
            log::warn!(
                "the system clock jumped {} by {} (now {}); the compliance clock ({}) did not \
                 follow: retention locks keep their time",
                if jump > 0 { "forward" } else { "back" },
                human_ns(jump.abs()),
                fmt_ns(wall),
                fmt_ns(c)
            );
        }
        s.offset_ns = offset;
        s.clock_ns = c.max(s.clock_ns);
        s.mono = mono;
        (s.clock_ns, wall)
    }

    /// Writes the clock now (not synced: see the module doc). Writers are serialised, so
    /// a later reading is never overwritten by an earlier one.
    pub fn persist(&self, kv: &dyn Kv) -> Result<(), KvError> {
        let _one = self.persisting.lock();
        let (c, w) = self.tick();
        let (k, v) = record(c, w);
        let mut b = Batch::default();
        b.put(Cf::Meta, k, v);
        kv.write(b, false)
    }
}

fn record(clock_ns: i128, wall_ns: i128) -> (Vec<u8>, Vec<u8>) {
    let r = ClockRecord { clock_ns, wall_ns };
    (
        MetaKey::ComplianceClock.encode(),
        // A plain struct of integers: serialising it cannot fail.
        serde_json::to_vec(&r).unwrap_or_default(),
    )
}

fn fmt_ns(ns: i128) -> String {
    crate::points::format_time(from_ns(ns).sec)
}

fn human_ns(ns: i128) -> String {
    human((ns / 1_000_000_000) as i64)
}

/// A duration of `s` seconds in the largest unit that fits, one decimal (log lines, the
/// skew between the clocks).
pub fn human(s: i64) -> String {
    match s {
        s if s >= 86_400 => format!("{:.1} days", s as f64 / 86_400.0),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s if s >= 60 => format!("{:.1} minutes", s as f64 / 60.0),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    const DAY: u64 = 86_400;

    fn t0() -> Timestamp {
        Timestamp {
            sec: 1_800_000_000,
            nsec: 0,
        }
    }

    #[test]
    fn a_forward_jump_of_the_system_clock_is_not_followed() {
        let kv = MemKv::new();
        let fake = FakeTime::new(t0());
        let c = ComplianceClock::open(&kv, fake.clone(), Timestamp::default()).unwrap();
        assert_eq!(c.now(), t0());
        fake.advance(Duration::from_secs(3600));
        assert_eq!(c.now().sec, t0().sec + 3600, "runs with monotonic time");
        fake.set_wall_by(365 * DAY as i64);
        assert_eq!(c.now().sec, t0().sec + 3600, "a year's jump moves nothing");
        // A day of running catches up at most 7 days per year of it (~27.6 minutes).
        fake.advance(Duration::from_secs(DAY));
        let gained = c.now().sec - (t0().sec + 3600 + DAY as i64);
        assert!((1600..=1660).contains(&gained), "gained {gained} s");
        assert_eq!(c.reading().skew(), 365 * DAY as i64 - gained);
    }

    #[test]
    fn catch_up_stops_at_the_system_clock_and_the_clock_never_goes_back() {
        let kv = MemKv::new();
        let fake = FakeTime::new(t0());
        let c = ComplianceClock::open(&kv, fake.clone(), Timestamp::default()).unwrap();
        fake.set_wall_by(60);
        fake.advance(Duration::from_secs(365 * DAY));
        assert_eq!(c.now(), fake.wall(), "caught up, not past");
        let before = c.now();
        fake.set_wall_by(-(30 * DAY as i64));
        assert_eq!(
            c.now(),
            before,
            "the system clock going back does not move it back"
        );
        fake.advance(Duration::from_secs(10));
        assert_eq!(c.now().sec, before.sec + 10);
    }

    #[test]
    fn downtime_does_not_count_and_reopen_goes_on_from_the_persisted_value() {
        let kv = MemKv::new();
        let fake = FakeTime::new(t0());
        {
            let c = ComplianceClock::open(&kv, fake.clone(), Timestamp::default()).unwrap();
            fake.advance(Duration::from_secs(100));
            c.persist(&kv).unwrap();
        }
        // Closed for a week: only the wall clock moves (a new boot's monotonic origin).
        fake.set_wall_by(7 * DAY as i64);
        let c = ComplianceClock::open(&kv, fake.clone(), Timestamp::default()).unwrap();
        assert_eq!(c.now().sec, t0().sec + 100);
        // Never starts before the newest commit when there is no record yet.
        let kv2 = MemKv::new();
        let later = Timestamp {
            sec: t0().sec + 10 * DAY as i64,
            nsec: 0,
        };
        let c2 = ComplianceClock::open(&kv2, fake.clone(), later).unwrap();
        assert_eq!(c2.now(), later);
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_restart() {
        let kv = MemKv::new();
        let mut b = Batch::default();
        b.put(Cf::Meta, MetaKey::ComplianceClock.encode(), b"{no".to_vec());
        kv.write(b, false).unwrap();
        let e = ComplianceClock::open(&kv, FakeTime::new(t0()), Timestamp::default()).unwrap_err();
        assert!(e.to_string().contains("compliance clock"), "{e}");
    }
}
