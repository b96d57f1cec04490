//! Detecting subPath mounts from `/proc/self/mountinfo`.
//!
//! A volume mounted with `subPath` is a bind mount of one entry of the volume, resolved
//! once when the container starts: kubelet's later swaps of `..data` never reach it, so a
//! watcher on it waits forever. In mountinfo such a mount has a `root` (field 4) that is
//! not `/`: a path inside kubelet's `volume-subpaths` directory, or inside the tmpfs of a
//! secret volume. A whole secret or CSI volume is its own tmpfs with root `/`.

use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields rotor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the source filesystem that is mounted.
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountEntry {
                root: unescape(fields[3]),
                mount_point: PathBuf::from(unescape(fields[4])),
                fstype: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// Octal escapes (`\040` for a space) as the kernel writes them.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why `path` (or a file inside it) looks like a subPath mount, if it does.
pub fn subpath_warning(entries: &[MountEntry], path: &Path) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.mount_point == path || e.mount_point.starts_with(path))
        .find(|e| {
            e.root != "/" && (e.root.contains("/volume-subpaths/") || e.fstype == "tmpfs")
        })
        .map(|e| {
            format!(
                "{} is a bind mount of {} ({}): a subPath mount, which kubelet never updates; mount the whole volume instead",
                e.mount_point.display(),
                e.root,
                e.fstype
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l
25 22 0:45 / /mnt/secrets ro,relatime - tmpfs tmpfs rw,size=1024k
26 22 0:46 /..2026_11_28_10_00_00.1/db /etc/app/db-password ro,relatime - tmpfs tmpfs rw
27 22 8:1 /var/lib/kubelet/pods/u/volume-subpaths/creds/app/0 /mnt/sub ro - ext4 /dev/sda1 rw
28 22 8:1 /srv/with\\040space /mnt/space rw - ext4 /dev/sda1 rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let e = parse(FIXTURE);
        assert_eq!(e.len(), 5);
        assert_eq!(e[1].mount_point, PathBuf::from("/mnt/secrets"));
        assert_eq!(e[1].root, "/");
        assert_eq!(e[4].root, "/srv/with space");
    }

    #[test]
    fn whole_volume_is_fine_subpaths_are_not() {
        let e = parse(FIXTURE);
        assert_eq!(subpath_warning(&e, Path::new("/mnt/secrets")), None);
        assert!(subpath_warning(&e, Path::new("/mnt/sub")).is_some());
        assert!(
            subpath_warning(&e, Path::new("/etc/app")).is_some(),
            "a file inside"
        );
        assert_eq!(
            subpath_warning(&e, Path::new("/mnt/space")),
            None,
            "plain bind mount"
        );
        assert_eq!(subpath_warning(&e, Path::new("/nowhere")), None);
    }
}
