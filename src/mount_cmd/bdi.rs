//! The kernel's readahead and dirty-data bound of a mount, set when it is
//! made: the FUSE connection's backing device (`/sys/class/bdi/MAJ:MIN/`).
//!
//! The kernel gives a FUSE mount 128 KiB of readahead and, with its strict
//! limit, 1 % of the dirtyable memory for data written to the page cache
//! and not yet to the daemon. bkfs sets the readahead (`readahead=`, 4 MiB
//! by default) and, if asked, the bound (`dirty_max=`; docs/MOUNT.md).

use std::fs;
use std::path::{Path, PathBuf};

/// Sets readahead and the dirty-data bound of the FUSE mount on
/// `mountpoint`. Reads only `/proc/self/mountinfo` and sysfs: nothing here
/// touches the mount, whose requests may not be served yet.
///
/// # Errors
/// What could not be found or set, as a sentence for the log.
pub fn tune(mountpoint: &Path, readahead: u64, dirty_max: Option<u64>) -> Result<(), String> {
    let mp = beside(mountpoint);
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let dev = device_of(&info, &mp)
        .ok_or_else(|| format!("{} is not in /proc/self/mountinfo", mp.display()))?;
    let dir = Path::new("/sys/class/bdi").join(&dev);
    let set = |name: &str, value: u64| {
        fs::write(dir.join(name), value.to_string())
            .map_err(|e| format!("{}/{name} = {value}: {e}", dir.display()))
    };
    set("read_ahead_kb", (readahead / 1024).max(4))?;
    if let Some(bytes) = dirty_max {
        set("max_bytes", bytes)?;
    }
    tracing::debug!(
        "bdi {dev}: read_ahead_kb {}, max_bytes {dirty_max:?}",
        readahead / 1024
    );
    Ok(())
}

/// `mountpoint` with its parent made canonical: resolving the mount point
/// itself would look into the mount.
fn beside(mountpoint: &Path) -> PathBuf {
    match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        _ => mountpoint.to_path_buf(),
    }
}

/// The `MAJ:MIN` of the newest mount on `mp` in mountinfo `text`.
fn device_of(text: &str, mp: &Path) -> Option<String> {
    let want = mp.to_string_lossy();
    text.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        (f.len() > 4 && unescape(f[4]) == want).then(|| f[2].to_string())
    })
}

/// A mountinfo field with its `\ooo` escapes (space, tab, newline,
/// backslash) decoded.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_mount_on_a_path_is_found_with_escapes_decoded() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
40 22 0:40 / /mnt/a\\040b rw - fuse.bkfs /src rw
41 22 0:41 / /mnt/a rw - fuse.bkfs /src rw
42 41 0:42 / /mnt/a rw - fuse.bkfs /src rw
";
        assert_eq!(
            device_of(info, Path::new("/mnt/a b")).as_deref(),
            Some("0:40")
        );
        assert_eq!(
            device_of(info, Path::new("/mnt/a")).as_deref(),
            Some("0:42")
        );
        assert_eq!(device_of(info, Path::new("/mnt/c")), None);
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
    }
}
