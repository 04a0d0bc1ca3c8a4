//! POSIX access control lists, as the Linux kernel hands them to a FUSE filesystem that
//! asked for `FUSE_POSIX_ACL`.
//!
//! The kernel checks permissions against the ACLs itself (it reads them through
//! `getxattr`), validates what `setfacl` sends, and stops applying the umask at creation
//! (`FUSE_DONT_MASK`). What is left to the filesystem, and lives here:
//! - an access ACL and the mode's permission bits are one thing seen twice: setting the
//!   ACL sets the mode (owner, mask or group, other), `chmod` rewrites the ACL's entries,
//!   and an ACL with nothing beyond the three base entries is not stored at all;
//! - a new node in a directory with a default ACL inherits it (its access ACL is the
//!   default ACL narrowed by the requested mode; a new directory also gets the default
//!   ACL), and without one the creator's umask applies.
//!
//! Values use the kernel's xattr format: a little-endian u32 version (2), then entries of
//! (u16 tag, u16 perm, u32 id). Invariant: an [`Acl`] built by [`Acl::parse`] has exactly
//! one owner, group and other entry, and a mask whenever it has named entries.

use super::FsError;

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
#[cfg(test)]
const UNDEFINED_ID: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed, validated ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    pub fn parse(v: &[u8]) -> Result<Acl, FsError> {
        const BAD: FsError = FsError::Invalid("malformed POSIX ACL");
        if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
            return Err(BAD);
        }
        if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
            return Err(FsError::Invalid("unsupported POSIX ACL version"));
        }
        let entries: Vec<Entry> = v[4..]
            .chunks_exact(8)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        if entries
            .iter()
            .any(|e| !known.contains(&e.tag) || e.perm & !7 != 0)
            || count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (count(USER) + count(GROUP) > 0 && count(MASK) == 0)
        {
            return Err(BAD);
        }
        Ok(Acl { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 8 * self.entries.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn perm_of(&self, tag: u16) -> u16 {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| e.perm)
    }

    fn set_perm(&mut self, tag: u16, perm: u16) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == tag) {
            e.perm = perm & 7;
        }
    }

    fn has(&self, tag: u16) -> bool {
        self.entries.iter().any(|e| e.tag == tag)
    }

    /// The permission bits (0o777) the ACL implies: owner, mask (or group), other.
    pub fn mode_bits(&self) -> u16 {
        let group = if self.has(MASK) { MASK } else { GROUP_OBJ };
        (self.perm_of(USER_OBJ) << 6) | (self.perm_of(group) << 3) | self.perm_of(OTHER)
    }

    /// Whether the mode's permission bits say everything the ACL says.
    pub fn is_mode_equivalent(&self) -> bool {
        self.entries.len() == 3
    }

    /// `chmod`: the ACL's owner, mask (or group) and other entries follow the new mode.
    pub fn chmod(&mut self, mode: u16) {
        let group = if self.has(MASK) { MASK } else { GROUP_OBJ };
        self.set_perm(USER_OBJ, mode >> 6);
        self.set_perm(group, mode >> 3);
        self.set_perm(OTHER, mode);
    }

    /// A directory's default ACL applied to a new node created with `mode`: returns the
    /// node's permission bits (special bits of `mode` kept) and its access ACL, `None` when
    /// the result says no more than the mode.
    pub fn inherit(&self, mode: u16) -> (u16, Option<Acl>) {
        let mut acl = self.clone();
        let mut mode = mode;
        let mut equivalent = true;
        for e in acl.entries.iter_mut() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= (mode >> 6) & 7;
                    mode &= (e.perm << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= mode & 7;
                    mode &= e.perm | !0o007;
                }
                USER | GROUP | MASK => equivalent = false,
                _ => {}
            }
        }
        let group = if acl.has(MASK) { MASK } else { GROUP_OBJ };
        if let Some(e) = acl.entries.iter_mut().find(|e| e.tag == group) {
            e.perm &= (mode >> 3) & 7;
            mode &= (e.perm << 3) | !0o070;
        }
        (mode, (!equivalent).then_some(acl))
    }

    /// The three-entry ACL equivalent to a mode (what `getfacl` shows without an ACL).
    #[cfg(test)]
    pub fn from_mode(mode: u16) -> Acl {
        let e = |tag, perm| Entry {
            tag,
            perm,
            id: UNDEFINED_ID,
        };
        Acl {
            entries: vec![
                e(USER_OBJ, (mode >> 6) & 7),
                e(GROUP_OBJ, (mode >> 3) & 7),
                e(OTHER, mode & 7),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
    }

    #[test]
    fn encode_parse_round_trip_and_validation() {
        let a = acl(&[
            (USER_OBJ, 7, UNDEFINED_ID),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, UNDEFINED_ID),
            (MASK, 7, UNDEFINED_ID),
            (OTHER, 0, UNDEFINED_ID),
        ]);
        assert_eq!(Acl::parse(&a.encode()).unwrap(), a);
        assert_eq!(a.mode_bits(), 0o770);
        assert!(!a.is_mode_equivalent());
        // Named entry without a mask, missing other, bad perm, bad length, bad version.
        let no_mask = acl(&[
            (USER_OBJ, 7, UNDEFINED_ID),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, UNDEFINED_ID),
            (OTHER, 0, UNDEFINED_ID),
        ]);
        assert!(Acl::parse(&no_mask.encode()).is_err());
        let no_other = acl(&[(USER_OBJ, 7, UNDEFINED_ID), (GROUP_OBJ, 5, UNDEFINED_ID)]);
        assert!(Acl::parse(&no_other.encode()).is_err());
        let mut bad_perm = Acl::from_mode(0o755).encode();
        bad_perm[6] = 8;
        assert!(Acl::parse(&bad_perm).is_err());
        let enc = Acl::from_mode(0o755).encode();
        assert!(Acl::parse(&enc[..enc.len() - 1]).is_err());
        let mut v1 = enc.clone();
        v1[0] = 1;
        assert!(Acl::parse(&v1).is_err());
    }

    #[test]
    fn chmod_moves_mask_not_group_when_there_is_one() {
        let mut a = acl(&[
            (USER_OBJ, 7, UNDEFINED_ID),
            (GROUP_OBJ, 7, UNDEFINED_ID),
            (GROUP, 7, 50),
            (MASK, 7, UNDEFINED_ID),
            (OTHER, 7, UNDEFINED_ID),
        ]);
        a.chmod(0o640);
        assert_eq!(a.perm_of(USER_OBJ), 6);
        assert_eq!(a.perm_of(MASK), 4);
        assert_eq!(a.perm_of(GROUP_OBJ), 7, "group entry kept, only masked");
        assert_eq!(a.perm_of(OTHER), 0);
        assert_eq!(a.mode_bits(), 0o640);
        let mut plain = Acl::from_mode(0o777);
        plain.chmod(0o751);
        assert_eq!(plain.mode_bits(), 0o751);
    }

    #[test]
    fn inheritance_narrows_by_mode() {
        // default: u::rwx, g::r-x, o::--- (mode-equivalent) -> no access ACL.
        let d = Acl::from_mode(0o750);
        assert_eq!(d.inherit(0o666), (0o640, None));
        assert_eq!(
            d.inherit(0o2777),
            (0o2750, None),
            "special bits pass through"
        );
        // default with a named group and mask.
        let d = acl(&[
            (USER_OBJ, 7, UNDEFINED_ID),
            (GROUP_OBJ, 7, UNDEFINED_ID),
            (GROUP, 5, 50),
            (MASK, 7, UNDEFINED_ID),
            (OTHER, 0, UNDEFINED_ID),
        ]);
        let (mode, access) = d.inherit(0o644);
        assert_eq!(mode, 0o640);
        let access = access.expect("named entries make a real ACL");
        assert_eq!(access.perm_of(MASK), 4);
        assert_eq!(access.perm_of(GROUP), 5, "named entries are not narrowed");
        assert_eq!(access.mode_bits(), mode);
    }
}
