//! Tuning recommendations derived from a container's window statistics.
//!
//! Pure rules over plain numbers, shared by the live `/metrics` gauge, `/api/v1/windows` and
//! `dockwatch report` (which feeds them figures from Prometheus instead), so every view agrees.
//! Every comparison is strict: a figure exactly at its threshold does not trigger.

use serde::{Deserialize, Serialize};

/// p95 CPU above this fraction of the CPU limit (of one core when unlimited) suggests a
/// higher limit.
pub const CPU_P95_RATIO: f64 = 0.80;
/// CPU standard deviation above this many cores (20 percentage points of one core, as
/// `docker stats` counts) suggests an erratic load worth a look.
pub const CPU_STDDEV_CORES: f64 = 0.20;
/// p95 working set above this fraction of the memory limit suggests a higher limit.
pub const MEMORY_P95_RATIO: f64 = 0.85;
/// Peak working set above this fraction of the memory limit is an OOM-kill risk.
pub const MEMORY_MAX_RATIO: f64 = 0.95;
/// More anomalies than this in the window suggest reviewing the application.
pub const MAX_ANOMALIES: u64 = 10;

/// One recommendation; the label value of `dockwatch_recommendation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// CPU p95 is close to the limit.
    RaiseCpuLimit,
    /// CPU use swings widely.
    InvestigateCpuPattern,
    /// Memory p95 is close to the limit.
    RaiseMemoryLimit,
    /// Memory peaks are at the limit.
    OomRisk,
    /// Many anomalies in the window.
    ReviewApplication,
}

impl Recommendation {
    /// Every recommendation, in export and report order.
    pub const ALL: [Recommendation; 5] = [
        Self::RaiseCpuLimit,
        Self::InvestigateCpuPattern,
        Self::RaiseMemoryLimit,
        Self::OomRisk,
        Self::ReviewApplication,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RaiseCpuLimit => "raise_cpu_limit",
            Self::InvestigateCpuPattern => "investigate_cpu_pattern",
            Self::RaiseMemoryLimit => "raise_memory_limit",
            Self::OomRisk => "oom_risk",
            Self::ReviewApplication => "review_application",
        }
    }

    /// What to do, in a sentence.
    pub fn text(self) -> &'static str {
        match self {
            Self::RaiseCpuLimit => {
                "CPU use sits near its ceiling most of the time: give the container a higher CPU limit or make its hot paths cheaper"
            }
            Self::InvestigateCpuPattern => {
                "CPU use swings widely between samples: look for batch jobs, retry storms or busy loops behind the bursts"
            }
            Self::RaiseMemoryLimit => {
                "the working set stays close to the memory limit: raise the limit or reduce what the application keeps in memory"
            }
            Self::OomRisk => {
                "memory peaks reach the limit: the kernel may OOM-kill the container; raise the limit or look for a leak"
            }
            Self::ReviewApplication => {
                "resource use departs from its usual level often: review recent deployments and the application's logs"
            }
        }
    }
}

/// The figures the rules read. `None` means unknown or not applicable (no limit, no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    /// 95th percentile of CPU use, cores.
    pub cpu_p95_cores: Option<f64>,
    /// Standard deviation of CPU use, cores.
    pub cpu_stddev_cores: Option<f64>,
    /// CPU limit, cores; `None` when unlimited.
    pub cpu_limit_cores: Option<f64>,
    /// 95th percentile of the memory working set, bytes.
    pub memory_p95_bytes: Option<f64>,
    /// Largest memory working set, bytes.
    pub memory_max_bytes: Option<f64>,
    /// Memory limit, bytes; `None` when unlimited.
    pub memory_limit_bytes: Option<f64>,
    /// Anomalies (any signal, any severity) in the window.
    pub anomalies: u64,
}

/// Whether `r` applies to a container with figures `i`.
pub fn applies(r: Recommendation, i: &Inputs) -> bool {
    let memory_over = |value: Option<f64>, ratio: f64| match (value, i.memory_limit_bytes) {
        (Some(v), Some(limit)) if limit > 0.0 => v > ratio * limit,
        _ => false,
    };
    match r {
        Recommendation::RaiseCpuLimit => {
            let ceiling = i.cpu_limit_cores.filter(|c| *c > 0.0).unwrap_or(1.0);
            i.cpu_p95_cores.is_some_and(|p| p > CPU_P95_RATIO * ceiling)
        }
        Recommendation::InvestigateCpuPattern => {
            i.cpu_stddev_cores.is_some_and(|s| s > CPU_STDDEV_CORES)
        }
        Recommendation::RaiseMemoryLimit => memory_over(i.memory_p95_bytes, MEMORY_P95_RATIO),
        Recommendation::OomRisk => memory_over(i.memory_max_bytes, MEMORY_MAX_RATIO),
        Recommendation::ReviewApplication => i.anomalies > MAX_ANOMALIES,
    }
}

/// The recommendations that apply, in [`Recommendation::ALL`] order.
pub fn evaluate(i: &Inputs) -> Vec<Recommendation> {
    Recommendation::ALL
        .into_iter()
        .filter(|r| applies(*r, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Recommendation::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn cpu_limit_against_quota_or_one_core() {
        let limited = |p95| Inputs {
            cpu_p95_cores: Some(p95),
            cpu_limit_cores: Some(0.5),
            ..Default::default()
        };
        assert!(
            !applies(RaiseCpuLimit, &limited(0.40)),
            "exactly 80 % does not trigger"
        );
        assert!(applies(RaiseCpuLimit, &limited(0.401)));
        let unlimited = |p95| Inputs {
            cpu_p95_cores: Some(p95),
            ..Default::default()
        };
        assert!(!applies(RaiseCpuLimit, &unlimited(0.80)));
        assert!(applies(RaiseCpuLimit, &unlimited(0.81)));
        assert!(!applies(RaiseCpuLimit, &Inputs::default()));
    }

    #[test]
    fn cpu_pattern_at_twenty_points() {
        let with = |s| Inputs {
            cpu_stddev_cores: Some(s),
            ..Default::default()
        };
        assert!(!applies(InvestigateCpuPattern, &with(0.20)));
        assert!(applies(InvestigateCpuPattern, &with(0.2001)));
    }

    #[test]
    fn memory_rules_need_a_limit() {
        let with = |p95, max, limit| Inputs {
            memory_p95_bytes: Some(p95),
            memory_max_bytes: Some(max),
            memory_limit_bytes: limit,
            ..Default::default()
        };
        assert!(!applies(
            RaiseMemoryLimit,
            &with(0.85 * GIB, 0.9 * GIB, Some(GIB))
        ));
        assert!(applies(
            RaiseMemoryLimit,
            &with(0.86 * GIB, 0.9 * GIB, Some(GIB))
        ));
        assert!(!applies(OomRisk, &with(0.5 * GIB, 0.95 * GIB, Some(GIB))));
        assert!(applies(OomRisk, &with(0.5 * GIB, 0.96 * GIB, Some(GIB))));
        assert!(!applies(
            RaiseMemoryLimit,
            &with(10.0 * GIB, 10.0 * GIB, None)
        ));
        assert!(!applies(OomRisk, &with(10.0 * GIB, 10.0 * GIB, None)));
        assert!(!applies(OomRisk, &with(1.0, 1.0, Some(0.0))));
    }

    #[test]
    fn review_after_more_than_ten_anomalies() {
        let with = |n| Inputs {
            anomalies: n,
            ..Default::default()
        };
        assert!(!applies(ReviewApplication, &with(10)));
        assert!(applies(ReviewApplication, &with(11)));
    }

    #[test]
    fn evaluate_keeps_order() {
        let i = Inputs {
            cpu_p95_cores: Some(0.9),
            cpu_stddev_cores: Some(0.3),
            anomalies: 12,
            ..Default::default()
        };
        assert_eq!(
            evaluate(&i),
            vec![RaiseCpuLimit, InvestigateCpuPattern, ReviewApplication]
        );
    }
}
