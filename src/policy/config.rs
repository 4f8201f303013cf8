//! The policy file: its YAML shape, validation with file/line/field errors, the built-in
//! default, and the summary `dockwatch check-policy` prints.
//!
//! Every value that can be wrong (globs, addresses, severities, durations, numbers) is checked
//! while deserializing, so the YAML parser reports it with its position and field path.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::events::{Mode, Severity};
use crate::model::ContainerMeta;

use super::rules::Rule;

/// The policy applied when no `--policy.file` is given: one policy of each kind.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.yaml");

/// Name used in messages for the built-in policy.
pub const DEFAULT_SOURCE: &str = "<built-in default policy>";

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The file could not be read.
    #[error("reading policy file {file}: {cause}")]
    Read {
        /// The file.
        file: String,
        /// What the OS said (in the message, not a chained source).
        cause: std::io::Error,
    },
    /// The YAML is malformed or a field is wrong.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Field path and what is wrong with it.
        message: String,
    },
}

/// The whole policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Image policies.
    #[serde(default)]
    pub image_policies: Vec<ImagePolicy>,
    /// Runtime policies.
    #[serde(default)]
    pub runtime_policies: Vec<RuntimePolicy>,
    /// Network policies.
    #[serde(default)]
    pub network_policies: Vec<NetworkPolicy>,
}

/// Which containers a policy applies to. Every given condition must hold; an empty selector
/// selects every container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Glob over the container name (without the leading slash).
    #[serde(default)]
    pub name: Option<Pattern>,
    /// Glob over the image reference the container was created from.
    #[serde(default)]
    pub image: Option<Pattern>,
    /// Docker labels that must be present with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether `meta` is selected.
    pub fn matches(&self, meta: &ContainerMeta) -> bool {
        self.name.as_ref().is_none_or(|p| p.is_match(&meta.name))
            && self.image.as_ref().is_none_or(|p| p.is_match(&meta.image))
            && self
                .labels
                .iter()
                .all(|(k, v)| meta.labels.get(k) == Some(v))
    }

    /// `every container`, or the conditions joined with `and`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.name {
            parts.push(format!("name matches {:?}", p.as_str()));
        }
        if let Some(p) = &self.image {
            parts.push(format!("image matches {:?}", p.as_str()));
        }
        for (k, v) in &self.labels {
            parts.push(format!("label {k}={v:?}"));
        }
        if parts.is_empty() {
            "every container".into()
        } else {
            parts.join(" and ")
        }
    }
}

/// Rule severities an image policy may override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSeverities {
    /// `image_tag`.
    pub image_tag: Option<Severity>,
    /// `image_cve`.
    pub image_cve: Option<Severity>,
    /// `image_severity`; without it each violation carries its vulnerability's severity.
    pub image_severity: Option<Severity>,
    /// `image_unscanned`.
    pub image_unscanned: Option<Severity>,
}

/// What images containers may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePolicy {
    /// Unique policy name (a label value).
    pub name: String,
    /// Which containers it applies to.
    #[serde(default)]
    pub selector: Selector,
    /// `enforce` or `dry-run`.
    #[serde(default)]
    pub mode: Mode,
    /// Tag globs a container's image may carry; absent = no tag rule.
    #[serde(default)]
    pub allowed_tags: Option<Vec<Pattern>>,
    /// Whether a digest-only reference (`app@sha256:…`) satisfies the tag rule.
    #[serde(default = "yes")]
    pub allow_digests: bool,
    /// Vulnerability ids that must not be present.
    #[serde(default)]
    pub blocked_cves: Vec<String>,
    /// Highest vulnerability severity tolerated.
    #[serde(default)]
    pub max_severity: Option<Severity>,
    /// Whether an image without a vulnerability report is a violation (only with
    /// `--policy.reports-dir` and a CVE or severity rule).
    #[serde(default = "yes")]
    pub require_report: bool,
    /// Severity overrides.
    #[serde(default)]
    pub severities: ImageSeverities,
}

impl ImagePolicy {
    /// Severity of `rule` in this policy.
    pub fn severity(&self, rule: Rule) -> Severity {
        let s = &self.severities;
        let over = match rule {
            Rule::ImageTag => s.image_tag,
            Rule::ImageCve => s.image_cve,
            Rule::ImageSeverity => s.image_severity,
            Rule::ImageUnscanned => s.image_unscanned,
            _ => None,
        };
        over.unwrap_or_else(|| rule.default_severity())
    }

    /// Rules this policy checks; `reports` is whether a reports dir is configured.
    pub fn rules(&self, reports: bool) -> Vec<Rule> {
        let mut out = Vec::new();
        if self.allowed_tags.is_some() {
            out.push(Rule::ImageTag);
        }
        if !self.blocked_cves.is_empty() {
            out.push(Rule::ImageCve);
        }
        if self.max_severity.is_some() {
            out.push(Rule::ImageSeverity);
        }
        if reports
            && self.require_report
            && (!self.blocked_cves.is_empty() || self.max_severity.is_some())
        {
            out.push(Rule::ImageUnscanned);
        }
        out
    }
}

/// Rule severities a runtime policy may override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSeverities {
    /// `runtime_process`.
    pub runtime_process: Option<Severity>,
    /// `runtime_syscall`.
    pub runtime_syscall: Option<Severity>,
    /// `runtime_cpu`.
    pub runtime_cpu: Option<Severity>,
    /// `runtime_memory`.
    pub runtime_memory: Option<Severity>,
}

/// What running containers may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePolicy {
    /// Unique policy name.
    pub name: String,
    /// Which containers it applies to.
    #[serde(default)]
    pub selector: Selector,
    /// `enforce` or `dry-run`.
    #[serde(default)]
    pub mode: Mode,
    /// Globs over executable names; absent = no process rule.
    #[serde(default)]
    pub allowed_processes: Option<Vec<Pattern>>,
    /// Syscalls that must not be reachable.
    #[serde(default)]
    pub blocked_syscalls: Vec<String>,
    /// CPU ceiling in `docker stats` percent (100 = one core).
    #[serde(default)]
    pub max_cpu_percent: Option<Positive>,
    /// Memory ceiling (working set) in MiB.
    #[serde(default)]
    pub max_memory_mb: Option<Positive>,
    /// How long a ceiling must be exceeded before it is a violation.
    #[serde(default, rename = "for")]
    pub for_duration: Option<HumanDuration>,
    /// Severity overrides.
    #[serde(default)]
    pub severities: RuntimeSeverities,
}

impl RuntimePolicy {
    /// Severity of `rule` in this policy.
    pub fn severity(&self, rule: Rule) -> Severity {
        let s = &self.severities;
        let over = match rule {
            Rule::RuntimeProcess => s.runtime_process,
            Rule::RuntimeSyscall => s.runtime_syscall,
            Rule::RuntimeCpu => s.runtime_cpu,
            Rule::RuntimeMemory => s.runtime_memory,
            _ => None,
        };
        over.unwrap_or_else(|| rule.default_severity())
    }

    /// Rules this policy checks.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        if self.allowed_processes.is_some() {
            out.push(Rule::RuntimeProcess);
        }
        if !self.blocked_syscalls.is_empty() {
            out.push(Rule::RuntimeSyscall);
        }
        if self.max_cpu_percent.is_some() {
            out.push(Rule::RuntimeCpu);
        }
        if self.max_memory_mb.is_some() {
            out.push(Rule::RuntimeMemory);
        }
        out
    }

    /// Memory ceiling in bytes.
    pub fn max_memory_bytes(&self) -> Option<f64> {
        self.max_memory_mb.map(|m| m.0 * 1024.0 * 1024.0)
    }

    /// The `for:` duration, zero when absent.
    pub fn hold(&self) -> Duration {
        self.for_duration.map(|d| d.0).unwrap_or_default()
    }
}

/// Rule severities a network policy may override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSeverities {
    /// `network_port`.
    pub network_port: Option<Severity>,
    /// `network_exposed_port`.
    pub network_exposed_port: Option<Severity>,
    /// `network_destination`.
    pub network_destination: Option<Severity>,
}

/// Where containers may listen and connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Unique policy name.
    pub name: String,
    /// Which containers it applies to.
    #[serde(default)]
    pub selector: Selector,
    /// `enforce` or `dry-run`.
    #[serde(default)]
    pub mode: Mode,
    /// Host ports that may be published; absent = no port rule.
    #[serde(default)]
    pub allowed_ports: Option<Vec<u16>>,
    /// Whether exposed-but-unpublished ports outside `allowed_ports` are reported.
    #[serde(default = "yes")]
    pub check_exposed: bool,
    /// Domains whose addresses containers must not be connected to.
    #[serde(default)]
    pub blocked_domains: Vec<String>,
    /// Addresses and CIDR ranges containers must not be connected to.
    #[serde(default)]
    pub blocked_ips: Vec<AddrRange>,
    /// Severity overrides.
    #[serde(default)]
    pub severities: NetworkSeverities,
}

impl NetworkPolicy {
    /// Severity of `rule` in this policy.
    pub fn severity(&self, rule: Rule) -> Severity {
        let s = &self.severities;
        let over = match rule {
            Rule::NetworkPort => s.network_port,
            Rule::NetworkExposedPort => s.network_exposed_port,
            Rule::NetworkDestination => s.network_destination,
            _ => None,
        };
        over.unwrap_or_else(|| rule.default_severity())
    }

    /// Rules this policy checks.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        if self.allowed_ports.is_some() {
            out.push(Rule::NetworkPort);
            if self.check_exposed {
                out.push(Rule::NetworkExposedPort);
            }
        }
        if !self.blocked_domains.is_empty() || !self.blocked_ips.is_empty() {
            out.push(Rule::NetworkDestination);
        }
        out
    }
}

fn yes() -> bool {
    true
}

/// A compiled glob that remembers its source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Result<Self, globset::Error> {
        Ok(Self {
            text: text.to_string(),
            matcher: Glob::new(text)?.compile_matcher(),
        })
    }

    /// Whether `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Deserializes a string through `parse` inside the deserializer, so that an error carries
/// the position and path of the scalar itself.
fn parse_str<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T>(&'static str, fn(&str) -> Result<T, String>);
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(what, parse))
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a glob", |text| {
            Pattern::new(text).map_err(|e| format!("invalid glob {text:?}: {}", e.kind()))
        })
    }
}

/// An address or CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange(pub IpNet);

impl AddrRange {
    /// Whether `ip` is inside the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for AddrRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an address or CIDR", |text| {
            if let Ok(net) = text.parse::<IpNet>() {
                return Ok(Self(net.trunc()));
            }
            text.parse::<IpAddr>()
                .map(|ip| Self(IpNet::from(ip)))
                .map_err(|_| format!("invalid address or CIDR {text:?}"))
        })
    }
}

/// A number greater than zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive(pub f64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Positive;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Positive, E> {
                if v > 0.0 && v.is_finite() {
                    Ok(Positive(v))
                } else {
                    Err(E::custom(format!(
                        "must be a number greater than zero, got {v}"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Positive, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Positive, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written like `30s`, `5m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a duration such as 30s", |text| {
            humantime::parse_duration(text)
                .map(HumanDuration)
                .map_err(|e| format!("invalid duration {text:?}: {e}"))
        })
    }
}

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<PolicyFile, PolicyFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| PolicyFileError::Read {
        file: file.clone(),
        cause,
    })?;
    parse(&file, &text)
}

/// Parses and validates policy YAML; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<PolicyFile, PolicyFileError> {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---");
    if !has_content {
        return Ok(PolicyFile::default());
    }
    let parsed: PolicyFile = yaml_serde::from_str(text).map_err(|e| yaml_error(file, &e))?;
    check_names(file, text, &parsed)?;
    Ok(parsed)
}

fn yaml_error(file: &str, e: &yaml_serde::Error) -> PolicyFileError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let mut message = e.to_string();
    // The parser puts the position in prose; it is already in the prefix.
    while let Some(at) = message.rfind(" at line ") {
        let rest = &message[at + " at line ".len()..];
        let after_line = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        let end = after_line
            .strip_prefix(" column ")
            .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
            .unwrap_or(after_line);
        message = format!("{}{}", &message[..at], end);
    }
    PolicyFileError::Invalid {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// Policy names are label values and episode keys: each must be non-empty and unique.
fn check_names(file: &str, text: &str, p: &PolicyFile) -> Result<(), PolicyFileError> {
    let mut seen = HashSet::new();
    let names = p
        .image_policies
        .iter()
        .map(|x| ("image_policies", &x.name))
        .chain(
            p.runtime_policies
                .iter()
                .map(|x| ("runtime_policies", &x.name)),
        )
        .chain(
            p.network_policies
                .iter()
                .map(|x| ("network_policies", &x.name)),
        );
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (section, name) in names {
        let i = index.entry(section).or_default();
        let field = format!("{section}[{i}].name");
        *i += 1;
        let problem = if name.trim().is_empty() {
            Some("policy name must not be empty".to_string())
        } else if !seen.insert(name.as_str()) {
            Some(format!("duplicate policy name {name:?}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            let (line, column) = find_name(text, name, !name.trim().is_empty());
            return Err(PolicyFileError::Invalid {
                file: file.to_string(),
                line,
                column,
                message: format!("{field}: {problem}"),
            });
        }
    }
    Ok(())
}

/// Position of the last `name: <name>` line (the duplicate is the later one).
fn find_name(text: &str, name: &str, last: bool) -> (usize, usize) {
    let mut found = (1, 1);
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start().trim_start_matches("- ");
        if let Some(value) = body.strip_prefix("name:") {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if value == name {
                let col = line.find("name:").unwrap_or(0) + 1;
                found = (n + 1, col);
                if !last {
                    break;
                }
            }
        }
    }
    found
}

/// A human-readable account of what a policy file applies, for `dockwatch check-policy`.
pub fn describe(source: &str, p: &PolicyFile, reports_dir: bool) -> String {
    let mut out = String::new();
    let total = p.image_policies.len() + p.runtime_policies.len() + p.network_policies.len();
    let rules: usize = p
        .image_policies
        .iter()
        .map(|x| x.rules(reports_dir).len())
        .sum::<usize>()
        + p.runtime_policies
            .iter()
            .map(|x| x.rules().len())
            .sum::<usize>()
        + p.network_policies
            .iter()
            .map(|x| x.rules().len())
            .sum::<usize>();
    let _ = writeln!(out, "{source}: ok, {total} policies, {rules} rules");
    let list = |v: &[Pattern]| v.iter().map(Pattern::as_str).collect::<Vec<_>>().join(", ");
    for x in &p.image_policies {
        header(&mut out, "image", &x.name, x.mode, &x.selector);
        for rule in x.rules(reports_dir) {
            let what = match rule {
                Rule::ImageTag => format!(
                    "tag matches one of [{}]{}",
                    x.allowed_tags.as_deref().map(list).unwrap_or_default(),
                    if x.allow_digests {
                        "; digest-only references allowed"
                    } else {
                        "; digest-only references refused"
                    }
                ),
                Rule::ImageCve => format!("none of [{}] present", x.blocked_cves.join(", ")),
                Rule::ImageSeverity => format!(
                    "no vulnerability above {}",
                    x.max_severity.map(Severity::as_str).unwrap_or("-")
                ),
                _ => "image has a vulnerability report".into(),
            };
            let sev = if rule == Rule::ImageSeverity && x.severities.image_severity.is_none() {
                "(finding)".to_string()
            } else {
                x.severity(rule).as_str().to_string()
            };
            rule_line(&mut out, rule, &sev, &what);
        }
    }
    for x in &p.runtime_policies {
        header(&mut out, "runtime", &x.name, x.mode, &x.selector);
        let hold = if x.hold().is_zero() {
            String::new()
        } else {
            format!(" for {}", humantime::format_duration(x.hold()))
        };
        for rule in x.rules() {
            let what = match rule {
                Rule::RuntimeProcess => format!(
                    "executables match one of [{}]",
                    x.allowed_processes.as_deref().map(list).unwrap_or_default()
                ),
                Rule::RuntimeSyscall => {
                    format!("not reachable: [{}]", x.blocked_syscalls.join(", "))
                }
                Rule::RuntimeCpu => format!(
                    "cpu above {}% (= {} cores){hold}",
                    x.max_cpu_percent.map(|v| v.0).unwrap_or_default(),
                    x.max_cpu_percent.map(|v| v.0 / 100.0).unwrap_or_default()
                ),
                _ => format!(
                    "working set above {} MiB (= {} bytes){hold}",
                    x.max_memory_mb.map(|v| v.0).unwrap_or_default(),
                    x.max_memory_bytes().unwrap_or_default()
                ),
            };
            rule_line(&mut out, rule, x.severity(rule).as_str(), &what);
        }
    }
    for x in &p.network_policies {
        header(&mut out, "network", &x.name, x.mode, &x.selector);
        let ports = x
            .allowed_ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for rule in x.rules() {
            let what = match rule {
                Rule::NetworkPort => format!("published host ports in [{ports}]"),
                Rule::NetworkExposedPort => format!("exposed container ports in [{ports}]"),
                _ => {
                    let ips: Vec<String> = x.blocked_ips.iter().map(ToString::to_string).collect();
                    format!(
                        "no connection to domains [{}] or addresses [{}]",
                        x.blocked_domains.join(", "),
                        ips.join(", ")
                    )
                }
            };
            rule_line(&mut out, rule, x.severity(rule).as_str(), &what);
        }
    }
    out
}

fn header(out: &mut String, kind: &str, name: &str, mode: Mode, selector: &Selector) {
    let _ = writeln!(
        out,
        "\n{kind} policy {name:?} (mode {}): applies to {}",
        mode.as_str(),
        selector.describe()
    );
}

fn rule_line(out: &mut String, rule: Rule, severity: &str, what: &str) {
    let _ = writeln!(out, "  {:<22} {:<9} {what}", rule.id(), severity);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("policy.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn default_policy_parses() {
        let p = parse(DEFAULT_SOURCE, DEFAULT_POLICY).unwrap();
        assert_eq!(p.image_policies.len(), 1);
        assert_eq!(
            p.runtime_policies[0].max_memory_bytes(),
            Some(2048.0 * 1048576.0)
        );
        assert_eq!(p.runtime_policies[0].hold(), Duration::from_secs(30));
        assert_eq!(p.network_policies[0].blocked_ips.len(), 2);
        assert!(p.network_policies[0].blocked_ips[1].contains("198.51.100.77".parse().unwrap()));
        assert!(!p.network_policies[0].blocked_ips[0].contains("203.0.113.8".parse().unwrap()));
    }

    #[test]
    fn wrong_type_names_file_line_and_field() {
        let text = "runtime_policies:\n  - name: r\n    max_cpu_percent: x\n";
        assert_eq!(
            err(text),
            "policy.yaml:3:22: runtime_policies[0].max_cpu_percent: invalid type: string \"x\", expected a number"
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let text = "network_policies:\n  - name: n\n    allowed_port: [80]\n";
        let e = err(text);
        assert!(
            e.starts_with("policy.yaml:3:5: network_policies[0]: unknown field `allowed_port`, expected one of"),
            "{e}"
        );
        assert!(err("images: []\n").starts_with("policy.yaml:1:1: unknown field `images`"));
    }

    #[test]
    fn bad_values_are_errors_with_positions() {
        assert_eq!(
            err("image_policies:\n  - name: i\n    allowed_tags: [\"v[\"]\n"),
            "policy.yaml:3:20: image_policies[0].allowed_tags[0]: invalid glob \"v[\": unclosed character class; missing ']'"
        );
        assert_eq!(
            err("network_policies:\n  - name: n\n    blocked_ips: [10.0.0.0/33]\n"),
            "policy.yaml:3:19: network_policies[0].blocked_ips[0]: invalid address or CIDR \"10.0.0.0/33\""
        );
        assert_eq!(
            err("image_policies:\n  - name: i\n    max_severity: SEVERE\n"),
            "policy.yaml:3:19: image_policies[0].max_severity: unknown variant `SEVERE`, expected one of `LOW`, `MEDIUM`, `HIGH`, `CRITICAL`"
        );
        assert_eq!(
            err("runtime_policies:\n  - name: r\n    for: soon\n"),
            "policy.yaml:3:10: runtime_policies[0].for: invalid duration \"soon\": expected number at 0"
        );
        assert_eq!(
            err("runtime_policies:\n  - name: r\n    max_memory_mb: -5\n"),
            "policy.yaml:3:20: runtime_policies[0].max_memory_mb: must be a number greater than zero, got -5"
        );
        assert_eq!(
            err("network_policies:\n  - name: n\n    allowed_ports: [70000]\n"),
            "policy.yaml:3:21: network_policies[0].allowed_ports[0]: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            err("image_policies:\n  - name: i\n    mode: audit\n"),
            "policy.yaml:3:11: image_policies[0].mode: unknown variant `audit`, expected `enforce` or `dry-run`"
        );
        assert_eq!(
            err("image_policies:\n  - name: i\n    severities: {image_tags: LOW}\n"),
            "policy.yaml:3:18: image_policies[0].severities: unknown field `image_tags`, expected one of `image_tag`, `image_cve`, `image_severity`, `image_unscanned`"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = "image_policies:\n  - name: a\nruntime_policies:\n  - name: b\n  - name: a\n";
        assert_eq!(
            err(text),
            "policy.yaml:5:5: runtime_policies[1].name: duplicate policy name \"a\""
        );
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let e = err("image_policies:\n  - name: 'a\n");
        assert_eq!(
            e,
            "policy.yaml:3:1: found unexpected end of stream, while scanning a quoted scalar"
        );
    }

    #[test]
    fn empty_file_is_no_policy() {
        let p = parse("p.yaml", "# nothing yet\n").unwrap();
        assert!(p.image_policies.is_empty());
    }

    #[test]
    fn selectors() {
        let p = parse(
            "p.yaml",
            "image_policies:\n  - name: i\n    selector: {name: \"web-*\", image: \"registry:5000/*\", labels: {team: a}}\n",
        )
        .unwrap();
        let s = &p.image_policies[0].selector;
        let meta =
            super::super::tests::meta_named("web-1", "registry:5000/app:v1", &[("team", "a")]);
        assert!(s.matches(&meta));
        let other =
            super::super::tests::meta_named("web-1", "registry:5000/app:v1", &[("team", "b")]);
        assert!(!s.matches(&other));
        let other =
            super::super::tests::meta_named("db-1", "registry:5000/app:v1", &[("team", "a")]);
        assert!(!s.matches(&other));
        assert_eq!(
            s.describe(),
            "name matches \"web-*\" and image matches \"registry:5000/*\" and label team=\"a\""
        );
    }

    #[test]
    fn describe_lists_rules_with_severities() {
        let p = parse(DEFAULT_SOURCE, DEFAULT_POLICY).unwrap();
        let text = describe(DEFAULT_SOURCE, &p, false);
        assert!(
            text.starts_with("<built-in default policy>: ok, 3 policies, 10 rules\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  image_tag              MEDIUM    tag matches one of [latest, stable, v*]"
            ),
            "{text}"
        );
        assert!(
            text.contains("  runtime_cpu            MEDIUM    cpu above 80% (= 0.8 cores) for 30s"),
            "{text}"
        );
    }
}
