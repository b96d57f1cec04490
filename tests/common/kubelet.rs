//! A kubelet-faithful atomic writer for tests, written independently of rotor's own
//! (`rotor::watch::atomic`) so the watcher is tested against kubelet's algorithm, not
//! against itself: `..<timestamp>` directory, `..data_tmp` symlink, rename over `..data`,
//! visible symlinks, old directory removed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Replaces the payload of `dir` (name to content) as kubelet does.
pub fn swap(dir: &Path, payload: &[(&str, &[u8])]) {
    fs::create_dir_all(dir).unwrap();
    let old = fs::read_link(dir.join("..data")).ok();
    let ts = format!(
        "..2026_11_28_10_00_00.{}",
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    fs::create_dir(dir.join(&ts)).unwrap();
    for (name, bytes) in payload {
        fs::write(dir.join(&ts).join(name), bytes).unwrap();
    }
    let _ = fs::remove_file(dir.join("..data_tmp"));
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let names: BTreeMap<&str, ()> = payload.iter().map(|(n, _)| (*n, ())).collect();
    for name in names.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        for entry in fs::read_dir(dir.join(&old)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !names.contains_key(name.as_str()) {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
        fs::remove_dir_all(dir.join(old)).unwrap();
    }
}
