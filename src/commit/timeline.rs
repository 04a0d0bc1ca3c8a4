//! Reads of the timeline (millisecond → newest version committed in it): which version a
//! moment reads as, and when the next commit after a moment happened.

use super::{timeline_key, Committer};
use crate::ids::Version;
use crate::keys;
use crate::kv::{Cf, KvError};
use crate::records::Timestamp;

impl Committer {
    /// The time of the first commit after `t` (millisecond resolution), if any.
    pub fn first_commit_after(&self, t: Timestamp) -> Result<Option<Timestamp>, KvError> {
        let ms = t.sec.saturating_mul(1000) + (t.nsec / 1_000_000) as i64 + 1;
        let from = Timestamp {
            sec: ms.div_euclid(1000),
            nsec: (ms.rem_euclid(1000) * 1_000_000) as u32,
        };
        let mut it = self.kv.iter(Cf::Timeline, None, None);
        it.seek(&timeline_key(from));
        let r = if it.valid() {
            Some(keys::timeline_from(it.key()).map_err(|e| KvError::Corrupt(e.to_string()))?)
        } else {
            None
        };
        it.status()?;
        Ok(r)
    }

    /// The newest version committed at or before `t`, if any.
    pub fn version_at(&self, t: Timestamp) -> Result<Option<Version>, KvError> {
        let mut it = self.kv.iter(Cf::Timeline, None, None);
        it.seek_for_prev(&timeline_key(t));
        let r = if it.valid() {
            Some(Version(
                keys::decode_u64(it.value(), "timeline entry")
                    .map_err(|e| KvError::Corrupt(e.to_string()))?,
            ))
        } else {
            None
        };
        it.status()?;
        Ok(r)
    }
}
