//! The snapshot JPEGs on disk, named by their sha256
//! (`{dir}/ab/abcdef….jpg`): the same picture sent twice is stored once,
//! a name can be checked against its bytes, and a URL built from it
//! cannot walk the file system. The database keeps which event each one
//! belongs to; retention (age and total size) is decided there and applied
//! here.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::StoreError;

#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    pub fn open(dir: &Path) -> Result<SnapshotFiles, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        Ok(SnapshotFiles { dir: dir.to_path_buf() })
    }

    /// The hex sha256 of `jpeg`.
    pub fn hash(jpeg: &[u8]) -> String {
        let digest = Sha256::digest(jpeg);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where the file of `sha256` lives; `None` unless it is 64 hex digits.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        Some(self.dir.join(&sha256[..2]).join(format!("{sha256}.jpg")))
    }

    /// Writes `jpeg` under its hash (durably: temp file, fsync, rename) unless
    /// it is there already, and returns the hash.
    pub fn put(&self, jpeg: &[u8]) -> Result<String, StoreError> {
        let sha = SnapshotFiles::hash(jpeg);
        let path = self.path(&sha).expect("a hash is a valid name");
        if path.is_file() {
            return Ok(sha);
        }
        let dir = path.parent().expect("two levels under dir");
        let io = |source| StoreError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(jpeg).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(sha)
    }

    /// Removes the file of `sha256`; a file already gone is not an error.
    pub fn remove(&self, sha256: &str) -> Result<(), StoreError> {
        let Some(path) = self.path(sha256) else { return Ok(()) };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_one_file_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let a = files.put(b"\xFF\xD8\xFFone").unwrap();
        assert_eq!(files.put(b"\xFF\xD8\xFFone").unwrap(), a);
        let path = files.path(&a).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\xFF\xD8\xFFone");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp file left");
        assert!(files.path("../../etc/passwd").is_none());
        assert!(files.path(&"A".repeat(64)).is_none());
        files.remove(&a).unwrap();
        files.remove(&a).unwrap();
        assert!(!path.exists());
    }
}
