//! Parsers for the `/proc` files the host collector reads.
//!
//! Each parser is a pure function over the file's text, so tests run on captured fixtures
//! (`tests/fixtures/proc/`). A field that is present but not a number fails the whole file
//! with a [`ParseError`] naming the line and field: a changed format must not turn into wrong
//! figures. Lines of a shape the parser does not know (short or extra lines) are skipped.
//!
//! Formats: `Documentation/filesystems/proc.rst` and `Documentation/admin-guide/iostats.rst`
//! in the kernel tree, proc(5) for `mountinfo`.

use std::str::FromStr;

/// Clock ticks per second of the counters in `/proc/stat` (`USER_HZ`, 100 on every Linux
/// architecture that matters; the kernel converts to it for userspace).
pub const USER_HZ: f64 = 100.0;

/// Bytes per sector in `/proc/diskstats`: always 512, whatever the device's sector size.
pub const SECTOR_BYTES: u64 = 512;

/// A field that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: field {field}: invalid value {value:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// Name of the field.
    pub field: &'static str,
    /// What was there (empty when the field was missing).
    pub value: String,
}

fn num<T: FromStr>(value: Option<&str>, line: usize, field: &'static str) -> Result<T, ParseError> {
    let value = value.unwrap_or("");
    value.parse().map_err(|_| ParseError {
        line,
        field,
        value: value.to_string(),
    })
}

/// Cumulative time one CPU spent in each mode, in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// CPU number (the `N` of `cpuN`).
    pub cpu: u32,
    /// Normal processes in user mode (includes guest time).
    pub user: u64,
    /// Niced processes in user mode (includes guest_nice time).
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle while waiting for I/O.
    pub iowait: u64,
    /// Servicing hardware interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTicks {
    /// Mode names, in the order of [`CpuTicks::modes`].
    pub const MODES: [&'static str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];

    /// Ticks per mode, in the order of [`CpuTicks::MODES`].
    pub fn modes(&self) -> [u64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }
}

/// What dockwatch reads from `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// One entry per online CPU (`cpuN` lines; the aggregate `cpu` line is left out).
    pub cpus: Vec<CpuTicks>,
    /// `btime`: boot time, Unix seconds.
    pub boot_time_seconds: Option<u64>,
    /// `ctxt`: context switches since boot.
    pub context_switches: Option<u64>,
    /// `processes`: forks since boot.
    pub forks: Option<u64>,
    /// `procs_running`: runnable tasks now.
    pub procs_running: Option<u64>,
    /// `procs_blocked`: tasks blocked on I/O now.
    pub procs_blocked: Option<u64>,
}

/// Parses `/proc/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    const FIELDS: [&str; 8] = CpuTicks::MODES;
    let mut stat = Stat::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(id) = key.strip_prefix("cpu") {
            if id.is_empty() {
                continue;
            }
            let cpu = num(Some(id), n, "cpu")?;
            let mut ticks = [0u64; 8];
            for (slot, field) in ticks.iter_mut().zip(FIELDS) {
                // Kernels before 2.6.11 stop after irq/softirq; the rest stays 0.
                match fields.next() {
                    Some(v) => *slot = num(Some(v), n, field)?,
                    None => break,
                }
            }
            let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks;
            stat.cpus.push(CpuTicks {
                cpu,
                user,
                nice,
                system,
                idle,
                iowait,
                irq,
                softirq,
                steal,
            });
            continue;
        }
        let (slot, field) = match key {
            "btime" => (&mut stat.boot_time_seconds, "btime"),
            "ctxt" => (&mut stat.context_switches, "ctxt"),
            "processes" => (&mut stat.forks, "processes"),
            "procs_running" => (&mut stat.procs_running, "procs_running"),
            "procs_blocked" => (&mut stat.procs_blocked, "procs_blocked"),
            _ => continue,
        };
        *slot = Some(num(fields.next(), n, field)?);
    }
    Ok(stat)
}

/// Memory figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable`; on kernels without it (before 3.14), free + buffers + cached.
    pub available: u64,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached`: page cache, without `SwapCached` and without reclaimable slab.
    pub cached: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

/// Parses `/proc/meminfo`; `MemTotal` must be there.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const KEYS: [&str; 7] = [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapTotal",
        "SwapFree",
    ];
    let mut values: [Option<u64>; 7] = [None; 7];
    for (i, line) in text.lines().enumerate() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(k) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let value: u64 = num(parts.next(), i + 1, KEYS[k])?;
        values[k] = Some(match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        });
    }
    let [
        total,
        free,
        available,
        buffers,
        cached,
        swap_total,
        swap_free,
    ] = values;
    let total = total.ok_or(ParseError {
        line: 0,
        field: "MemTotal",
        value: String::new(),
    })?;
    let (free, buffers, cached) = (free.unwrap_or(0), buffers.unwrap_or(0), cached.unwrap_or(0));
    Ok(MemInfo {
        total,
        free,
        available: available.unwrap_or(free + buffers + cached),
        buffers,
        cached,
        swap_total: swap_total.unwrap_or(0),
        swap_free: swap_free.unwrap_or(0),
    })
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    /// Last minute.
    pub load1: f64,
    /// Last 5 minutes.
    pub load5: f64,
    /// Last 15 minutes.
    pub load15: f64,
}

/// Parses `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut f = text.split_ascii_whitespace();
    Ok(LoadAvg {
        load1: num(f.next(), 1, "load1")?,
        load5: num(f.next(), 1, "load5")?,
        load15: num(f.next(), 1, "load15")?,
    })
}

/// Current frequency of each processor from `/proc/cpuinfo` (`cpu MHz`), as
/// `(processor, hertz)`. Architectures without a `cpu MHz` line give nothing.
pub fn parse_cpuinfo_mhz(text: &str) -> Result<Vec<(u32, u64)>, ParseError> {
    let mut out = Vec::new();
    let mut processor = None;
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => processor = Some(num::<u32>(Some(value), i + 1, "processor")?),
            "cpu MHz" => {
                let mhz: f64 = num(Some(value), i + 1, "cpu MHz")?;
                if let Some(p) = processor.take() {
                    out.push((p, (mhz * 1e6).round() as u64));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Cumulative I/O figures of one block device from `/proc/diskstats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Kernel device name (`sda`, `nvme0n1`, `dm-0`).
    pub device: String,
    /// Reads completed.
    pub reads_completed: u64,
    /// 512-byte sectors read.
    pub sectors_read: u64,
    /// Writes completed.
    pub writes_completed: u64,
    /// 512-byte sectors written.
    pub sectors_written: u64,
    /// Milliseconds the device had I/O in flight.
    pub io_time_ms: u64,
}

/// Parses `/proc/diskstats`; every device, filtering is [`disk_excluded`]'s job.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        // major minor name + at least 11 counters; the 4-counter partition lines of
        // kernels before 2.6.25 are skipped.
        if f.len() < 14 {
            continue;
        }
        let n = i + 1;
        out.push(DiskStats {
            device: f[2].to_string(),
            reads_completed: num(Some(f[3]), n, "reads completed")?,
            sectors_read: num(Some(f[5]), n, "sectors read")?,
            writes_completed: num(Some(f[7]), n, "writes completed")?,
            sectors_written: num(Some(f[9]), n, "sectors written")?,
            io_time_ms: num(Some(f[12]), n, "time doing I/O")?,
        });
    }
    Ok(out)
}

/// Whether a block device is left out of the disk metrics: RAM disks (`ram`, `zram`), loop
/// devices, floppies, and partitions of disks (`sda1`, `vdb2`, `xvda1`, `nvme0n1p1`,
/// `mmcblk0p1`), whose I/O is already counted on the whole disk. Device-mapper and md
/// devices are kept.
pub fn disk_excluded(name: &str) -> bool {
    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    for prefix in ["ram", "zram", "loop", "fd"] {
        if name.strip_prefix(prefix).is_some_and(digits) {
            return true;
        }
    }
    // (h|s|v|xv)d<letters><digits>
    for prefix in ["hd", "sd", "vd", "xvd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            if letters > 0 && digits(&rest[letters..]) {
                return true;
            }
        }
    }
    // nvme<n>n<n>p<n>, mmcblk<n>p<n>
    if let Some((disk, part)) = name.rsplit_once('p')
        && digits(part)
    {
        if let Some(rest) = disk.strip_prefix("nvme")
            && let Some((ctrl, ns)) = rest.split_once('n')
        {
            return digits(ctrl) && digits(ns);
        }
        if let Some(rest) = disk.strip_prefix("mmcblk") {
            return digits(rest);
        }
    }
    false
}

/// Counters of one network interface from `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name.
    pub interface: String,
    /// Bytes received.
    pub receive_bytes: u64,
    /// Packets received.
    pub receive_packets: u64,
    /// Receive errors.
    pub receive_errors: u64,
    /// Received packets dropped.
    pub receive_dropped: u64,
    /// Bytes sent.
    pub transmit_bytes: u64,
    /// Packets sent.
    pub transmit_packets: u64,
    /// Transmit errors.
    pub transmit_errors: u64,
    /// Packets dropped on transmit.
    pub transmit_dropped: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `iface: 8 receive and 8 transmit
/// counters`).
pub fn parse_net_dev(text: &str) -> Result<Vec<NetDev>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // Old kernels glue a long first counter to the colon, so split there first.
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains('|') {
            continue;
        }
        let n = i + 1;
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let at = |k: usize| f.get(k).copied();
        out.push(NetDev {
            interface: name.to_string(),
            receive_bytes: num(at(0), n, "receive bytes")?,
            receive_packets: num(at(1), n, "receive packets")?,
            receive_errors: num(at(2), n, "receive errs")?,
            receive_dropped: num(at(3), n, "receive drop")?,
            transmit_bytes: num(at(8), n, "transmit bytes")?,
            transmit_packets: num(at(9), n, "transmit packets")?,
            transmit_errors: num(at(10), n, "transmit errs")?,
            transmit_dropped: num(at(11), n, "transmit drop")?,
        });
    }
    Ok(out)
}

/// TCP socket states as `/proc/net/tcp` numbers them (`include/net/tcp_states.h`), with the
/// label value dockwatch exports.
pub const TCP_STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

/// Adds the sockets of `/proc/net/tcp` or `/proc/net/tcp6` to `counts`, indexed like
/// [`TCP_STATES`]. States outside 1–11 (`NEW_SYN_RECV`, never listed there) are ignored.
pub fn count_tcp_states(text: &str, counts: &mut [u64; 11]) -> Result<(), ParseError> {
    for (i, line) in text.lines().enumerate().skip(1) {
        let Some(st) = line.split_ascii_whitespace().nth(3) else {
            continue;
        };
        let state = u8::from_str_radix(st, 16).map_err(|_| ParseError {
            line: i + 1,
            field: "st",
            value: st.to_string(),
        })?;
        if let Some(c) = counts.get_mut(usize::from(state).wrapping_sub(1)) {
            *c += 1;
        }
    }
    Ok(())
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device number of the filesystem (`major:minor`); bind mounts share it.
    pub device_number: (u32, u32),
    /// Directory of the filesystem that is mounted here (`/` unless a bind mount of a
    /// subdirectory).
    pub root: String,
    /// Where it is mounted, unescaped.
    pub mount_point: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (`/dev/sda1`, `tmpfs`, `server:/export`), unescaped.
    pub source: String,
}

/// Parses `/proc/<pid>/mountinfo` (proc(5)):
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = line.split(' ').filter(|s| !s.is_empty()).collect();
        if f.is_empty() {
            continue;
        }
        let Some(dash) = f.iter().position(|s| *s == "-") else {
            return Err(ParseError {
                line: n,
                field: "separator",
                value: line.to_string(),
            });
        };
        if dash < 6 || f.len() < dash + 3 {
            return Err(ParseError {
                line: n,
                field: "fields",
                value: line.to_string(),
            });
        }
        let (major, minor) = f[2].split_once(':').ok_or_else(|| ParseError {
            line: n,
            field: "major:minor",
            value: f[2].to_string(),
        })?;
        out.push(Mount {
            device_number: (
                num(Some(major), n, "major:minor")?,
                num(Some(minor), n, "major:minor")?,
            ),
            root: unescape(f[3]),
            mount_point: unescape(f[4]),
            fstype: f[dash + 1].to_string(),
            source: unescape(f[dash + 2]),
        });
    }
    Ok(out)
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/");
        std::fs::read_to_string(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn stat_fixture() {
        let stat = parse_stat(&fixture("stat")).unwrap();
        assert_eq!(
            stat.cpus,
            vec![
                CpuTicks {
                    cpu: 0,
                    user: 50830,
                    nice: 10,
                    system: 3448,
                    idle: 48995,
                    iowait: 274,
                    irq: 3,
                    softirq: 40,
                    steal: 428,
                },
                CpuTicks {
                    cpu: 1,
                    user: 23355,
                    nice: 2,
                    system: 4651,
                    idle: 73697,
                    iowait: 948,
                    irq: 4,
                    softirq: 155,
                    steal: 417,
                },
            ]
        );
        assert_eq!(stat.boot_time_seconds, Some(1796301935));
        assert_eq!(stat.context_switches, Some(584041));
        assert_eq!(stat.forks, Some(13702));
        assert_eq!(stat.procs_running, Some(3));
        assert_eq!(stat.procs_blocked, Some(1));
    }

    #[test]
    fn stat_short_cpu_lines_and_bad_values() {
        let stat = parse_stat("cpu3 1 2 3 4\n").unwrap();
        assert_eq!(
            stat.cpus,
            vec![CpuTicks {
                cpu: 3,
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..CpuTicks::default()
            }]
        );
        assert_eq!(
            parse_stat("cpu 1 2 3 4\ncpu0 1 2 x 4\n").unwrap_err(),
            ParseError {
                line: 2,
                field: "system",
                value: "x".into()
            }
        );
        assert_eq!(
            parse_stat("btime\n").unwrap_err().to_string(),
            "line 1: field btime: invalid value \"\""
        );
    }

    #[test]
    fn meminfo_fixture() {
        let m = parse_meminfo(&fixture("meminfo")).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total: 24683664 * 1024,
                free: 17216624 * 1024,
                available: 23755404 * 1024,
                buffers: 34660 * 1024,
                cached: 6564968 * 1024,
                swap_total: 2097148 * 1024,
                swap_free: 1835004 * 1024,
            }
        );
    }

    #[test]
    fn meminfo_without_available_or_total() {
        let m = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 1 kB\nCached: 2 kB\n")
            .unwrap();
        assert_eq!(m.available, 13 * 1024);
        let err = parse_meminfo("MemFree: 10 kB\n").unwrap_err();
        assert_eq!(err.field, "MemTotal");
        let err = parse_meminfo("MemTotal: 1\nCached: lots kB\n").unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 2,
                field: "Cached",
                value: "lots".into()
            }
        );
    }

    #[test]
    fn loadavg_fixture() {
        let l = parse_loadavg(&fixture("loadavg")).unwrap();
        assert_eq!(
            l,
            LoadAvg {
                load1: 2.02,
                load5: 1.31,
                load15: 0.83
            }
        );
        assert_eq!(parse_loadavg("").unwrap_err().field, "load1");
    }

    #[test]
    fn cpuinfo_fixture() {
        assert_eq!(
            parse_cpuinfo_mhz(&fixture("cpuinfo")).unwrap(),
            vec![(0, 2_245_786_000), (1, 3_100_000_000)]
        );
        // arm64 has no cpu MHz line at all.
        assert_eq!(
            parse_cpuinfo_mhz("processor\t: 0\nBogoMIPS\t: 50.00\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn diskstats_fixture() {
        let disks = parse_diskstats(&fixture("diskstats")).unwrap();
        assert_eq!(disks.len(), 11);
        let vda = disks.iter().find(|d| d.device == "vda").unwrap();
        assert_eq!(
            *vda,
            DiskStats {
                device: "vda".into(),
                reads_completed: 83035,
                sectors_read: 6996874,
                writes_completed: 36120,
                sectors_written: 31124392,
                io_time_ms: 34940,
            }
        );
        let kept: Vec<&str> = disks
            .iter()
            .map(|d| d.device.as_str())
            .filter(|d| !disk_excluded(d))
            .collect();
        assert_eq!(kept, ["sda", "nvme0n1", "dm-0", "vda", "mmcblk0"]);
    }

    #[test]
    fn disk_exclusion_rules() {
        for name in [
            "ram0",
            "zram12",
            "loop7",
            "fd0",
            "sda1",
            "sdab12",
            "xvda1",
            "vdb3",
            "hda1",
            "nvme0n1p1",
            "nvme10n2p15",
            "mmcblk0p1",
        ] {
            assert!(disk_excluded(name), "{name}");
        }
        for name in [
            "sda", "sdab", "vda", "xvdf", "nvme0n1", "mmcblk0", "dm-0", "md127", "sr0", "ramdisk",
            "loop", "nbd0",
        ] {
            assert!(!disk_excluded(name), "{name}");
        }
    }

    #[test]
    fn net_dev_fixture() {
        let devs = parse_net_dev(&fixture("net/dev")).unwrap();
        let names: Vec<&str> = devs.iter().map(|d| d.interface.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "docker0", "veth224564a"]);
        assert_eq!(
            devs[1],
            NetDev {
                interface: "eth0".into(),
                receive_bytes: 337073610,
                receive_packets: 15447,
                receive_errors: 3,
                receive_dropped: 7,
                transmit_bytes: 988525,
                transmit_packets: 11264,
                transmit_errors: 1,
                transmit_dropped: 2,
            }
        );
    }

    #[test]
    fn net_dev_glued_counter_and_bad_value() {
        let text = "h1\nh2\n  eth1:4294967296 1 0 0 0 0 0 0 5 6 0 0 0 0 0 0\n";
        let devs = parse_net_dev(text).unwrap();
        assert_eq!(devs[0].receive_bytes, 4294967296);
        assert_eq!(devs[0].transmit_packets, 6);
        let err = parse_net_dev("h1\nh2\n  eth1: 1 2 3\n").unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 3,
                field: "receive drop",
                value: String::new()
            }
        );
    }

    #[test]
    fn tcp_fixture() {
        let mut counts = [0u64; 11];
        count_tcp_states(&fixture("net/tcp"), &mut counts).unwrap();
        count_tcp_states(&fixture("net/tcp6"), &mut counts).unwrap();
        let by_name: Vec<(&str, u64)> = TCP_STATES.iter().copied().zip(counts).collect();
        assert_eq!(
            by_name,
            [
                ("established", 3),
                ("syn_sent", 1),
                ("syn_recv", 0),
                ("fin_wait1", 0),
                ("fin_wait2", 0),
                ("time_wait", 2),
                ("close", 0),
                ("close_wait", 1),
                ("last_ack", 0),
                ("listen", 2),
                ("closing", 0),
            ]
        );
        let err = count_tcp_states("header\n 0: a b ZZ c\n", &mut counts).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.field, "st");
    }

    #[test]
    fn mountinfo_fixture() {
        let mounts = parse_mountinfo(&fixture("1/mountinfo")).unwrap();
        assert_eq!(mounts.len(), 16);
        assert_eq!(
            mounts[4],
            Mount {
                device_number: (254, 0),
                root: "/".into(),
                mount_point: "/".into(),
                fstype: "ext4".into(),
                source: "/dev/vda".into(),
            }
        );
        // Octal escapes in the mount point.
        assert_eq!(mounts[7].mount_point, "/mnt/my data");
        // Optional fields (shared:N) before the separator.
        assert_eq!(mounts[10].root, "/var/lib/docker");
        assert_eq!(mounts[14].source, "server:/export");
    }

    #[test]
    fn mountinfo_errors() {
        let err = parse_mountinfo("1 2 8:1 / /x rw shared:1 ext4 /dev/sda1 rw\n").unwrap_err();
        assert_eq!(err.field, "separator");
        let err = parse_mountinfo("1 2 8x1 / /x rw - ext4 /dev/sda1 rw\n").unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 1,
                field: "major:minor",
                value: "8x1".into()
            }
        );
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"/big\777"), r"/big\777");
    }
}
