//! Atomic file replacement: write a temporary file next to the target,
//! then rename it over the target, so a reader (or a restart) sees the old
//! file or the new one, never half of one.
//!
//! Both users of this helper live under the cache directories: page files
//! ([`crate::store`]) and `rules.json` ([`crate::rules`]). They differ only
//! in durability, which the caller chooses:
//!
//! - [`Durability::Rename`] (pages): no fsync. A page lost in a crash is a
//!   cache miss that the UFS refills, and a torn page fails its checksum and
//!   is deleted on read or at the restart scan; syncing every page would
//!   cost a disk flush per page written, so the speed wins deliberately.
//! - [`Durability::Sync`] (rules): the data is fsynced before the rename,
//!   because pins and TTLs exist nowhere else and must survive a crash.
//!
//! The temporary file is named `<file name>.tmp.<uuid>` in the target's
//! directory (the same file system, so the rename is atomic); a crash can
//! leave one behind, which the page store's restart scan deletes under
//! `pages/` (a leftover `rules.json.tmp.*` is harmless). On any error the
//! temporary file is removed and the target is untouched.

use std::io::Write;
use std::path::Path;

/// How durable a write must be before it replaces the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush to the OS and rename; no fsync (pages: a deliberate speed
    /// choice, see the module note).
    Rename,
    /// fsync the data, then rename (rules).
    Sync,
}

/// Replace `path` with the concatenation of `parts`, atomically.
pub fn write_atomically(
    path: &Path,
    parts: &[&[u8]],
    durability: Durability,
) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!("{name}.tmp.{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.flush()?;
        if durability == Durability::Sync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        for (parts, durability) in [
            (&[&b"ab"[..], &b"cd"[..]][..], Durability::Rename),
            (&[&b"xyz"[..]][..], Durability::Sync),
        ] {
            write_atomically(&path, parts, durability).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), parts.concat());
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "only the target is left");
        }
    }

    #[test]
    fn a_failed_write_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        assert!(write_atomically(&missing, &[b"x"], Durability::Sync).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
