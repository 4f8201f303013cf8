//! Which mounts count as real filesystems, and their space figures.
//!
//! The mount table is `<procfs>/1/mountinfo` (the host's, when `--path.procfs` is the host's
//! `/proc` and dockwatch sees the host's PIDs), falling back to `<procfs>/self/mountinfo`.
//! Pseudo filesystems and system mount points are left out with node_exporter's default
//! patterns, and a filesystem mounted more than once (bind mounts) is reported once.
//!
//! With `--path.rootfs` set (say `/host/root`), `statvfs` runs on the host path under that
//! prefix and the `mountpoint` label is the host path without it. When the table read is
//! dockwatch's own (its mount points carry the prefix), only mounts under the prefix count.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use super::procfs::Mount;

/// Filesystem types that hold no user data (node_exporter's default exclusion).
const PSEUDO_FSTYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "erofs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Whether a filesystem type is left out.
pub fn fstype_excluded(fstype: &str) -> bool {
    PSEUDO_FSTYPES.contains(&fstype)
}

/// Whether a mount point (as labelled, without the rootfs prefix) is left out:
/// `/dev`, `/proc`, `/sys` and everything under them, anything under `/run/credentials/`,
/// and container storage under `/var/lib/docker/` and `/var/lib/containers/storage/`
/// (node_exporter's default pattern).
pub fn mount_point_excluded(mount_point: &str) -> bool {
    let Some(rest) = mount_point.strip_prefix('/') else {
        return true;
    };
    let whole = ["dev", "proc", "sys"];
    if whole
        .iter()
        .any(|p| rest == *p || rest.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    {
        return true;
    }
    let below = [
        "run/credentials/",
        "var/lib/docker/",
        "var/lib/containers/storage/",
    ];
    below
        .iter()
        .any(|p| rest.strip_prefix(p).is_some_and(|r| !r.is_empty()))
}

/// A filesystem to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Mount source (`/dev/sda1`).
    pub device: String,
    /// Mount point as the host sees it (the label).
    pub mount_point: String,
    /// Filesystem type.
    pub fstype: String,
    /// Path to call `statvfs` on.
    pub path: PathBuf,
}

/// Picks the filesystems to report from a mount table, in table order.
///
/// `rootfs` is `--path.rootfs`. A device number mounted several times is reported once, at
/// the mount of its filesystem root (`root` field `/`), else at its first mount: bind mounts
/// report the same figures and would be counted twice by `sum()`.
pub fn select(mounts: &[Mount], rootfs: &Path) -> Vec<Target> {
    let prefix = rootfs
        .to_str()
        .map(|s| s.trim_end_matches('/'))
        .filter(|s| !s.is_empty());
    let under = |mp: &str, p: &str| -> Option<String> {
        let rest = mp.strip_prefix(p)?;
        if rest.is_empty() {
            Some("/".to_string())
        } else if rest.starts_with('/') {
            Some(rest.to_string())
        } else {
            None
        }
    };
    // Our own mount table shows the host's mounts under the prefix.
    let own_table =
        prefix.is_some_and(|p| mounts.iter().any(|m| under(&m.mount_point, p).is_some()));

    let mut out: Vec<(Target, bool)> = Vec::new();
    let mut by_device: HashMap<(u32, u32), usize> = HashMap::new();
    for m in mounts {
        let (label, path) = match prefix {
            None => (m.mount_point.clone(), PathBuf::from(&m.mount_point)),
            Some(p) if own_table => match under(&m.mount_point, p) {
                Some(label) => (label, PathBuf::from(&m.mount_point)),
                None => continue,
            },
            Some(p) => {
                let rel = m.mount_point.trim_start_matches('/');
                let path = if rel.is_empty() {
                    PathBuf::from(p)
                } else {
                    Path::new(p).join(rel)
                };
                (m.mount_point.clone(), path)
            }
        };
        if fstype_excluded(&m.fstype) || mount_point_excluded(&label) {
            continue;
        }
        let is_root = m.root == "/";
        let target = Target {
            device: m.source.clone(),
            mount_point: label,
            fstype: m.fstype.clone(),
            path,
        };
        match by_device.get(&m.device_number) {
            Some(&i) => {
                if is_root && !out[i].1 {
                    out[i] = (target, true);
                }
            }
            None => {
                by_device.insert(m.device_number, out.len());
                out.push((target, is_root));
            }
        }
    }
    out.into_iter().map(|(t, _)| t).collect()
}

/// Space and inode figures of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Mount source.
    pub device: String,
    /// Mount point as the host sees it.
    pub mount_point: String,
    /// Filesystem type.
    pub fstype: String,
    /// Size in bytes (blocks × fragment size).
    pub size_bytes: u64,
    /// Free bytes, including those reserved for root.
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Mounted read-only.
    pub readonly: bool,
}

/// Calls `statvfs` with a deadline, since a dead NFS or FUSE server can block it forever.
///
/// A mount that timed out is skipped until its stuck call returns.
#[derive(Debug, Clone)]
pub struct StatFs {
    timeout: Duration,
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl StatFs {
    /// Gives up on each call after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            stuck: Arc::default(),
        }
    }

    /// Measures `target`; `None` when it fails, times out or an earlier call on it has not
    /// returned yet.
    pub fn measure(&self, target: &Target) -> Option<Filesystem> {
        let path = target.path.clone();
        if self
            .stuck
            .lock()
            .expect("statfs lock poisoned")
            .contains(&path)
        {
            debug!(mountpoint = %target.mount_point, "filesystem still unresponsive, skipped");
            return None;
        }
        // The path stays in `stuck` while a call on it is in flight; the thread takes it out
        // when the call returns, however late.
        self.stuck
            .lock()
            .expect("statfs lock poisoned")
            .insert(path.clone());
        let (tx, rx) = mpsc::channel();
        let stuck = self.stuck.clone();
        let spawned = std::thread::Builder::new()
            .name("statfs".into())
            .spawn(move || {
                let res = rustix::fs::statvfs(&path);
                stuck.lock().expect("statfs lock poisoned").remove(&path);
                let _ = tx.send(res);
            });
        if let Err(e) = spawned {
            self.stuck
                .lock()
                .expect("statfs lock poisoned")
                .remove(&target.path);
            debug!(error = %e, "starting statfs thread failed");
            return None;
        }
        let st = match rx.recv_timeout(self.timeout) {
            Ok(Ok(st)) => st,
            Ok(Err(e)) => {
                debug!(
                    mountpoint = %target.mount_point,
                    path = %target.path.display(),
                    error = %e,
                    "statvfs failed"
                );
                return None;
            }
            Err(_) => {
                debug!(
                    mountpoint = %target.mount_point,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "statvfs timed out; skipping the mount until it answers"
                );
                return None;
            }
        };
        let frag = st.f_frsize;
        Some(Filesystem {
            device: target.device.clone(),
            mount_point: target.mount_point.clone(),
            fstype: target.fstype.clone(),
            size_bytes: st.f_blocks.saturating_mul(frag),
            free_bytes: st.f_bfree.saturating_mul(frag),
            avail_bytes: st.f_bavail.saturating_mul(frag),
            files: st.f_files,
            files_free: st.f_ffree,
            readonly: st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::host::procfs::parse_mountinfo;

    fn fixture(name: &str) -> Vec<Mount> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/");
        parse_mountinfo(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
    }

    fn summary(targets: &[Target]) -> Vec<(&str, &str, &str, &str)> {
        targets
            .iter()
            .map(|t| {
                (
                    t.device.as_str(),
                    t.mount_point.as_str(),
                    t.fstype.as_str(),
                    t.path.to_str().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn host_table_without_prefix() {
        let targets = select(&fixture("1/mountinfo"), Path::new("/"));
        assert_eq!(
            summary(&targets),
            [
                ("/dev/vda", "/", "ext4", "/"),
                ("tmpfs", "/run", "tmpfs", "/run"),
                ("/dev/sda1", "/boot", "vfat", "/boot"),
                ("/dev/mapper/data", "/mnt/my data", "xfs", "/mnt/my data"),
                ("server:/export", "/home/shared", "nfs4", "/home/shared"),
            ]
        );
    }

    #[test]
    fn host_table_with_prefix() {
        let targets = select(&fixture("1/mountinfo"), Path::new("/host/root/"));
        assert_eq!(
            summary(&targets)[..3],
            [
                ("/dev/vda", "/", "ext4", "/host/root"),
                ("tmpfs", "/run", "tmpfs", "/host/root/run"),
                ("/dev/sda1", "/boot", "vfat", "/host/root/boot"),
            ]
        );
        assert_eq!(targets.len(), 5);
    }

    #[test]
    fn own_table_with_prefix() {
        let targets = select(&fixture("self/mountinfo"), Path::new("/host/root"));
        assert_eq!(
            summary(&targets),
            [
                ("/dev/vda", "/", "ext4", "/host/root"),
                ("/dev/sda1", "/boot", "vfat", "/host/root/boot"),
                ("tmpfs", "/run", "tmpfs", "/host/root/run"),
            ]
        );
    }

    #[test]
    fn bind_mount_before_the_root_mount_yields_to_it() {
        let text = "\
1 0 8:1 /data /srv rw - ext4 /dev/sda1 rw
2 0 8:1 / /data rw - ext4 /dev/sda1 rw
3 0 8:1 /data/x /x rw - ext4 /dev/sda1 rw
";
        let targets = select(&parse_mountinfo(text).unwrap(), Path::new("/"));
        assert_eq!(summary(&targets), [("/dev/sda1", "/data", "ext4", "/data")]);
    }

    #[test]
    fn mount_point_rules() {
        for mp in [
            "/dev",
            "/dev/shm",
            "/proc",
            "/sys/fs/cgroup",
            "/run/credentials/x.service",
            "/var/lib/docker/overlay2/a/merged",
            "/var/lib/containers/storage/overlay",
            "relative",
        ] {
            assert!(mount_point_excluded(mp), "{mp}");
        }
        for mp in [
            "/",
            "/devices",
            "/run",
            "/run/credentials",
            "/var/lib/docker",
            "/var/lib/containers",
            "/home",
            "/system",
        ] {
            assert!(!mount_point_excluded(mp), "{mp}");
        }
        assert!(fstype_excluded("overlay"));
        assert!(!fstype_excluded("tmpfs"));
        assert!(!fstype_excluded("ext4"));
    }

    #[test]
    fn statvfs_of_a_real_directory() {
        let fs = StatFs::new(Duration::from_secs(5));
        let target = Target {
            device: "dev".into(),
            mount_point: "/".into(),
            fstype: "any".into(),
            path: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        };
        let got = fs.measure(&target).unwrap();
        assert!(got.size_bytes > 0);
        assert!(got.free_bytes >= got.avail_bytes);
        assert!(got.size_bytes >= got.free_bytes);
        let missing = Target {
            path: PathBuf::from("/nonexistent/dockwatch"),
            ..target
        };
        assert_eq!(fs.measure(&missing), None);
    }
}
