//! kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`), for `[[publish]]`: how
//! kubelet and the Secrets Store CSI driver update a secret volume, so that a laptop run
//! exercises exactly what the watcher sees in a cluster.
//!
//! 1. write every file into a new `..<UTC timestamp>.<random>` directory (files 0400);
//! 2. point a `..data_tmp` symlink at it and rename it over `..data` (the atomic step);
//! 3. make every visible name `<name>` rotor's own link `..data/<name>` (an atomic rename
//!    over whatever stands there) and remove rotor's links of files no longer in the
//!    payload;
//! 4. remove every older generation directory.
//!
//! Readers that open `<name>` see the old or the new generation, never a mix.
//!
//! A publish directory may be writable by others (a shared volume), so nothing found in it
//! is trusted: the writer never follows a link it finds there (a planted `..data ->
//! ../victim` must not make it delete `victim`), removes only real directories directly
//! inside `dir` whose names are generation names, and replaces a visible name that is not
//! its own link instead of leaving it for consumers to read.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

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

    // 2. The swap. A stale `..data_tmp` from a crash is replaced (rename replaces a link
    // or file without following it).
    replace_with_link(dir, DATA_TMP, Path::new(&stamp))?;
    fs::rename(dir.join(DATA_TMP), dir.join(DATA))?;

    // 3. Visible names: each one rotor's own link into `..data`, whatever stood there.
    for name in files.keys() {
        let own = own_link(name);
        if fs::read_link(dir.join(name)).ok().as_deref() != Some(own.as_path()) {
            replace_with_link(dir, name, &own)?;
        }
    }
    // Links of files no longer published: only rotor's own links, found by listing `dir`.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with("..") || files.contains_key(&name) {
            continue;
        }
        if fs::read_link(entry.path()).ok().as_deref() == Some(own_link(&name).as_path()) {
            fs::remove_file(entry.path())?;
        }
    }

    // 4. Older generations: real directories named like one, listed, never reached
    // through a link.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name != stamp && is_generation_name(name) && entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// What a visible name links to when rotor wrote it: `..data/<name>`.
fn own_link(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

/// Points `dir/name` at `target` atomically: a fresh link under a temporary name, renamed
/// over whatever `name` is (a file, a planted link); a directory there fails the rename,
/// and the error says so.
fn replace_with_link(dir: &Path, name: &str, target: &Path) -> io::Result<()> {
    let tmp = dir.join(format!("..{name}.tmp{}", rand::random::<u32>()));
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io::Error::new(
            e.kind(),
            format!(
                "cannot replace {} with rotor's link: {e}",
                dir.join(name).display()
            ),
        )
    })
}

/// `..YYYY_MM_DD_HH_MM_SS.<digits>`: the generation names this writer (and kubelet) create.
fn is_generation_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, suffix)) = rest.split_once('.') else {
        return false;
    };
    let stamp_ok = stamp.len() == 19
        && stamp.char_indices().all(|(i, c)| {
            if matches!(i, 4 | 7 | 10 | 13 | 16) {
                c == '_'
            } else {
                c.is_ascii_digit()
            }
        });
    stamp_ok && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(dir: &Path, files: &[(&str, &str)]) {
        let files: BTreeMap<String, &[u8]> = files
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes()))
            .collect();
        write(dir, &files, 0o400).expect("publish");
    }

    fn generations(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_generation_name(n))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn generation_names_are_recognised_exactly() {
        assert!(is_generation_name("..2026_11_28_10_00_00.123456789"));
        assert!(is_generation_name("..2026_11_28_10_00_00.1"));
        for other in [
            "..data",
            "..data_tmp",
            "..2026_11_28_10_00_00.",
            "..2026_11_28_10_00_00.12a",
            "..2026-11-28_10_00_00.1",
            "2026_11_28_10_00_00.1",
            "../victim",
            "..2026_11_28_10_00_0.1",
        ] {
            assert!(!is_generation_name(other), "{other}");
        }
    }

    #[test]
    fn a_swap_leaves_one_generation_and_own_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        publish(&dir, &[("a", "1"), ("b", "2")]);
        publish(&dir, &[("a", "3")]);
        assert_eq!(generations(&dir).len(), 1);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(
            fs::symlink_metadata(dir.join("b")).is_err(),
            "b is unpublished"
        );
    }

    /// A planted `..data -> ../victim` must not make the writer delete `victim`.
    #[test]
    fn a_planted_data_link_never_deletes_its_target() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let victim = tmp.path().join("victim");
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("keep"), "precious").unwrap();
        fs::write(victim.join("a"), "also precious").unwrap();
        publish(&dir, &[("a", "1")]);
        fs::remove_file(dir.join(DATA)).unwrap();
        std::os::unix::fs::symlink("../victim", dir.join(DATA)).unwrap();

        publish(&dir, &[("b", "2")]);

        assert_eq!(fs::read_to_string(victim.join("keep")).unwrap(), "precious");
        assert_eq!(
            fs::read_to_string(victim.join("a")).unwrap(),
            "also precious"
        );
        assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "2");
    }

    /// A visible name that is someone else's link (or file) is replaced, so consumers
    /// never read a planted file.
    #[test]
    fn a_planted_visible_name_is_replaced_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let planted = tmp.path().join("planted");
        fs::write(&planted, "attacker's value").unwrap();
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&planted, dir.join("password")).unwrap();
        fs::write(dir.join("username"), "attacker").unwrap();

        publish(&dir, &[("password", "rotor's value"), ("username", "app")]);

        assert_eq!(
            fs::read_to_string(dir.join("password")).unwrap(),
            "rotor's value"
        );
        assert_eq!(fs::read_to_string(dir.join("username")).unwrap(), "app");
        assert_eq!(
            fs::read_link(dir.join("password")).unwrap(),
            own_link("password")
        );
        assert_eq!(fs::read_to_string(&planted).unwrap(), "attacker's value");
    }

    /// Directories that merely look like generations through a link, or files with a
    /// generation name, are not removed; stale real generations from a crash are.
    #[test]
    fn only_real_generation_directories_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let victim = tmp.path().join("victim");
        fs::create_dir_all(&victim).unwrap();
        fs::create_dir_all(&dir).unwrap();
        let linked = "..2020_01_01_00_00_00.1";
        std::os::unix::fs::symlink(&victim, dir.join(linked)).unwrap();
        let stale = dir.join("..2020_01_01_00_00_00.2");
        fs::create_dir_all(&stale).unwrap();
        let unrelated = dir.join("..notes");
        fs::create_dir_all(&unrelated).unwrap();

        publish(&dir, &[("a", "1")]);

        assert!(victim.is_dir());
        assert!(!stale.exists(), "a stale generation is cleaned up");
        assert!(
            unrelated.is_dir(),
            "a directory not named like a generation stays"
        );
        // The planted link itself is not a directory and is left alone.
        assert!(fs::symlink_metadata(dir.join(linked)).is_ok());
    }

    #[test]
    fn a_directory_on_a_visible_name_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        fs::create_dir_all(dir.join("a").join("inner")).unwrap();
        let files: BTreeMap<String, &[u8]> = [("a".to_string(), &b"1"[..])].into();
        let err = write(&dir, &files, 0o400).unwrap_err();
        assert!(err.to_string().contains("vol/a"), "{err}");
        assert!(dir.join("a").join("inner").is_dir());
    }
}
