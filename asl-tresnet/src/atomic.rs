//! Writing files so that nothing is ever half written: a reader, a crash or a kill at any moment
//! sees the old file or the new one, never a mix.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` atomically: `write` fills a temporary file next to it, which is synced, then
/// renamed over `path`; the directory is created first. On error the temporary file is removed
/// and `path` is left as it was.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write_atomic_via(path, |tmp| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)?;
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
}

/// [`write_atomic`] for writers that take a file name: `write` creates and fills the temporary
/// file it is given (a hidden `.NAME.PID-N.tmp` next to `path`, unique in the process).
pub fn write_atomic_via(
    path: &Path,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temporary_name(path)?;
    if let Some(dir) = tmp.parent() {
        fs::create_dir_all(dir)?;
    }
    let result = write(&tmp)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| sync_dir(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temporary file of a write to `path`.
fn temporary_name(path: &Path) -> io::Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Syncs the directory holding `path`, so that the rename survives a power loss (Unix; a no-op
/// elsewhere).
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.txt");
        write_atomic(&path, |w| w.write_all(b"old")).expect("write");
        let e = write_atomic(&path, |w| {
            w.write_all(b"half of the new")?;
            Err(io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&path).expect("read"), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.txt")]);
        write_atomic(&path, |w| w.write_all(b"new")).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert!(
            write_atomic(Path::new("/"), |_| Ok(())).is_err(),
            "not a file path"
        );
    }
}
