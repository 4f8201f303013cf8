//! Image rules: the tag a container was created from, and the vulnerabilities that Trivy or
//! Grype reports in `--policy.reports-dir` list for its image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::events::Severity;
use crate::model::ContainerMeta;

use super::config::ImagePolicy;
use super::rules::{Finding, Rule};

/// What an image reference pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A tag; `latest` when the reference names none.
    Tag(String),
    /// Only a digest (`app@sha256:…`) or an image id.
    Digest(String),
}

/// Splits an image reference into what it pins. A `:` in the registry host (`host:5000/app`)
/// is not a tag; a reference with both tag and digest pins the tag (the tag is what people
/// read; the digest only fixes its content).
pub fn pin(reference: &str) -> Pin {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let is_image_id = digest.is_none()
        && (name.starts_with("sha256:")
            || (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
            || (name.len() == 12
                && name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    if is_image_id {
        return Pin::Digest(name.to_string());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    match (last.split_once(':'), digest) {
        (Some((_, tag)), _) if !tag.is_empty() => Pin::Tag(tag.to_string()),
        (_, Some(d)) => Pin::Digest(d.to_string()),
        _ => Pin::Tag("latest".to_string()),
    }
}

/// `image_tag` for one policy.
pub fn check_tag(policy: &ImagePolicy, meta: &ContainerMeta) -> Option<Finding> {
    let allowed = policy.allowed_tags.as_ref()?;
    let finding = |subject: String, message: String| Finding {
        policy: policy.name.clone(),
        rule: Rule::ImageTag,
        severity: policy.severity(Rule::ImageTag),
        mode: policy.mode,
        subject,
        message,
    };
    match pin(&meta.image) {
        Pin::Tag(tag) => {
            if allowed.iter().any(|p| p.is_match(&tag)) {
                return None;
            }
            let globs: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
            Some(finding(
                tag.clone(),
                format!(
                    "image {} has tag {tag:?}, which matches none of the allowed tags [{}]",
                    meta.image,
                    globs.join(", ")
                ),
            ))
        }
        Pin::Digest(d) if !policy.allow_digests => Some(finding(
            d.clone(),
            format!(
                "image {} is pinned by digest only and the policy requires a tag",
                meta.image
            ),
        )),
        Pin::Digest(_) => None,
    }
}

/// One vulnerability in one package.
#[derive(Debug, Clone, PartialEq)]
pub struct Vulnerability {
    /// `CVE-…`, `GHSA-…`.
    pub id: String,
    /// Affected package.
    pub package: String,
    /// Severity; `None` when the scanner said UNKNOWN.
    pub severity: Option<Severity>,
}

/// One scanner report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The file it came from.
    pub file: PathBuf,
    /// `trivy` or `grype`.
    pub format: &'static str,
    /// What was scanned, as the scanner names it.
    pub artifact: String,
    /// Image id (`sha256:…`) of the scanned image, when recorded.
    pub image_id: Option<String>,
    /// Repo digests of the scanned image (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Findings.
    pub vulnerabilities: Vec<Vulnerability>,
    /// Modification time of the file, to prefer the newest scan.
    pub modified: Option<SystemTime>,
}

/// Why a report file was skipped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Unreadable.
    #[error("reading report {file}: {cause}")]
    Read {
        /// The file.
        file: String,
        /// Cause (in the message, not a chained source).
        cause: std::io::Error,
    },
    /// Not JSON, or not a Trivy or Grype report.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyReport {
    #[serde(default)]
    artifact_name: String,
    #[serde(default)]
    metadata: TrivyMetadata,
    #[serde(default)]
    results: Option<Vec<TrivyResult>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TrivyMetadata {
    #[serde(rename = "ImageID", default)]
    image_id: Option<String>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyResult {
    #[serde(default)]
    vulnerabilities: Option<Vec<TrivyVuln>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyVuln {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: String,
    #[serde(default)]
    pkg_name: String,
    #[serde(default)]
    severity: String,
}

#[derive(Deserialize)]
struct GrypeReport {
    matches: Vec<GrypeMatch>,
    #[serde(default)]
    source: Option<GrypeSource>,
}

#[derive(Deserialize)]
struct GrypeMatch {
    vulnerability: GrypeVuln,
    #[serde(default)]
    artifact: GrypeArtifact,
}

#[derive(Deserialize)]
struct GrypeVuln {
    id: String,
    #[serde(default)]
    severity: String,
}

#[derive(Deserialize, Default)]
struct GrypeArtifact {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct GrypeSource {
    #[serde(default)]
    target: Option<GrypeTarget>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GrypeTarget {
    #[serde(default, rename = "userInput")]
    user_input: String,
    #[serde(rename = "imageID", default)]
    image_id: Option<String>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

/// Maps scanner severity words (Trivy upper case, Grype capitalised, `Negligible`) to ours.
pub fn parse_severity(s: &str) -> Option<Severity> {
    match s.to_ascii_uppercase().as_str() {
        "CRITICAL" => Some(Severity::Critical),
        "HIGH" => Some(Severity::High),
        "MEDIUM" | "MODERATE" => Some(Severity::Medium),
        "LOW" | "NEGLIGIBLE" => Some(Severity::Low),
        _ => None,
    }
}

/// Parses one report, telling Trivy from Grype by its top-level keys.
pub fn parse_report(file: &Path, text: &str) -> Result<Report, ReportError> {
    let name = file.display().to_string();
    let invalid = |e: serde_json::Error| ReportError::Invalid {
        file: name.clone(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
    if value.get("matches").is_some() {
        let r: GrypeReport = serde_json::from_str(text).map_err(invalid)?;
        let target = r.source.and_then(|s| s.target).unwrap_or_default();
        return Ok(Report {
            file: file.to_path_buf(),
            format: "grype",
            artifact: target.user_input,
            image_id: target.image_id.filter(|s| !s.is_empty()),
            repo_digests: target.repo_digests.unwrap_or_default(),
            vulnerabilities: r
                .matches
                .into_iter()
                .map(|m| Vulnerability {
                    severity: parse_severity(&m.vulnerability.severity),
                    id: m.vulnerability.id,
                    package: m.artifact.name,
                })
                .collect(),
            modified: None,
        });
    }
    if value.get("Results").is_some() || value.get("SchemaVersion").is_some() {
        let r: TrivyReport = serde_json::from_str(text).map_err(invalid)?;
        return Ok(Report {
            file: file.to_path_buf(),
            format: "trivy",
            artifact: r.artifact_name,
            image_id: r.metadata.image_id.filter(|s| !s.is_empty()),
            repo_digests: r.metadata.repo_digests.unwrap_or_default(),
            vulnerabilities: r
                .results
                .unwrap_or_default()
                .into_iter()
                .flat_map(|res| res.vulnerabilities.unwrap_or_default())
                .map(|v| Vulnerability {
                    severity: parse_severity(&v.severity),
                    id: v.vulnerability_id,
                    package: v.pkg_name,
                })
                .collect(),
            modified: None,
        });
    }
    Err(ReportError::Invalid {
        file: name,
        line: 1,
        column: 1,
        message: "neither a Trivy report (no `Results`) nor a Grype report (no `matches`)".into(),
    })
}

/// The digest part of `repo@sha256:…`.
fn digest_of(repo_digest: &str) -> &str {
    repo_digest
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(repo_digest)
}

/// Every report in the directory, indexed by image id and by digest.
#[derive(Debug, Default)]
pub struct ReportIndex {
    reports: Vec<Report>,
    by_key: HashMap<String, usize>,
    /// Fingerprint of the directory listing the index was built from.
    pub fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

impl ReportIndex {
    /// Builds an index; when two reports cover the same image the newest file wins.
    pub fn new(mut reports: Vec<Report>) -> Self {
        reports.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.file.cmp(&b.file))
        });
        let mut by_key = HashMap::new();
        for (i, r) in reports.iter().enumerate() {
            if let Some(id) = &r.image_id {
                by_key.insert(id.clone(), i);
            }
            for d in &r.repo_digests {
                by_key.insert(digest_of(d).to_string(), i);
            }
        }
        Self {
            reports,
            by_key,
            fingerprint: Vec::new(),
        }
    }

    /// Reports loaded.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Whether none are loaded.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// The report for an image, by id first, then by any of its repo digests.
    pub fn find(&self, image_id: &str, repo_digests: &[String]) -> Option<&Report> {
        self.by_key
            .get(image_id)
            .or_else(|| {
                repo_digests
                    .iter()
                    .find_map(|d| self.by_key.get(digest_of(d)))
            })
            .map(|&i| &self.reports[i])
    }
}

/// Lists `*.json` files of `dir` with size and mtime: cheap to compare every few seconds.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            if let Ok(m) = e.metadata()
                && m.is_file()
            {
                out.push((path, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Loads every report of `dir`; files that fail are returned as errors beside the index.
pub fn load_dir(dir: &Path) -> (ReportIndex, Vec<ReportError>) {
    let listing = fingerprint(dir);
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (path, _, modified) in &listing {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(source) => {
                errors.push(ReportError::Read {
                    file: path.display().to_string(),
                    cause: source,
                });
                continue;
            }
        };
        match parse_report(path, &text) {
            Ok(mut r) => {
                r.modified = *modified;
                reports.push(r);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut index = ReportIndex::new(reports);
    index.fingerprint = listing;
    (index, errors)
}

/// `image_cve`, `image_severity` and `image_unscanned` for one policy. `reports` is `None`
/// when no reports dir is configured.
pub fn check_vulnerabilities(
    policy: &ImagePolicy,
    meta: &ContainerMeta,
    repo_digests: &[String],
    reports: Option<&ReportIndex>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(index) = reports else {
        return out;
    };
    if policy.blocked_cves.is_empty() && policy.max_severity.is_none() {
        return out;
    }
    let Some(report) = index.find(&meta.image_id, repo_digests) else {
        if policy.require_report {
            out.push(Finding {
                policy: policy.name.clone(),
                rule: Rule::ImageUnscanned,
                severity: policy.severity(Rule::ImageUnscanned),
                mode: policy.mode,
                subject: meta.image.clone(),
                message: format!(
                    "no vulnerability report covers image {} ({})",
                    meta.image, meta.image_id
                ),
            });
        }
        return out;
    };
    let file = report
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One violation per vulnerability id, naming every affected package.
    let mut by_id: BTreeMap<&str, (Vec<&str>, Option<Severity>)> = BTreeMap::new();
    for v in &report.vulnerabilities {
        let e = by_id.entry(&v.id).or_default();
        if !e.0.contains(&v.package.as_str()) {
            e.0.push(&v.package);
        }
        e.1 = e.1.max(v.severity);
    }
    for (id, (packages, severity)) in by_id {
        let packages = packages.join(", ");
        if policy
            .blocked_cves
            .iter()
            .any(|b| b.eq_ignore_ascii_case(id))
        {
            out.push(Finding {
                policy: policy.name.clone(),
                rule: Rule::ImageCve,
                severity: policy.severity(Rule::ImageCve),
                mode: policy.mode,
                subject: id.to_string(),
                message: format!(
                    "image {} has blocked vulnerability {id} in package {packages} ({} report {file})",
                    meta.image, report.format
                ),
            });
        }
        if let (Some(max), Some(sev)) = (policy.max_severity, severity)
            && sev > max
        {
            out.push(Finding {
                    policy: policy.name.clone(),
                    rule: Rule::ImageSeverity,
                    severity: policy.severities.image_severity.unwrap_or(sev),
                    mode: policy.mode,
                    subject: id.to_string(),
                    message: format!(
                        "image {} has {} vulnerability {id} in package {packages}, above max_severity {} ({} report {file})",
                        meta.image,
                        sev.as_str(),
                        max.as_str(),
                        report.format
                    ),
                });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::super::tests::meta_named;
    use super::*;

    fn policy(yaml: &str) -> ImagePolicy {
        parse("p.yaml", &format!("image_policies:\n  - name: img\n{yaml}"))
            .unwrap()
            .image_policies
            .remove(0)
    }

    #[test]
    fn pins() {
        assert_eq!(pin("nginx"), Pin::Tag("latest".into()));
        assert_eq!(pin("nginx:1.25"), Pin::Tag("1.25".into()));
        assert_eq!(pin("host:5000/app"), Pin::Tag("latest".into()));
        assert_eq!(pin("host:5000/team/app:v2"), Pin::Tag("v2".into()));
        assert_eq!(pin("app@sha256:abcd"), Pin::Digest("sha256:abcd".into()));
        assert_eq!(
            pin("host:5000/app@sha256:abcd"),
            Pin::Digest("sha256:abcd".into())
        );
        assert_eq!(pin("app:v1@sha256:abcd"), Pin::Tag("v1".into()));
        assert_eq!(
            pin("sha256:f493b1e3"),
            Pin::Digest("sha256:f493b1e3".into())
        );
        assert_eq!(pin("f493b1e30707"), Pin::Digest("f493b1e30707".into()));
    }

    #[test]
    fn tag_globs() {
        let p = policy("    allowed_tags: [latest, stable, \"v*\"]\n");
        let check = |image: &str| check_tag(&p, &meta_named("c", image, &[])).map(|f| f.subject);
        assert_eq!(check("app:v1.2.3"), None);
        assert_eq!(check("app"), None);
        assert_eq!(check("host:5000/app"), None);
        assert_eq!(check("app@sha256:abcd"), None);
        assert_eq!(check("app:dev"), Some("dev".into()));
        assert_eq!(check("host:5000/app:1.0"), Some("1.0".into()));
        let f = check_tag(&p, &meta_named("c", "dwt/app:dev", &[])).unwrap();
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(
            f.message,
            "image dwt/app:dev has tag \"dev\", which matches none of the allowed tags [latest, stable, v*]"
        );
    }

    #[test]
    fn digest_only_when_refused() {
        let p = policy(
            "    allowed_tags: [stable]\n    allow_digests: false\n    severities: {image_tag: HIGH}\n",
        );
        let f = check_tag(&p, &meta_named("c", "app@sha256:abcd", &[])).unwrap();
        assert_eq!(f.subject, "sha256:abcd");
        assert_eq!(f.severity, Severity::High);
    }

    const TRIVY: &str = include_str!("../../tests/fixtures/reports/trivy-app.json");
    const GRYPE: &str = include_str!("../../tests/fixtures/reports/grype-app.json");

    #[test]
    fn parses_trivy() {
        let r = parse_report(Path::new("trivy-app.json"), TRIVY).unwrap();
        assert_eq!(r.format, "trivy");
        assert_eq!(
            r.image_id.as_deref(),
            Some("sha256:1111111111111111111111111111111111111111111111111111111111111111")
        );
        assert_eq!(
            r.repo_digests,
            vec!["registry.example:5000/app@sha256:aaaa".to_string()]
        );
        assert_eq!(r.vulnerabilities.len(), 3);
        assert_eq!(
            r.vulnerabilities[2],
            Vulnerability {
                id: "CVE-2021-44228".into(),
                package: "log4j-core".into(),
                severity: Some(Severity::Critical)
            }
        );
    }

    #[test]
    fn parses_grype() {
        let r = parse_report(Path::new("grype-app.json"), GRYPE).unwrap();
        assert_eq!(r.format, "grype");
        assert_eq!(
            r.image_id.as_deref(),
            Some("sha256:2222222222222222222222222222222222222222222222222222222222222222")
        );
        assert_eq!(r.repo_digests, vec!["app@sha256:bbbb".to_string()]);
        assert_eq!(r.vulnerabilities[1].severity, Some(Severity::Low));
        assert_eq!(r.vulnerabilities[1].id, "CVE-2020-0001");
    }

    #[test]
    fn bad_report_names_position() {
        let e = parse_report(Path::new("r.json"), "{\n  \"matches\": 3\n}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.json:2:14: invalid type: integer `3`, expected a sequence"
        );
        let e = parse_report(Path::new("r.json"), "{\"x\": 1}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.json:1:1: neither a Trivy report"),
            "{e}"
        );
    }

    #[test]
    fn vulnerability_rules() {
        let trivy = parse_report(Path::new("trivy-app.json"), TRIVY).unwrap();
        let grype = parse_report(Path::new("grype-app.json"), GRYPE).unwrap();
        let index = ReportIndex::new(vec![trivy, grype]);
        let p = policy("    blocked_cves: [CVE-2021-44228]\n    max_severity: MEDIUM\n");
        let mut m = meta_named("c", "app:v1", &[]);
        m.image_id =
            "sha256:1111111111111111111111111111111111111111111111111111111111111111".into();
        let found = check_vulnerabilities(&p, &m, &[], Some(&index));
        let got: Vec<(&str, &str, Severity)> = found
            .iter()
            .map(|f| (f.rule.id(), f.subject.as_str(), f.severity))
            .collect();
        assert_eq!(
            got,
            vec![
                ("image_severity", "CVE-2021-3711", Severity::High),
                ("image_cve", "CVE-2021-44228", Severity::Critical),
                ("image_severity", "CVE-2021-44228", Severity::Critical),
            ]
        );
        assert_eq!(
            found[1].message,
            "image app:v1 has blocked vulnerability CVE-2021-44228 in package log4j-core (trivy report trivy-app.json)"
        );
        assert!(
            found[0].message.contains("package openssl, libssl"),
            "{}",
            found[0].message
        );

        // Matched by repo digest from image inspect, against the Grype report.
        let mut m = meta_named("c", "app:v2", &[]);
        m.image_id = "sha256:9999".into();
        let found = check_vulnerabilities(
            &p,
            &m,
            &["docker.io/library/app@sha256:bbbb".into()],
            Some(&index),
        );
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.rule.id(), f.subject.as_str()))
            .collect();
        assert_eq!(got, vec![("image_severity", "CVE-2021-45046")]);

        // No report: unscanned, only when a reports dir is configured.
        let m = meta_named("c", "other:v1", &[]);
        let found = check_vulnerabilities(&p, &m, &[], Some(&index));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rule, found[0].severity),
            (Rule::ImageUnscanned, Severity::Low)
        );
        assert!(check_vulnerabilities(&p, &m, &[], None).is_empty());
    }
}
