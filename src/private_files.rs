//! Files only Docket's own user may read: the SQLite database (with its WAL and shared-memory
//! files), the development signing key, attachments and backup work directories hold password
//! hashes, TOTP secrets and case data, so nothing is left to the process's umask.

use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700. Directories that exist keep their mode:
/// they may be shared on purpose (a mounted volume), and Docket's files inside are 0600 anyway.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Narrows an existing file to mode 0600; returns whether it was readable by others before.
/// A missing file is not an error (SQLite creates its WAL files lazily).
pub fn restrict(file: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = match std::fs::metadata(file) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return Ok(false);
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))?;
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(false)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_are_private_and_existing_files_are_narrowed() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("docket.db");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(restrict(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        assert!(!restrict(&file).unwrap(), "already private");
        assert!(!restrict(&nested.join("missing-wal")).unwrap());
    }
}
