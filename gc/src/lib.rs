//! dedupfs garbage collection, fsck and scrub (issue 4).
//!
//! Will own: the reclamation plan (per pack: keep, rewrite, delete) and its crash-safe
//! execution, and the consistency checks of references, reference counts and chunk
//! contents. Empty until that issue lands.
