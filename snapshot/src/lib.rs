//! dedupfs snapshots, bookmarks, time travel, rollback and retention (issue 3).
//!
//! Will own: snapshot and bookmark records, read points "as of" a time or bookmark (the
//! core already versions every record and keeps the timeline, see ARCHITECTURE.md),
//! rollback as a new branch of the container head, and retention pruning. Empty until
//! that issue lands.
