//! Writing whole files: atomically (a temporary file beside the target, fsynced, renamed over it), and the
//! copies a user asks for (`--report`, `--rejects`), which go where their path leads: standard output, through
//! a symbolic link, into a FIFO or a device.
//!
//! Why this module exists: a reader must never see half a file, whether it is a dataset's record, a one-file
//! conversion or a report copy, and a copy must never replace what the user pointed it at (a link, a device).
//! Every layer that writes such a file uses these few functions.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsynced, renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_from(path, &mut &bytes[..])
}

/// [`write_atomic`], streaming what `from` reads.
fn write_atomic_from(path: &Path, from: &mut dyn Read) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
        std::io::copy(from, &mut f).map_err(Error::io("writing", &tmp))?;
        f.sync_all().map_err(Error::io("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir);
    Ok(())
}

/// Renames `from` over `to` (one filesystem) and syncs the folder: the file is there whole or not at all.
pub fn move_into_place(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(Error::io("renaming into place", to))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir);
    }
    Ok(())
}

/// Writes a copy the user asked for (`--report PATH`, `--rejects PATH`): `-` is standard output; a symbolic
/// link is followed and stays a link (the file it points to is written); a FIFO, device or socket is written
/// in place, never replaced; anything else is replaced atomically.
pub fn write_copy(path: &Path, from: &mut dyn Read) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        std::io::copy(from, &mut out)
            .and_then(|_| out.flush())
            .map_err(Error::io("writing to", "standard output"))?;
        return Ok(());
    }
    let target = follow_links(path)?;
    match fs::metadata(&target) {
        Ok(m) if m.is_dir() => Err(Error::io("writing", &target)(std::io::Error::other(
            "it is a folder; give a file name",
        ))),
        Ok(m) if !m.is_file() => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(Error::io("opening", &target))?;
            std::io::copy(from, &mut f)
                .and_then(|_| f.flush())
                .map_err(Error::io("writing", &target))?;
            Ok(())
        }
        _ => write_atomic_from(&target, from),
    }
}

/// The path a chain of symbolic links at `path` ends at (which need not exist yet).
fn follow_links(path: &Path) -> Result<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&at).map_err(Error::io("reading link", &at))?;
                at = match at.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(at),
        }
    }
    Err(Error::io("following links from", path)(
        std::io::Error::other("too many levels of symbolic links"),
    ))
}

/// fsyncs a directory so renames in it survive a power loss. Best effort: not every filesystem allows it.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/r.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"22");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }
}
