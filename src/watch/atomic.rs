//! kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`), for `[[publish]]`: how
//! kubelet and the Secrets Store CSI driver update a secret volume, so that a laptop run
//! exercises exactly what the watcher sees in a cluster.
//!
//! 1. write every file into a new `..<UTC timestamp>.<random>` directory (files 0400);
//! 2. point a `..data_tmp` symlink at it and rename it over `..data` (the atomic step);
//! 3. create the visible symlinks `<name> -> ..data/<name>` that do not exist yet and
//!    remove those of files no longer in the payload;
//! 4. remove the previous timestamped directory.
//!
//! Readers that open `<name>` see the old or the new generation, never a mix.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the contents of `dir` with `files` (name to bytes) in one atomic swap.
/// Creates `dir` (0755) if needed. File names must be plain names (no `/`, not `..*`).
pub fn write(dir: &Path, files: &BTreeMap<String, &[u8]>, mode: u32) -> io::Result<()> {
    for name in files.keys() {
        if name.is_empty() || name.contains('/') || name.starts_with("..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid file name for a secret volume"),
            ));
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let old = fs::read_link(dir.join(DATA)).ok();

    // 1. The new generation.
    let stamp = format!(
        "..{}.{}",
        chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S"),
        rand::random::<u32>()
    );
    let gen_dir = dir.join(&stamp);
    fs::DirBuilder::new().mode(0o755).create(&gen_dir)?;
    // DirBuilder honours the umask; kubelet chmods explicitly.
    fs::set_permissions(&gen_dir, fs::Permissions::from_mode(0o755))?;
    for (name, bytes) in files {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(gen_dir.join(name))?;
        f.write_all(bytes)?;
        fs::set_permissions(gen_dir.join(name), fs::Permissions::from_mode(mode))?;
    }

    // 2. The swap. A stale `..data_tmp` from a crash is replaced.
    let tmp = dir.join(DATA_TMP);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    fs::rename(&tmp, dir.join(DATA))?;

    // 3. Visible symlinks.
    for name in files.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    if let Some(old) = &old
        && let Ok(entries) = fs::read_dir(dir.join(old))
    {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !files.contains_key(&name) {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
    }

    // 4. The previous generation.
    if let Some(old) = old
        && old.as_os_str() != stamp.as_str()
    {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}
