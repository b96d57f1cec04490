//! Last-seen fingerprints per mount, persisted so that a restarted watcher compares the
//! directory with what it saw before it stopped: a file that did not change while rotor
//! was down fires nothing, one that did is reported (and reloads) as usual.
//!
//! One small JSON file per mount under the store's data directory, named by a hash of the
//! mount path, written with mode 0600 by temp file + rename. It holds keyed fingerprints
//! only (no content); without the master key they reveal nothing.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::scan::Snapshot;

/// The state file of `mount` in `dir`.
pub fn file_for(dir: &Path, mount: &Path) -> PathBuf {
    let digest = Sha256::digest(mount.as_os_str().as_encoded_bytes());
    dir.join(format!("mount-{}.json", hex::encode(&digest[..8])))
}

/// The saved snapshot, if there is a readable one. A corrupt file counts as none (the
/// watcher then starts from the directory as it is, firing nothing).
pub fn load(path: &Path) -> Option<Snapshot> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Saves `snapshot` atomically.
pub fn save(path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&json)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
