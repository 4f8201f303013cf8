//! The cgroup fast path: container usage read straight from the cgroup filesystem and from
//! `/proc/<pid>/net/dev`, without asking the Docker Engine.
//!
//! The stats endpoint of the engine reads the very same files, but answers in up to a second
//! per container; reading them here costs microseconds. Figures are converted exactly as the
//! engine converts them (runc's `libcontainer/cgroups` for v1, containerd's `cgroups/v2` for
//! v2), so the two sources agree and a container can move from one to the other between
//! cycles without a jump.
//!
//! Supported layouts, detected once at start ([`Layout::detect`]):
//!
//! - cgroup v1 (also the hybrid layout, where Docker uses the v1 controllers), one hierarchy
//!   per controller, mounted separately (`cpu`, `cpuacct`) or together (`cpu,cpuacct`);
//! - cgroup v2 (unified);
//! - the `cgroupfs` driver (`docker/<id>`) and the `systemd` driver
//!   (`system.slice/docker-<id>.scope`), each honouring a container's `--cgroup-parent`.
//!
//! A container's directory is looked up once and cached: first from `/proc/<pid>/cgroup` of
//! its init process (the kernel's word, which also covers a daemon-wide `--cgroup-parent`),
//! then from the paths the two drivers would have chosen.
//!
//! Kernel references: `Documentation/admin-guide/cgroup-v1/{cpuacct,memory,blkio-controller,
//! pids}.rst`, `Documentation/admin-guide/cgroup-v2.rst`, `Documentation/scheduler/
//! sched-bwc.rst` (CFS bandwidth) and `proc(5)` for `net/dev`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use crate::cli::CgroupMode;
use crate::collector::UsageReader;
use crate::collector::container::{UNLIMITED, memory_from_stat};
use crate::model::{
    BlkioUsage, ContainerMeta, ContainerUsage, CpuUsage, NetworkUsage, UsageSource,
};

/// Clock ticks per second `cpuacct.stat` counts in. runc assumes 100 (USER_HZ on every
/// Linux architecture Docker supports), and so do we, to agree with the engine.
const USER_HZ: u64 = 100;

/// Cached directories unused for this long are forgotten (their container is gone).
const PATH_TTL: Duration = Duration::from_secs(600);

/// Interfaces the kernel creates in every network namespace when a tunnel module is loaded;
/// the engine does not report them, and neither do we. `lo` is left out as well.
const IGNORED_INTERFACES: &[&str] = &[
    "lo", "tunl0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0", "sit0", "ip6tnl0",
    "ip6gre0",
];

/// Errors of the cgroup reader.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup mount point is not usable.
    #[error("detecting the cgroup layout under {root:?}: {reason}")]
    Detect {
        /// The configured root.
        root: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// No directory of the container was found.
    #[error("no cgroup directory found for container {id:?}")]
    NotFound {
        /// The container id.
        id: String,
    },
    /// A file could not be read.
    #[error("reading {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file did not hold what the kernel documents.
    #[error("parsing {path:?} line {line}: bad {field} {value:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field being parsed.
        field: &'static str,
        /// The text that did not parse.
        value: String,
    },
}

/// Which cgroup driver the engine most likely uses; only orders the lookup candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `docker/<id>` under each hierarchy.
    Cgroupfs,
    /// `system.slice/docker-<id>.scope`.
    Systemd,
}

/// The cgroup hierarchy as mounted under the configured root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: one directory per controller; `None` for a controller that is not mounted.
    V1 {
        /// `cpu` (CFS bandwidth).
        cpu: Option<PathBuf>,
        /// `cpuacct` (usage counters); required.
        cpuacct: PathBuf,
        /// `memory`; required.
        memory: PathBuf,
        /// `blkio`.
        blkio: Option<PathBuf>,
        /// `pids`.
        pids: Option<PathBuf>,
    },
    /// cgroup v2: one tree.
    V2 {
        /// The unified mount.
        root: PathBuf,
    },
}

/// What [`Layout::detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The mounted hierarchy.
    pub hierarchy: Hierarchy,
    /// The driver whose paths are tried first.
    pub driver: Driver,
}

impl Layout {
    /// Looks at `root` (normally `/sys/fs/cgroup`) once: v2 when it holds
    /// `cgroup.controllers`, else v1 with a directory per controller.
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        let fail = |reason: String| CgroupError::Detect {
            root: root.to_path_buf(),
            reason,
        };
        let entries: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| fail(format!("cannot list it: {e}")))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        if root.join("cgroup.controllers").is_file() {
            let driver = if root.join("docker").is_dir() {
                Driver::Cgroupfs
            } else if root.join("system.slice").is_dir() {
                Driver::Systemd
            } else {
                Driver::Cgroupfs
            };
            return Ok(Self {
                hierarchy: Hierarchy::V2 {
                    root: root.to_path_buf(),
                },
                driver,
            });
        }
        // A controller is mounted at `<root>/<name>` or co-mounted as `<root>/a,b`.
        let find = |controller: &str| -> Option<PathBuf> {
            let direct = root.join(controller);
            if direct.is_dir() {
                return Some(direct);
            }
            entries
                .iter()
                .find(|e| e.split(',').any(|c| c == controller))
                .map(|e| root.join(e))
                .filter(|p| p.is_dir())
        };
        let cpuacct = find("cpuacct").ok_or_else(|| {
            fail("neither cgroup.controllers (v2) nor a cpuacct hierarchy (v1)".into())
        })?;
        let memory = find("memory").ok_or_else(|| fail("no memory hierarchy (v1)".into()))?;
        let driver = if memory.join("docker").is_dir() {
            Driver::Cgroupfs
        } else if memory.join("system.slice").is_dir() {
            Driver::Systemd
        } else {
            Driver::Cgroupfs
        };
        Ok(Self {
            hierarchy: Hierarchy::V1 {
                cpu: find("cpu"),
                cpuacct,
                memory,
                blkio: find("blkio"),
                pids: find("pids"),
            },
            driver,
        })
    }

    /// `v1` or `v2`, for logs.
    pub fn version(&self) -> &'static str {
        match self.hierarchy {
            Hierarchy::V1 { .. } => "v1",
            Hierarchy::V2 { .. } => "v2",
        }
    }

    /// The directory in which the existence of a container's cgroup is checked.
    fn probe_root(&self) -> &Path {
        match &self.hierarchy {
            Hierarchy::V1 { memory, .. } => memory,
            Hierarchy::V2 { root } => root,
        }
    }
}

/// A container's cgroup directories, relative to each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    /// Relative path per v1 controller (or the single v2 path under the key `""`).
    rel: HashMap<String, String>,
    pid: Option<u32>,
    used: Instant,
}

impl Resolved {
    fn rel(&self, controller: &str) -> Option<&str> {
        self.rel
            .get(controller)
            .or_else(|| self.rel.get(""))
            .map(String::as_str)
    }
}

/// Reads container usage from the cgroup filesystem; see the module docs.
#[derive(Debug)]
pub struct CgroupReader {
    layout: Layout,
    procfs: PathBuf,
    online_cpus: Option<u32>,
    paths: Mutex<HashMap<String, Resolved>>,
}

/// Builds the fast path `mode` asks for: `None` for `off`, and for `auto` when the cgroup
/// filesystem is not readable (the Engine API is used instead). `on` fails when it is not.
pub fn fast_path(
    mode: CgroupMode,
    root: &Path,
    procfs: &Path,
) -> Result<Option<Arc<dyn UsageReader>>, CgroupError> {
    if mode == CgroupMode::Off {
        info!("cgroup reader disabled, reading usage through the engine api");
        return Ok(None);
    }
    match CgroupReader::new(root, procfs) {
        Ok(reader) => {
            info!(
                root = %root.display(),
                version = reader.layout.version(),
                driver = ?reader.layout.driver,
                "reading container usage from cgroups"
            );
            Ok(Some(Arc::new(reader)))
        }
        Err(e) if mode == CgroupMode::Auto => {
            warn!(error = %e, "cgroup filesystem not usable, reading usage through the engine api");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl CgroupReader {
    /// Detects the layout under `root`; `procfs` is where the host's `/proc` is mounted.
    pub fn new(root: &Path, procfs: &Path) -> Result<Self, CgroupError> {
        let layout = Layout::detect(root)?;
        Ok(Self::with_layout(layout, procfs))
    }

    /// A reader over an already detected layout.
    pub fn with_layout(layout: Layout, procfs: &Path) -> Self {
        let online_cpus = std::fs::read_to_string(procfs.join("stat"))
            .ok()
            .map(|s| count_cpus(&s))
            .filter(|n| *n > 0);
        Self {
            layout,
            procfs: procfs.to_path_buf(),
            online_cpus,
            paths: Mutex::new(HashMap::new()),
        }
    }

    /// The layout found at start.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Reads one sample of a running container, or says why it cannot.
    pub fn read_container(&self, meta: &ContainerMeta) -> Result<ContainerUsage, CgroupError> {
        let read_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let resolved = self.resolve(meta)?;
        let result = match &self.layout.hierarchy {
            Hierarchy::V1 {
                cpu,
                cpuacct,
                memory,
                blkio,
                pids,
            } => {
                let dir = |base: &Path, controller: &str| {
                    resolved.rel(controller).map(|rel| base.join(rel))
                };
                let cpuacct_dir = dir(cpuacct, "cpuacct");
                let memory_dir = dir(memory, "memory");
                let cpu_dir = cpu.as_deref().and_then(|b| dir(b, "cpu"));
                let blkio_dir = blkio.as_deref().and_then(|b| dir(b, "blkio"));
                let pids_dir = pids.as_deref().and_then(|b| dir(b, "pids"));
                match (cpuacct_dir, memory_dir) {
                    (Some(c), Some(m)) => self.read_v1(
                        meta,
                        &c,
                        &m,
                        cpu_dir.as_deref(),
                        blkio_dir.as_deref(),
                        pids_dir.as_deref(),
                    ),
                    _ => Err(CgroupError::NotFound {
                        id: meta.id.clone(),
                    }),
                }
            }
            Hierarchy::V2 { root } => match resolved.rel("") {
                Some(rel) => self.read_v2(meta, &root.join(rel)),
                None => Err(CgroupError::NotFound {
                    id: meta.id.clone(),
                }),
            },
        };
        let mut usage = match result {
            Ok(u) => u,
            Err(e) => {
                // The directory may have moved (restart under another parent): look again
                // next time.
                self.paths
                    .lock()
                    .expect("cgroup paths lock poisoned")
                    .remove(&meta.id);
                return Err(e);
            }
        };
        usage.read_at = read_at;
        usage.cpu.online_cpus = self.online_cpus;
        usage.networks = self.read_networks(meta)?;
        usage.source = Some(UsageSource::Cgroup);
        usage.pids_limit = usage.pids_limit.or(meta.pids_limit);
        Ok(usage)
    }

    fn read_v1(
        &self,
        meta: &ContainerMeta,
        cpuacct: &Path,
        memory: &Path,
        cpu: Option<&Path>,
        blkio: Option<&Path>,
        pids: Option<&Path>,
    ) -> Result<ContainerUsage, CgroupError> {
        let mut usage = ContainerUsage::default();

        // cpuacct.stat counts USER_HZ ticks; the engine scales them to nanoseconds.
        let total_ns = read_u64(&cpuacct.join("cpuacct.usage"))?;
        let ticks = read_keyed(&cpuacct.join("cpuacct.stat"))?;
        let tick_ns = 1_000_000_000 / USER_HZ;
        usage.cpu = CpuUsage {
            total_ns,
            user_ns: ticks.get("user").copied().unwrap_or(0) * tick_ns,
            system_ns: ticks.get("system").copied().unwrap_or(0) * tick_ns,
            ..Default::default()
        };
        if let Some(cpu) = cpu {
            let stat = read_keyed(&cpu.join("cpu.stat"))?;
            usage.cpu.periods = stat.get("nr_periods").copied().unwrap_or(0);
            usage.cpu.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
            usage.cpu.throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);
        }

        let used = read_u64(&memory.join("memory.usage_in_bytes"))?;
        let stat = read_keyed(&memory.join("memory.stat"))?;
        let failcnt = read_u64(&memory.join("memory.failcnt")).ok();
        let limit = read_limit(&memory.join("memory.limit_in_bytes"))?;
        usage.memory = memory_from_stat(used, &stat, failcnt, limit, meta);
        // `oom_kill` in memory.oom_control exists since Linux 4.13.
        if let Ok(oom) = read_keyed(&memory.join("memory.oom_control")) {
            usage.memory.oom_kills = oom.get("oom_kill").copied();
        }

        if let Some(blkio) = blkio {
            usage.blkio = read_blkio_v1(blkio)?;
        }
        if let Some(pids) = pids {
            usage.pids_current = Some(read_u64(&pids.join("pids.current"))?);
            usage.pids_limit = read_limit(&pids.join("pids.max"))?;
        }
        Ok(usage)
    }

    fn read_v2(&self, meta: &ContainerMeta, dir: &Path) -> Result<ContainerUsage, CgroupError> {
        let mut usage = ContainerUsage::default();

        let stat = read_keyed(&dir.join("cpu.stat"))?;
        let us = |k: &str| stat.get(k).copied().unwrap_or(0) * 1000;
        usage.cpu = CpuUsage {
            total_ns: us("usage_usec"),
            user_ns: us("user_usec"),
            system_ns: us("system_usec"),
            online_cpus: None,
            periods: stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_ns: us("throttled_usec"),
        };

        let used = read_u64(&dir.join("memory.current"))?;
        let mstat = read_keyed(&dir.join("memory.stat"))?;
        let events = read_keyed(&dir.join("memory.events")).ok();
        let limit = read_limit(&dir.join("memory.max"))?;
        let failcnt = events.as_ref().and_then(|e| e.get("max").copied());
        usage.memory = memory_from_stat(used, &mstat, failcnt, limit, meta);
        if let Some(events) = &events {
            usage.memory.oom_kills = events.get("oom_kill").copied();
        }

        // io.stat is absent when the io controller is not enabled for the subtree.
        match read_file(&dir.join("io.stat")) {
            Ok((path, text)) => usage.blkio = parse_io_stat(&path, &text)?,
            Err(CgroupError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match read_u64(&dir.join("pids.current")) {
            Ok(n) => {
                usage.pids_current = Some(n);
                usage.pids_limit = read_limit(&dir.join("pids.max"))?;
            }
            Err(CgroupError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(usage)
    }

    fn read_networks(&self, meta: &ContainerMeta) -> Result<Vec<NetworkUsage>, CgroupError> {
        if !meta.has_own_network() {
            return Ok(Vec::new());
        }
        let pid = meta.pid.ok_or_else(|| CgroupError::NotFound {
            id: meta.id.clone(),
        })?;
        let (path, text) = read_file(&self.procfs.join(pid.to_string()).join("net/dev"))?;
        parse_net_dev(&path, &text)
    }

    /// The cached directories of `meta`, looked up when missing or when the init pid changed.
    fn resolve(&self, meta: &ContainerMeta) -> Result<Resolved, CgroupError> {
        let now = Instant::now();
        {
            let mut paths = self.paths.lock().expect("cgroup paths lock poisoned");
            if let Some(r) = paths.get_mut(&meta.id).filter(|r| r.pid == meta.pid) {
                r.used = now;
                return Ok(r.clone());
            }
        }
        let rel = self
            .lookup_proc(meta)
            .or_else(|| self.lookup_layout(meta))
            .ok_or_else(|| CgroupError::NotFound {
                id: meta.id.clone(),
            })?;
        debug!(container = %meta.name, paths = ?rel, "cgroup directory found");
        let resolved = Resolved {
            rel,
            pid: meta.pid,
            used: now,
        };
        let mut paths = self.paths.lock().expect("cgroup paths lock poisoned");
        paths.retain(|_, r| now.duration_since(r.used) < PATH_TTL);
        paths.insert(meta.id.clone(), resolved.clone());
        Ok(resolved)
    }

    /// Paths from `/proc/<pid>/cgroup`, if they name existing directories that belong to the
    /// container. Paths with `..` (the reader runs in another cgroup namespace) are not used.
    fn lookup_proc(&self, meta: &ContainerMeta) -> Option<HashMap<String, String>> {
        let pid = meta.pid?;
        let text =
            std::fs::read_to_string(self.procfs.join(pid.to_string()).join("cgroup")).ok()?;
        let lines = parse_proc_cgroup(&text);
        let usable = |p: &str| {
            let rel = p.trim_start_matches('/');
            (!rel.is_empty() && !rel.split('/').any(|c| c == "..") && rel.contains(&meta.id))
                .then(|| rel.to_string())
        };
        let mut rel = HashMap::new();
        match &self.layout.hierarchy {
            Hierarchy::V1 { .. } => {
                for (controllers, path) in &lines {
                    let Some(p) = usable(path) else { continue };
                    for c in controllers {
                        if matches!(c.as_str(), "cpu" | "cpuacct" | "memory" | "blkio" | "pids") {
                            rel.insert(c.clone(), p.clone());
                        }
                    }
                }
                rel.get("memory")?;
                rel.get("cpuacct")?;
            }
            Hierarchy::V2 { .. } => {
                let (_, path) = lines.iter().find(|(c, _)| c.is_empty())?;
                rel.insert(String::new(), usable(path)?);
            }
        }
        let probe = rel.get("memory").or_else(|| rel.get(""))?;
        self.layout.probe_root().join(probe).is_dir().then_some(rel)
    }

    /// The paths the engine would have chosen, preferred driver first.
    fn lookup_layout(&self, meta: &ContainerMeta) -> Option<HashMap<String, String>> {
        let parent = meta
            .inspect
            .host_config
            .as_ref()
            .and_then(|h| h.cgroup_parent.as_deref())
            .unwrap_or("");
        let order = match self.layout.driver {
            Driver::Cgroupfs => [Driver::Cgroupfs, Driver::Systemd],
            Driver::Systemd => [Driver::Systemd, Driver::Cgroupfs],
        };
        order
            .into_iter()
            .filter_map(|d| candidate(d, parent, &meta.id))
            .find(|rel| self.layout.probe_root().join(rel).is_dir())
            .map(|rel| HashMap::from([(String::new(), rel)]))
    }
}

impl UsageReader for CgroupReader {
    fn read(&self, meta: &ContainerMeta) -> Option<ContainerUsage> {
        match self.read_container(meta) {
            Ok(u) => Some(u),
            Err(e) => {
                debug!(container = %meta.name, error = %e, "cgroup read failed, using the engine api");
                None
            }
        }
    }
}

/// The cgroup path, relative to a hierarchy, that `driver` gives container `id` under
/// `parent` (`HostConfig.CgroupParent`, empty for the default).
///
/// cgroupfs joins the parent (default `/docker`) and the id. systemd places the scope
/// `docker-<id>.scope` in a slice (default `system.slice`), where a slice name such as
/// `a-b.slice` lives at `a.slice/a-b.slice` (systemd.slice(5)). With the systemd driver a
/// parent that is not a slice is rejected by the engine, so there is no candidate.
pub fn candidate(driver: Driver, parent: &str, id: &str) -> Option<String> {
    match driver {
        Driver::Cgroupfs => {
            let parent = parent.trim_matches('/');
            let parent = if parent.is_empty() { "docker" } else { parent };
            Some(format!("{parent}/{id}"))
        }
        Driver::Systemd => {
            let slice = if parent.is_empty() {
                "system.slice"
            } else {
                parent
            };
            let scope = format!("docker-{id}.scope");
            match expand_slice(slice)? {
                dir if dir.is_empty() => Some(scope),
                dir => Some(format!("{dir}/{scope}")),
            }
        }
    }
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root (empty).
fn expand_slice(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some(String::new());
    }
    if name.is_empty() {
        return None;
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") || name.contains('/') {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Some(path)
}

/// Number of `cpuN` lines in `/proc/stat`: the online CPUs, as the engine counts them.
fn count_cpus(stat: &str) -> u32 {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32
}

fn read_file(path: &Path) -> Result<(PathBuf, String), CgroupError> {
    std::fs::read_to_string(path)
        .map(|t| (path.to_path_buf(), t))
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let (path, text) = read_file(path)?;
    parse_u64(&path, &text)
}

fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let (path, text) = read_file(path)?;
    parse_limit(&path, &text)
}

fn read_keyed(path: &Path) -> Result<HashMap<String, u64>, CgroupError> {
    let (path, text) = read_file(path)?;
    parse_keyed(&path, &text)
}

/// A file holding one number.
pub fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let value = text.trim();
    value.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        line: 1,
        field: "value",
        value: value.to_string(),
    })
}

/// A limit file: a number, or `max` for none. Values at the v1 "no limit" sentinel
/// (around 2^63) count as none too.
pub fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    if text.trim() == "max" {
        return Ok(None);
    }
    parse_u64(path, text).map(|v| Some(v).filter(|v| *v < UNLIMITED))
}

/// A flat keyed file (`memory.stat`, `cpu.stat`, `cpuacct.stat`, `memory.events`,
/// `memory.oom_control`): one `key value` pair per line.
pub fn parse_keyed(path: &Path, text: &str) -> Result<HashMap<String, u64>, CgroupError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(CgroupError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                field: "key value pair",
                value: line.to_string(),
            });
        };
        let value = value.parse().map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            field: "value",
            value: value.to_string(),
        })?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Block I/O on v1 from the throttle counters, which the engine reports too. (The CFQ and
/// BFQ scheduler counters are left out: the engine never reads BFQ's, and CFQ is gone since
/// Linux 5.0.) Recent kernels only count I/O to devices that carry a throttle rule.
fn read_blkio_v1(dir: &Path) -> Result<BlkioUsage, CgroupError> {
    let (path, text) = read_file(&dir.join("blkio.throttle.io_serviced_recursive"))?;
    let (read_ops, write_ops) = parse_blkio_v1(&path, &text)?.unwrap_or((0, 0));
    let (path, text) = read_file(&dir.join("blkio.throttle.io_service_bytes_recursive"))?;
    let (read_bytes, write_bytes) = parse_blkio_v1(&path, &text)?.unwrap_or((0, 0));
    Ok(BlkioUsage {
        read_bytes,
        write_bytes,
        read_ops,
        write_ops,
    })
}

/// A v1 blkio counter file (`8:0 Read 4096` lines and a `Total` line): the Read and Write
/// sums over devices, or `None` when it lists no device.
pub fn parse_blkio_v1(path: &Path, text: &str) -> Result<Option<(u64, u64)>, CgroupError> {
    let (mut read, mut write, mut devices) = (0u64, 0u64, 0usize);
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let (op, value) = match fields.as_slice() {
            [] | ["Total", _] => continue,
            [_device, op, value] => (*op, *value),
            _ => {
                return Err(CgroupError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    field: "device op value",
                    value: line.to_string(),
                });
            }
        };
        let value: u64 = value.parse().map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            field: "value",
            value: value.to_string(),
        })?;
        devices += 1;
        match op {
            "Read" => read += value,
            "Write" => write += value,
            _ => {}
        }
    }
    Ok((devices > 0).then_some((read, write)))
}

/// v2 `io.stat`: `8:0 rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per device.
pub fn parse_io_stat(path: &Path, text: &str) -> Result<BlkioUsage, CgroupError> {
    let mut out = BlkioUsage::default();
    for (i, line) in text.lines().enumerate() {
        for pair in line.split_ascii_whitespace().skip(1) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match key {
                "rbytes" => &mut out.read_bytes,
                "wbytes" => &mut out.write_bytes,
                "rios" => &mut out.read_ops,
                "wios" => &mut out.write_ops,
                _ => continue,
            };
            *slot += value.parse::<u64>().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                field: "io.stat value",
                value: pair.to_string(),
            })?;
        }
    }
    Ok(out)
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: 16 counters` per interface. Loopback
/// and the kernel's fallback tunnel devices are left out, as the engine does.
pub fn parse_net_dev(path: &Path, text: &str) -> Result<Vec<NetworkUsage>, CgroupError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if IGNORED_INTERFACES.contains(&name) {
            continue;
        }
        let values: Vec<u64> = counters
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                field: "interface counters",
                value: line.to_string(),
            })?;
        if values.len() < 16 {
            return Err(CgroupError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                field: "interface counters",
                value: line.to_string(),
            });
        }
        out.push(NetworkUsage {
            interface: name.to_string(),
            rx_bytes: values[0],
            rx_packets: values[1],
            rx_errors: values[2],
            rx_dropped: values[3],
            tx_bytes: values[8],
            tx_packets: values[9],
            tx_errors: values[10],
            tx_dropped: values[11],
        });
    }
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    Ok(out)
}

/// `/proc/<pid>/cgroup`: `id:controllers:path` lines, as (controller list, path). The v2
/// line has an empty controller list; `name=systemd` style entries are kept as they are.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let list = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((list, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use bollard::models::{ContainerInspectResponse, ContainerState as ApiState, HostConfig};

    use crate::collector::container::meta_from_inspect;
    use crate::model::MemoryUsage;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    fn meta(id: &str, pid: i64, parent: &str, network: &str, memory: i64) -> ContainerMeta {
        meta_from_inspect(ContainerInspectResponse {
            id: Some(id.into()),
            name: Some(format!("/fx-{}", &id[..4])),
            state: Some(ApiState {
                status: Some(bollard::models::ContainerStateStatusEnum::RUNNING),
                pid: Some(pid),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                cgroup_parent: Some(parent.into()).filter(|p: &String| !p.is_empty()),
                network_mode: Some(network.into()),
                memory: Some(memory),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn reader(name: &str) -> CgroupReader {
        let root = fixture(name);
        CgroupReader::new(&root.join("sys"), &root.join("proc")).unwrap()
    }

    const ID_A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
    const ID_B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
    const ID_C: &str = "cccc000000000000000000000000000000000000000000000000000000000003";

    #[test]
    fn v1_cgroupfs_exact_values() {
        let r = reader("v1-cgroupfs");
        assert_eq!(r.layout().driver, Driver::Cgroupfs);
        assert!(matches!(
            r.layout().hierarchy,
            Hierarchy::V1 { cpu: Some(_), .. }
        ));
        let m = meta(ID_A, 4242, "", "bridge", 268_435_456);
        let u = r.read_container(&m).unwrap();
        assert_eq!(u.source, Some(UsageSource::Cgroup));
        assert_eq!(
            u.cpu,
            CpuUsage {
                total_ns: 12_345_678_901,
                user_ns: 9_870_000_000,
                system_ns: 2_100_000_000,
                online_cpus: Some(2),
                periods: 1500,
                throttled_periods: 420,
                throttled_ns: 31_000_000_000,
            }
        );
        assert_eq!(
            u.memory,
            MemoryUsage {
                usage_bytes: 104_857_600,
                // usage minus total_inactive_file
                working_set_bytes: 104_857_600 - 8_388_608,
                cache_bytes: 20_971_520,
                rss_bytes: 78_643_200,
                failcnt: Some(7),
                oom_kills: Some(1),
                limit_bytes: Some(268_435_456),
            }
        );
        // Summed over devices; Total lines skipped.
        assert_eq!(
            u.blkio,
            BlkioUsage {
                read_bytes: 4096 + 1024,
                write_bytes: 1_073_741_824,
                read_ops: 1 + 1,
                write_ops: 256,
            }
        );
        assert_eq!(u.pids_current, Some(3));
        assert_eq!(u.pids_limit, Some(100));
        assert_eq!(u.networks.len(), 1, "lo and tunl0 are left out");
        assert_eq!(
            u.networks[0],
            NetworkUsage {
                interface: "eth0".into(),
                rx_bytes: 1_234_567,
                rx_packets: 890,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 7_654_321,
                tx_packets: 543,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
    }

    #[test]
    fn v1_unlimited_container_has_no_limits() {
        let r = reader("v1-cgroupfs");
        // Found through /proc/<pid>/cgroup only: a daemon-wide cgroup parent.
        let m = meta(ID_B, 4343, "", "host", 0);
        let u = r.read_container(&m).unwrap();
        assert_eq!(u.memory.limit_bytes, None);
        assert_eq!(u.pids_limit, None);
        assert_eq!(u.memory.usage_bytes, 2_097_152);
        assert_eq!(u.memory.working_set_bytes, 2_097_152, "no inactive_file");
        assert!(
            u.networks.is_empty(),
            "host network has no counters of its own"
        );
        assert_eq!(u.blkio, BlkioUsage::default());
        assert_eq!(u.cpu.total_ns, 5_000);
    }

    #[test]
    fn v1_systemd_comounted_with_custom_slice() {
        let r = reader("v1-systemd");
        assert_eq!(r.layout().driver, Driver::Systemd);
        let Hierarchy::V1 { cpu, cpuacct, .. } = &r.layout().hierarchy else {
            panic!("v1 expected")
        };
        assert!(cpuacct.ends_with("cpu,cpuacct"));
        assert_eq!(cpu.as_deref(), Some(cpuacct.as_path()));
        // No pid: the path must come from the parent slice.
        let m = meta(ID_C, 0, "ci-jobs.slice", "none", 0);
        let u = r.read_container(&m).unwrap();
        assert_eq!(u.cpu.total_ns, 777_000_000);
        assert_eq!(u.cpu.user_ns, 500_000_000);
        assert_eq!(u.cpu.system_ns, 200_000_000);
        assert_eq!(u.cpu.periods, 10);
        assert_eq!(u.memory.usage_bytes, 10_485_760);
        assert_eq!(u.memory.failcnt, Some(0));
        // The throttle counters, not the BFQ scheduler's.
        assert_eq!(
            u.blkio,
            BlkioUsage {
                read_bytes: 8192,
                write_bytes: 16384,
                read_ops: 2,
                write_ops: 4,
            }
        );
        assert_eq!(u.pids_current, Some(1));
        assert!(u.networks.is_empty());
    }

    #[test]
    fn v2_cgroupfs_exact_values() {
        let r = reader("v2-cgroupfs");
        assert_eq!(r.layout().version(), "v2");
        assert_eq!(r.layout().driver, Driver::Cgroupfs);
        let m = meta(ID_A, 5151, "", "bridge", 536_870_912);
        let u = r.read_container(&m).unwrap();
        assert_eq!(
            u.cpu,
            CpuUsage {
                total_ns: 3_000_123_000,
                user_ns: 2_000_100_000,
                system_ns: 1_000_023_000,
                online_cpus: Some(4),
                periods: 600,
                throttled_periods: 30,
                throttled_ns: 1_500_000_000,
            }
        );
        assert_eq!(
            u.memory,
            MemoryUsage {
                usage_bytes: 209_715_200,
                working_set_bytes: 209_715_200 - 31_457_280,
                cache_bytes: 52_428_800,
                rss_bytes: 146_800_640,
                failcnt: Some(12),
                oom_kills: Some(2),
                // memory.max is below the configured limit: the kernel's figure wins.
                limit_bytes: Some(268_435_456),
            }
        );
        assert_eq!(
            u.blkio,
            BlkioUsage {
                read_bytes: 1_048_576 + 4096,
                write_bytes: 2_097_152,
                read_ops: 32 + 1,
                write_ops: 64,
            }
        );
        assert_eq!(u.pids_current, Some(5));
        assert_eq!(u.pids_limit, None);
        assert_eq!(u.net_rx_bytes(), 1000 + 10);
        assert_eq!(
            u.networks
                .iter()
                .map(|n| n.interface.as_str())
                .collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
    }

    #[test]
    fn v2_cgroupfs_custom_parent_without_pid() {
        let r = reader("v2-cgroupfs");
        let m = meta(ID_B, 0, "/ci/jobs", "none", 0);
        let u = r.read_container(&m).unwrap();
        assert_eq!(u.cpu.total_ns, 42_000);
        assert_eq!(u.memory.limit_bytes, None, "no configured limit");
        assert_eq!(u.memory.failcnt, Some(0));
        assert_eq!(u.memory.oom_kills, Some(0));
        assert_eq!(u.blkio, BlkioUsage::default(), "io.stat empty");
        assert_eq!(u.pids_current, None, "pids controller not enabled");
    }

    #[test]
    fn v2_systemd_exact_values() {
        let r = reader("v2-systemd");
        assert_eq!(r.layout().driver, Driver::Systemd);
        let m = meta(ID_C, 0, "", "none", 0);
        let u = r.read_container(&m).unwrap();
        assert_eq!(
            u.cpu,
            CpuUsage {
                total_ns: 150_000_000,
                user_ns: 100_000_000,
                system_ns: 50_000_000,
                online_cpus: Some(2),
                periods: 0,
                throttled_periods: 0,
                throttled_ns: 0,
            }
        );
        assert_eq!(u.memory.usage_bytes, 4_194_304);
        assert_eq!(u.memory.working_set_bytes, 4_194_304 - 1_048_576);
        assert_eq!(u.memory.limit_bytes, None);
        assert_eq!(u.pids_current, Some(2));
        assert_eq!(u.pids_limit, Some(50));
    }

    #[test]
    fn unknown_container_is_not_found() {
        let r = reader("v2-systemd");
        let m = meta(ID_A, 0, "", "none", 0);
        assert!(matches!(
            r.read_container(&m),
            Err(CgroupError::NotFound { .. })
        ));
        assert!(UsageReader::read(&r, &m).is_none());
    }

    #[test]
    fn broken_files_name_file_line_and_field() {
        let r = reader("v1-broken");
        let m = meta(ID_A, 0, "", "none", 0);
        let err = r.read_container(&m).unwrap_err().to_string();
        assert!(
            err.contains("memory.stat") && err.contains("line 2"),
            "{err}"
        );
        assert!(err.contains("\"lots\""), "{err}");
    }

    #[test]
    fn detect_rejects_an_empty_root() {
        let dir = std::env::temp_dir().join(format!("dockwatch-cg-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Layout::detect(&dir).unwrap_err().to_string();
        assert!(err.contains("cpuacct"), "{err}");
        let missing = Layout::detect(&dir.join("nope")).unwrap_err().to_string();
        assert!(missing.contains("cannot list"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn candidates_per_driver() {
        assert_eq!(
            candidate(Driver::Cgroupfs, "", "x").as_deref(),
            Some("docker/x")
        );
        assert_eq!(
            candidate(Driver::Cgroupfs, "/a/b/", "x").as_deref(),
            Some("a/b/x")
        );
        assert_eq!(
            candidate(Driver::Systemd, "", "x").as_deref(),
            Some("system.slice/docker-x.scope")
        );
        assert_eq!(
            candidate(Driver::Systemd, "a-b-c.slice", "x").as_deref(),
            Some("a.slice/a-b.slice/a-b-c.slice/docker-x.scope")
        );
        assert_eq!(candidate(Driver::Systemd, "/not/a/slice", "x"), None);
    }

    #[test]
    fn parsers_reject_garbage() {
        let p = Path::new("f");
        assert!(parse_u64(p, "12\n").is_ok());
        assert!(parse_u64(p, "twelve").is_err());
        assert_eq!(parse_limit(p, "max\n").unwrap(), None);
        assert_eq!(parse_limit(p, "9223372036854771712\n").unwrap(), None);
        assert_eq!(parse_limit(p, "1024\n").unwrap(), Some(1024));
        assert!(parse_blkio_v1(p, "8:0 Read\n").is_err());
        assert_eq!(parse_blkio_v1(p, "Total 0\n").unwrap(), None);
        assert!(parse_io_stat(p, "8:0 rbytes=x\n").is_err());
        assert!(parse_net_dev(p, "h\nh\n eth0: 1 2 3\n").is_err());
        assert_eq!(
            parse_proc_cgroup("0::/docker/x\n4:cpu,cpuacct:/docker/x\n"),
            vec![
                (vec![], "/docker/x".to_string()),
                (
                    vec!["cpu".to_string(), "cpuacct".to_string()],
                    "/docker/x".to_string()
                ),
            ]
        );
        assert_eq!(count_cpus("cpu  1 2\ncpu0 1\ncpu1 2\nintr 5\n"), 2);
    }
}
