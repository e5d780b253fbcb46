//! One writer per chain directory: an exclusive advisory lock (flock) on
//! `<chain dir>/lock`, held for the life of the [`super::ChainStore`]. A
//! second process (or a second store in this one) opening the same chain is
//! refused before it reads or repairs anything, so two writers can never
//! overwrite each other's acknowledged records.

use std::fs::{File, TryLockError};
use std::path::Path;

use super::error::{StoreError, io};

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub(super) struct DirLock(#[allow(dead_code)] File);

/// Takes the chain directory's lock, or says who is in the way.
pub(super) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join("lock");
    let access = super::FileAccess::of_dir(dir);
    let file = access.options().create(true).truncate(false).write(true).open(&path).map_err(io("open", &path))?;
    access.fix(&file).map_err(io("chmod", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(TryLockError::Error(e)) => Err(io("lock", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChainStore, StoreError, StoreOptions};

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chain");
        let first = ChainStore::open(&dir, "c", StoreOptions::default()).unwrap();
        let second = ChainStore::open(&dir, "c", StoreOptions::default());
        assert!(matches!(second, Err(StoreError::Locked { .. })), "{:?}", second.err());
        drop(first);
        ChainStore::open(&dir, "c", StoreOptions::default()).expect("free again once the first writer closed");
    }
}
