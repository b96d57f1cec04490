//! Reading a mount directory into a [`Snapshot`] and diffing snapshots.
//!
//! Visible files are the directory's entries that are regular files or symlinks to regular
//! files. Names starting with `..` are kubelet's own (`..data`, `..data_tmp`,
//! `..<timestamp>`) and are skipped. In a plain directory (no `..data`), names starting
//! with `.` are skipped too: they are the temporary files of writers that replace a file
//! by temp-file + rename, and reporting them would announce a file that is about to vanish.
//!
//! In a kubelet layout every visible symlink of the form `..data/<name>` is read through
//! the `..data` target resolved once at the start of the scan, so a snapshot never mixes
//! two generations. If `..data` moved during the scan, or a file vanished under it (the
//! old generation was removed), the scan starts again; after [`MAX_ATTEMPTS`] it gives up
//! with [`ScanError::Unstable`] and the caller tries later.
//!
//! Contents are read into zeroizing buffers, fingerprinted and dropped; a snapshot holds
//! fingerprints and error kinds only. A file is read only if it is a regular file of at
//! most `[watch] max_file_size` bytes ([`read_file`]: non-blocking open, `fstat` of the
//! opened file, a bounded read); anything else (a FIFO, a device, a huge file) is skipped
//! and recorded as unreadable with the reason. In a kubelet layout no symlink is followed
//! except the visible `..data/<name>` ones, which are resolved through the pinned target:
//! the `..<timestamp>/<name>` opened is refused if it is a link (`O_NOFOLLOW`), and a
//! `..data` that does not name a generation directory beside it is not followed at all.
//! In a plain directory a link is followed only to a file inside the mount directory.
//! Nothing outside the mount is ever read.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Largest visible file read unless `[watch] max_file_size` says otherwise: 1 MiB, the
/// largest Kubernetes Secret.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Attempts before a scan that keeps racing with swaps gives up.
pub const MAX_ATTEMPTS: usize = 8;

const DATA: &str = "..data";

/// What the watcher knows of one visible file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Readable, with this keyed fingerprint.
    Fingerprint(String),
    /// Present but not readable; the I/O error kind (never content).
    Unreadable(String),
}

impl FileState {
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            FileState::Fingerprint(f) => Some(f),
            FileState::Unreadable(_) => None,
        }
    }
}

/// The visible files of a mount at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub files: BTreeMap<String, FileState>,
}

impl Snapshot {
    /// Files that could be read.
    pub fn readable(&self) -> usize {
        self.files
            .values()
            .filter(|s| matches!(s, FileState::Fingerprint(_)))
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The directory is missing or cannot be listed.
    #[error("cannot list mount directory {path}: {source}")]
    Unavailable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every attempt raced with an update.
    #[error("mount directory {path} kept changing during {MAX_ATTEMPTS} scans")]
    Unstable { path: PathBuf },
}

impl ScanError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScanError::Unavailable { .. } => "unavailable",
            ScanError::Unstable { .. } => "unstable",
        }
    }
}

/// One attempt ended early because an update landed in the middle of it.
struct Raced;

/// Reads `dir` into a snapshot, fingerprinting every visible file with `fingerprint`. A
/// file larger than `max_file_size` bytes, or one that is not a regular file, is not read:
/// it is in the snapshot as [`FileState::Unreadable`] with the reason.
pub fn scan(
    dir: &Path,
    fingerprint: &dyn Fn(&[u8]) -> String,
    max_file_size: u64,
) -> Result<Snapshot, ScanError> {
    for _ in 0..MAX_ATTEMPTS {
        match scan_once(dir, fingerprint, max_file_size) {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(Raced)) => continue,
            Err(source) => {
                return Err(ScanError::Unavailable {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
    Err(ScanError::Unstable {
        path: dir.to_owned(),
    })
}

fn scan_once(
    dir: &Path,
    fingerprint: &dyn Fn(&[u8]) -> String,
    max_file_size: u64,
) -> io::Result<Result<Snapshot, Raced>> {
    let data = fs::read_link(dir.join(DATA)).ok();
    // kubelet's `..data` names a sibling generation directory (`..<timestamp>`, a real
    // directory); one that names anything else (an absolute path, `../elsewhere`, a nested
    // path, a link) was planted and is never followed: the files linked through it are
    // unreadable.
    let data_inside = data.as_deref().is_some_and(|target| {
        is_generation_name(target)
            && fs::symlink_metadata(dir.join(target)).is_ok_and(|m| m.file_type().is_dir())
    });
    // In a plain directory links are followed, but only to files inside the mount (the
    // directory itself resolved, as a mount path may contain links).
    let root = if data.is_none() {
        Some(fs::canonicalize(dir)?)
    } else {
        None
    };
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            // Kubernetes keys are ASCII; a non-UTF-8 name is nobody's secret.
            continue;
        };
        if name.starts_with("..") || (data.is_none() && name.starts_with('.')) {
            continue;
        }
        let source = match resolve(dir, &name, data.as_deref(), data_inside, root.as_deref()) {
            Source::Path(p) => p,
            Source::Unreadable(reason) => {
                files.insert(name, FileState::Unreadable(reason));
                continue;
            }
            Source::Gone => continue,
        };
        // kubelet writes regular files under `..<timestamp>` and links nothing else; a link
        // found anywhere else in its layout was planted, and is not followed. In a plain
        // directory a link was resolved above (inside the mount), so none is followed now.
        match read_file(&source, max_file_size) {
            Ok(Read::Bytes(bytes)) => {
                files.insert(name, FileState::Fingerprint(fingerprint(&bytes)));
            }
            Ok(Read::Directory) => {}
            Ok(Read::Skipped(reason)) => {
                files.insert(name, FileState::Unreadable(reason));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if data.is_some() {
                    return Ok(Err(Raced));
                }
                // Deleted between the listing and now, or a dangling link: not a file.
            }
            Err(e) => {
                files.insert(name, FileState::Unreadable(error_kind(&e)));
            }
        }
    }
    if fs::read_link(dir.join(DATA)).ok() != data {
        return Ok(Err(Raced));
    }
    Ok(Ok(Snapshot { files }))
}

/// Where the content of a visible file is read from.
enum Source {
    Path(PathBuf),
    /// Not read, and why (a content-free phrase).
    Unreadable(String),
    /// Not a file (a dangling link in a plain directory).
    Gone,
}

/// The path to read the visible file `name` of `dir` from: in a kubelet layout its
/// `..data/<name>` link through the pinned `data` target (`data_inside`: that target is a
/// generation directory beside it), in a plain directory (`root`: `dir` resolved) a link
/// resolved to a file inside the mount.
fn resolve(
    dir: &Path,
    name: &str,
    data: Option<&Path>,
    data_inside: bool,
    root: Option<&Path>,
) -> Source {
    let link = dir.join(name);
    match (data, fs::read_link(&link)) {
        (Some(_), Ok(to)) if !data_inside && to == Path::new(DATA).join(name) => {
            Source::Unreadable(OUTSIDE.to_owned())
        }
        (Some(target), Ok(to)) if to == Path::new(DATA).join(name) => {
            Source::Path(dir.join(target).join(name))
        }
        // Resolved here, so that the open below follows no link: one swapped in after
        // this check is refused, not followed out.
        (None, Ok(_)) => match fs::canonicalize(&link) {
            Ok(resolved) if root.is_some_and(|r| resolved.starts_with(r)) => Source::Path(resolved),
            Ok(_) => Source::Unreadable(OUTSIDE.to_owned()),
            // A dangling link: not a file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Source::Gone,
            Err(e) => Source::Unreadable(error_kind(&e)),
        },
        _ => Source::Path(link),
    }
}

/// Reads the one visible file `name` of `dir` with every rule of a scan (the `..data`
/// target pinned, no link followed out of the mount, regular files of at most
/// `max_file_size` bytes only). `Ok(None)`: no such file, or one that is not read.
/// `rotor agent` reads a view's `NAME_version` markers with it; the bytes are the caller's
/// to keep out of logs.
pub fn read_visible(
    dir: &Path,
    name: &str,
    max_file_size: u64,
) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    if name.is_empty() || name.contains('/') || name.starts_with("..") {
        return Ok(None);
    }
    for _ in 0..MAX_ATTEMPTS {
        let data = fs::read_link(dir.join(DATA)).ok();
        let data_inside = data.as_deref().is_some_and(|target| {
            is_generation_name(target)
                && fs::symlink_metadata(dir.join(target)).is_ok_and(|m| m.file_type().is_dir())
        });
        let root = if data.is_none() {
            Some(fs::canonicalize(dir)?)
        } else {
            None
        };
        let found = match resolve(dir, name, data.as_deref(), data_inside, root.as_deref()) {
            Source::Path(p) => match read_file(&p, max_file_size) {
                Ok(Read::Bytes(bytes)) => Some(bytes),
                Ok(_) => None,
                // The generation was removed under us: a swap landed; read again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && data.is_some() => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
            Source::Unreadable(_) | Source::Gone => None,
        };
        if fs::read_link(dir.join(DATA)).ok() == data {
            return Ok(found);
        }
    }
    Err(io::Error::other(format!(
        "{} kept changing during {MAX_ATTEMPTS} reads",
        dir.display()
    )))
}

/// Why a link that leads out of the mount is not read.
const OUTSIDE: &str = "a link out of the mount directory; not followed";

/// Whether `target` (what `..data` points to) is a generation directory beside it: one
/// plain component starting with `..`, as kubelet's atomic writer makes.
fn is_generation_name(target: &Path) -> bool {
    let mut parts = target.components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(n)), None)
            if n.to_str().is_some_and(|n| n.starts_with("..") && n.len() > 2)
    )
}

/// What [`read_file`] found.
enum Read {
    /// A regular file's whole content.
    Bytes(Zeroizing<Vec<u8>>),
    /// A directory: not a file, and not worth a warning (a secret with nested keys).
    Directory,
    /// Something that is not read, and why (a content-free phrase).
    Skipped(String),
}

/// Reads the regular file at `path`, at most `max` bytes of it.
///
/// Nothing here can block or take unbounded memory, whatever is planted in a mount: the type
/// is looked at before opening (opening a device may itself do something), the open is
/// non-blocking (a FIFO swapped in after the look still opens at once), the opened file is
/// checked again with `fstat` and its size compared with `max` before a byte is read, and
/// the read stops after `max + 1` bytes in case it grew. A symlink as the last component is
/// refused (`O_NOFOLLOW`), not followed: callers resolve the links they allow first.
fn read_file(path: &Path, max: u64) -> io::Result<Read> {
    let meta = fs::symlink_metadata(path)?;
    if let Some(other) = not_regular(&meta.file_type()) {
        return Ok(other);
    }
    let flags = libc::O_NONBLOCK | libc::O_NOFOLLOW;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = file.metadata()?;
    if let Some(other) = not_regular(&meta.file_type()) {
        return Ok(other);
    }
    let too_large = || {
        Read::Skipped(format!(
            "larger than [watch] max_file_size ({max} bytes); skipped"
        ))
    };
    if meta.len() > max {
        return Ok(too_large());
    }
    // Sized up front so the buffer is not reallocated (leaving a copy behind) unless the
    // file grew since the fstat.
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(too_large());
    }
    Ok(Read::Bytes(bytes))
}

/// `None` for a regular file; otherwise what to do with `t`.
fn not_regular(t: &fs::FileType) -> Option<Read> {
    let what = if t.is_file() {
        return None;
    } else if t.is_dir() {
        return Some(Read::Directory);
    } else if t.is_symlink() {
        return Some(Read::Skipped(
            "a symbolic link where kubelet writes a file; not followed".to_owned(),
        ));
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "of an unknown type"
    };
    Some(Read::Skipped(format!(
        "not a regular file ({what}); skipped"
    )))
}

/// An I/O error as a short, content-free phrase ("permission denied").
fn error_kind(e: &io::Error) -> String {
    e.kind().to_string()
}

/// What happened to one visible file between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New or different content (the new fingerprint).
    Changed {
        file: String,
        fingerprint: String,
    },
    Deleted {
        file: String,
    },
    /// Now unreadable (and was not, or for another reason).
    Unreadable {
        file: String,
        reason: String,
    },
}

impl Change {
    pub fn file(&self) -> &str {
        match self {
            Change::Changed { file, .. }
            | Change::Deleted { file }
            | Change::Unreadable { file, .. } => file,
        }
    }
}

/// The changes from `old` to `new`, in file name order. Equal snapshots give none.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for (file, state) in &new.files {
        if old.files.get(file) == Some(state) {
            continue;
        }
        out.push(match state {
            FileState::Fingerprint(f) => Change::Changed {
                file: file.clone(),
                fingerprint: f.clone(),
            },
            FileState::Unreadable(reason) => Change::Unreadable {
                file: file.clone(),
                reason: reason.clone(),
            },
        });
    }
    for file in old.files.keys() {
        if !new.files.contains_key(file) {
            out.push(Change::Deleted { file: file.clone() });
        }
    }
    out.sort_by(|a, b| a.file().cmp(b.file()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            files: files
                .iter()
                .map(|(n, f)| ((*n).to_owned(), FileState::Fingerprint((*f).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn diff_reports_only_real_changes() {
        let a = snap(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert!(diff(&a, &a.clone()).is_empty());
        let b = snap(&[("a", "1"), ("b", "9"), ("d", "4")]);
        assert_eq!(
            diff(&a, &b),
            vec![
                Change::Changed {
                    file: "b".into(),
                    fingerprint: "9".into()
                },
                Change::Deleted { file: "c".into() },
                Change::Changed {
                    file: "d".into(),
                    fingerprint: "4".into()
                },
            ]
        );
    }
}
