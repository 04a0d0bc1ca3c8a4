//! The one mapping from core errors to errno.
//!
//! Exhaustive on purpose: a new [`FsError`] variant does not compile until it is given an
//! errno here, so no error reaches the kernel as an accident.

use dedupfs_core::fs::FsError;

pub fn errno(e: &FsError) -> i32 {
    match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::ReadOnly => libc::EROFS,
        FsError::NoSpace => libc::ENOSPC,
        FsError::CrossDevice => libc::EXDEV,
        FsError::NotPermitted(_) => libc::EPERM,
        FsError::NoAttr => libc::ENODATA,
        FsError::Range => libc::ERANGE,
        FsError::TooBig => libc::E2BIG,
        FsError::TooManyLinks => libc::EMLINK,
        FsError::FileTooLarge => libc::EFBIG,
        FsError::NotSupported(_) => libc::EOPNOTSUPP,
        FsError::Busy(_) => libc::EBUSY,
        FsError::BadHandle => libc::EBADF,
        FsError::Stale => libc::ESTALE,
        FsError::OutOfRange => libc::ENXIO,
        FsError::Io(_) => libc::EIO,
        FsError::Corrupt(_) => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn distinct_kinds_get_the_expected_errno() {
        assert_eq!(errno(&FsError::NotEmpty), libc::ENOTEMPTY);
        assert_eq!(errno(&FsError::Corrupt("x".into())), libc::EIO);
        assert_eq!(errno(&FsError::NotPermitted("root")), libc::EPERM);
        assert_eq!(errno(&FsError::OutOfRange), libc::ENXIO);
    }
}
