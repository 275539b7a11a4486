//! Where the kernel's view of the machine is read from: `/proc` and `/sys` under a root
//! directory, `/` on a real machine and a synthetic tree in tests.

use std::path::{Path, PathBuf};

use corekv_server::cpuset::CpuSet;

use crate::error::{Error, Result};

/// The root under which `proc/` and `sys/` are read.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The running machine (`/proc`, `/sys`).
    pub fn live() -> Host {
        Host::at("/")
    }

    /// A tree with `proc/` and `sys/` below `root` (tests build such trees).
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/proc/<rel>`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.root.join("proc").join(rel)
    }

    /// `root/sys/<rel>`.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.root.join("sys").join(rel)
    }

    /// The sysfs root, `root/sys`.
    pub fn sys_root(&self) -> PathBuf {
        self.root.join("sys")
    }
}

/// Reads a file and trims surrounding whitespace.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a file that may legitimately be absent (a kernel without that feature): `None` then.
/// Other errors (permission, I/O) are still errors.
pub fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses `text`, read from `path`, as a number.
pub fn parse_num<T: std::str::FromStr>(path: &Path, text: &str) -> Result<T> {
    text.trim().parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("{text:?} is not a number"),
    })
}

/// Reads a file holding one number.
pub fn read_num<T: std::str::FromStr>(path: &Path) -> Result<T> {
    parse_num(path, &read(path)?)
}

/// Reads an optional file holding one number.
pub fn read_num_opt<T: std::str::FromStr>(path: &Path) -> Result<Option<T>> {
    read_opt(path)?.map(|t| parse_num(path, &t)).transpose()
}

/// Parses a CPU list (`0-3,8`) read from `path`.
pub fn parse_list(path: &Path, text: &str) -> Result<CpuSet> {
    text.parse()
        .map_err(|e: corekv_server::cpuset::CpuSetError| Error::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Reads a file holding a CPU list.
pub fn read_list(path: &Path) -> Result<CpuSet> {
    parse_list(path, &read(path)?)
}

/// The active choice of a sysfs "selector" file such as `none [mq-deadline] kyber` or
/// `always [madvise] never`: the bracketed word, and every choice offered.
pub fn selected(text: &str) -> (Option<String>, Vec<String>) {
    let mut active = None;
    let mut all = Vec::new();
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(w) => {
                active = Some(w.to_string());
                all.push(w.to_string());
            }
            None => all.push(word.to_string()),
        }
    }
    (active, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_files() {
        let (a, all) = selected("none [mq-deadline] kyber bfq");
        assert_eq!(a.as_deref(), Some("mq-deadline"));
        assert_eq!(all, ["none", "mq-deadline", "kyber", "bfq"]);
        assert_eq!(selected("none").0, None);
    }

    #[test]
    fn missing_optional_files_are_none_and_bad_numbers_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_opt(&dir.path().join("absent")).unwrap(), None);
        let p = dir.path().join("n");
        std::fs::write(&p, "12x\n").unwrap();
        let e = read_num::<u32>(&p).unwrap_err().to_string();
        assert!(
            e.contains("\"12x\" is not a number") && e.contains("/n"),
            "{e}"
        );
        let e = read(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains("absent"), "{e}");
    }
}
