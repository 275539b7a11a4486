//! A small, real ext4 filesystem that can fill up: an image file formatted with `mkfs.ext4`
//! and loop-mounted. Needs root (CI runs as root) and a loop device; [`SmallFs::mount`] says
//! why when it cannot, so a test can fall back to injected `ENOSPC`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted filesystem, unmounted and deleted when dropped.
#[derive(Debug)]
pub struct SmallFs {
    image: PathBuf,
    mount: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl SmallFs {
    /// Formats a `size_bytes` ext4 image inside `dir` (no blocks reserved for root, so that
    /// root sees the same full disk as anyone) and mounts it on `dir/mnt`.
    pub fn mount(dir: &Path, size_bytes: u64) -> Result<SmallFs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a loop device".to_string());
        }
        if let Some(base) = dir.parent() {
            sweep_stale(base);
        }
        let image = dir.join("small-fs.img");
        let mount = dir.join("mnt");
        // Who owns the mount: a later run removes it if this process dies without unwinding.
        std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
            .map_err(|e| format!("write the owner file in {dir:?}: {e}"))?;
        std::fs::create_dir_all(&mount).map_err(|e| format!("create {mount:?}: {e}"))?;
        let f = std::fs::File::create(&image).map_err(|e| format!("create {image:?}: {e}"))?;
        f.set_len(size_bytes)
            .map_err(|e| format!("size {image:?}: {e}"))?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(SmallFs { image, mount })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes free for anyone.
    pub fn available_bytes(&self) -> u64 {
        let path = CString::new(self.mount.as_os_str().as_bytes()).expect("no NUL in a path");
        // SAFETY: an all-zero statvfs is a valid value for the kernel to overwrite.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid C string and `st` a writable statvfs.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {:?}", self.mount);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

/// Names, in a test directory, the process that mounted its filesystem.
const OWNER_FILE: &str = "small-fs.owner";

/// Unmounts and deletes the filesystems of test directories in `base` whose owner process is
/// gone (a test killed without unwinding leaves its mount behind).
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = run(Command::new("umount").arg("-l").arg(dir.join("mnt")));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // A process still using it would make the unmount fail: detach lazily then.
        if run(Command::new("umount").arg(&self.mount)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mount);
    }
}
