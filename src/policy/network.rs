//! Network rules: published and exposed ports, and live connections to blocked addresses read
//! from the container's network namespace (`/proc/<pid>/net/{tcp,tcp6,udp,udp6}`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use async_trait::async_trait;

use crate::model::ContainerMeta;

use super::config::NetworkPolicy;
use super::rules::{Finding, Rule};

/// One published port: host side and container side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    /// Host port.
    pub host_port: u16,
    /// Host address it is bound to (`0.0.0.0` when empty).
    pub host_ip: String,
    /// Container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
}

fn split_port(key: &str) -> Option<(u16, String)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, proto.to_string()))
}

/// Published ports: the live bindings (`NetworkSettings.Ports`) of a running container, else
/// the requested ones (`HostConfig.PortBindings`) with a fixed host port.
pub fn published_ports(meta: &ContainerMeta) -> Vec<Published> {
    let live = meta
        .inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .filter(|p| !p.is_empty());
    let requested = meta
        .inspect
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.clone());
    let map = live.or(requested).unwrap_or_default();
    let mut out = BTreeSet::new();
    for (key, bindings) in map {
        let Some((container_port, proto)) = split_port(&key) else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let host_ip = b
                .host_ip
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            out.insert(Published {
                host_port,
                host_ip,
                container_port,
                proto: proto.clone(),
            });
        }
    }
    out.into_iter().collect()
}

/// Ports the image or `--expose` declares that no binding publishes.
pub fn exposed_unpublished(meta: &ContainerMeta, published: &[Published]) -> Vec<(u16, String)> {
    let exposed = meta
        .inspect
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.clone())
        .unwrap_or_default();
    let mut out: Vec<(u16, String)> = exposed
        .iter()
        .filter_map(|k| split_port(k))
        .filter(|(port, proto)| {
            !published
                .iter()
                .any(|p| p.container_port == *port && &p.proto == proto)
        })
        .collect();
    out.sort();
    out
}

/// `network_port` and `network_exposed_port`. The host port is judged: it is what the
/// outside world can reach.
pub fn check_ports(policy: &NetworkPolicy, meta: &ContainerMeta) -> Vec<Finding> {
    let Some(allowed) = &policy.allowed_ports else {
        return Vec::new();
    };
    let list = allowed
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let published = published_ports(meta);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &published {
        if allowed.contains(&p.host_port) || !seen.insert((p.host_port, p.proto.clone())) {
            continue;
        }
        out.push(Finding {
            policy: policy.name.clone(),
            rule: Rule::NetworkPort,
            severity: policy.severity(Rule::NetworkPort),
            mode: policy.mode,
            subject: format!("{}/{}", p.host_port, p.proto),
            message: format!(
                "host port {}/{} is published on {} (container port {}) and is not in allowed_ports [{list}]",
                p.host_port, p.proto, p.host_ip, p.container_port
            ),
        });
    }
    if policy.check_exposed {
        for (port, proto) in exposed_unpublished(meta, &published) {
            if allowed.contains(&port) {
                continue;
            }
            out.push(Finding {
                policy: policy.name.clone(),
                rule: Rule::NetworkExposedPort,
                severity: policy.severity(Rule::NetworkExposedPort),
                mode: policy.mode,
                subject: format!("{port}/{proto}"),
                message: format!(
                    "container port {port}/{proto} is exposed (not published) and is not in allowed_ports [{list}]"
                ),
            });
        }
    }
    out
}

/// One socket with a remote end, from a `/proc/net` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
}

/// Parses `0100007F:270F` (IPv4) or a 32-hex-digit IPv6 address with port. The kernel prints
/// each 32-bit word in host byte order.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => {
            let w = u32::from_str_radix(addr, 16).ok()?;
            IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one `/proc/net/{tcp,udp}[6]` table into sockets that have a remote end (TCP
/// listeners and unconnected UDP sockets are skipped).
pub fn parse_net_table(text: &str, proto: &'static str) -> Vec<Connection> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_), Some(local), Some(remote), Some(state)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if proto == "tcp" && state == "0A" {
            continue;
        }
        let (Some(local), Some(remote)) = (parse_hex_addr(local), parse_hex_addr(remote)) else {
            continue;
        };
        if remote.port() == 0 || remote.ip().is_unspecified() {
            continue;
        }
        out.push(Connection {
            proto,
            local,
            remote,
        });
    }
    out
}

/// The sockets of the network namespace `pid` lives in.
pub fn read_connections(procfs: &Path, pid: u32) -> std::io::Result<Vec<Connection>> {
    let dir = procfs.join(pid.to_string()).join("net");
    let mut out = Vec::new();
    let mut any = None;
    for (file, proto) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => {
                any = Some(());
                out.extend(parse_net_table(&text, proto));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if any.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no socket tables under {}", dir.display()),
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Addresses the blocked domains resolved to, address → domain.
pub type Resolved = HashMap<IpAddr, String>;

/// Turns a domain into addresses; injectable so tests need no DNS.
#[async_trait]
pub trait Resolver: Send + Sync + fmt::Debug {
    /// Every address of `domain`.
    async fn resolve(&self, domain: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver through `tokio::net::lookup_host`.
#[derive(Debug, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, domain: &str) -> std::io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((domain, 0)).await?;
        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }
}

/// `network_destination` over a container's connections.
pub fn check_destinations(
    policy: &NetworkPolicy,
    connections: &[Connection],
    resolved: &Resolved,
) -> Vec<Finding> {
    let mut out: BTreeMap<String, Finding> = BTreeMap::new();
    for c in connections {
        let ip = c.remote.ip();
        let domain = resolved.get(&ip).filter(|d| {
            policy
                .blocked_domains
                .iter()
                .any(|b| b.eq_ignore_ascii_case(d))
        });
        let range = policy.blocked_ips.iter().find(|r| r.contains(ip));
        let (subject, why) = match (domain, range) {
            (Some(d), _) => (
                format!("{d} ({}/{})", c.remote, c.proto),
                format!("blocked domain {d}"),
            ),
            (None, Some(r)) => (
                format!("{}/{}", c.remote, c.proto),
                format!("blocked address {r}"),
            ),
            (None, None) => continue,
        };
        out.entry(subject.clone()).or_insert_with(|| Finding {
            policy: policy.name.clone(),
            rule: Rule::NetworkDestination,
            severity: policy.severity(Rule::NetworkDestination),
            mode: policy.mode,
            message: format!(
                "{} connection from {} to {} ({why})",
                c.proto, c.local, c.remote
            ),
            subject,
        });
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::super::tests::fixture_meta;
    use super::*;
    use crate::events::Severity;

    fn policy(yaml: &str) -> NetworkPolicy {
        parse(
            "p.yaml",
            &format!("network_policies:\n  - name: net\n{yaml}"),
        )
        .unwrap()
        .network_policies
        .remove(0)
    }

    #[test]
    fn ports_judge_the_host_side() {
        let m = fixture_meta("inspect-policy-plain.json");
        let p = policy("    allowed_ports: [80, 443]\n");
        let found = check_ports(&p, &m);
        let got: Vec<(&str, &str, Severity)> = found
            .iter()
            .map(|f| (f.rule.id(), f.subject.as_str(), f.severity))
            .collect();
        assert_eq!(
            got,
            vec![
                ("network_port", "18081/tcp", Severity::High),
                ("network_exposed_port", "9000/tcp", Severity::Low),
            ]
        );
        assert_eq!(
            found[0].message,
            "host port 18081/tcp is published on 127.0.0.1 (container port 80) and is not in allowed_ports [80, 443]"
        );
        let p = policy("    allowed_ports: [18081, 9000]\n");
        assert!(check_ports(&p, &m).is_empty());
        let p = policy("    allowed_ports: [18081]\n    check_exposed: false\n");
        assert!(check_ports(&p, &m).is_empty());
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200007F:270F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2C4 0200007F:270F 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0200007F:270F 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 020011AC:B3D2 0771CBCB:01BB 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 20 4 30 10 -1
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00004D6433C6:D431 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_proc_net_tables() {
        let c = parse_net_table(TCP, "tcp");
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[0].local, "127.0.0.1:41668".parse().unwrap());
        assert_eq!(c[0].remote, "127.0.0.2:9999".parse().unwrap());
        assert_eq!(c[2].remote, "203.203.113.7:443".parse().unwrap());
        let c6 = parse_net_table(TCP6, "tcp");
        assert_eq!(c6[0].remote, "[::1]:50000".parse().unwrap());
        assert_eq!(c6[1].remote, "198.51.100.77:54321".parse().unwrap());
    }

    #[test]
    fn blocked_addresses_and_domains() {
        let p = policy(
            "    blocked_ips: [127.0.0.2, \"198.51.100.0/24\"]\n    blocked_domains: [malicious.com]\n",
        );
        let mut conns = parse_net_table(TCP, "tcp");
        conns.extend(parse_net_table(TCP6, "tcp"));
        let resolved: Resolved = [(
            "203.203.113.7".parse().unwrap(),
            "malicious.com".to_string(),
        )]
        .into();
        let found = check_destinations(&p, &conns, &resolved);
        let subjects: Vec<&str> = found.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec![
                "127.0.0.2:9999/tcp",
                "198.51.100.77:54321/tcp",
                "malicious.com (203.203.113.7:443/tcp)"
            ]
        );
        assert_eq!(
            found[0].message,
            "tcp connection from 127.0.0.1:41668 to 127.0.0.2:9999 (blocked address 127.0.0.2)"
        );
        assert_eq!(found[2].severity, Severity::Critical);
        assert!(check_destinations(&p, &conns, &Resolved::new()).len() == 2);
    }

    #[test]
    fn reads_a_real_namespace() {
        // Our own process has socket tables; nothing blocked is expected in them.
        let conns = read_connections(Path::new("/proc"), std::process::id()).unwrap();
        assert!(conns.iter().all(|c| c.remote.port() != 0));
        assert!(read_connections(Path::new("/nonexistent"), 1).is_err());
    }
}
