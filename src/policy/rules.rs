//! Rule ids, categories and the finding every check produces.

use crate::events::{Mode, Severity};

/// A check. The id is a stable label value that alert rules and dashboards select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The image tag is not allowed.
    ImageTag,
    /// The image carries a blocked vulnerability.
    ImageCve,
    /// The image carries a vulnerability above the tolerated severity.
    ImageSeverity,
    /// No vulnerability report covers the image.
    ImageUnscanned,
    /// A process outside the allowed set runs.
    RuntimeProcess,
    /// A blocked syscall is reachable.
    RuntimeSyscall,
    /// CPU above the ceiling.
    RuntimeCpu,
    /// Memory above the ceiling.
    RuntimeMemory,
    /// A host port outside the allowed set is published.
    NetworkPort,
    /// A container port outside the allowed set is exposed but not published.
    NetworkExposedPort,
    /// A live connection to a blocked address.
    NetworkDestination,
}

impl Rule {
    /// Every rule, in documentation order.
    pub const ALL: [Rule; 11] = [
        Self::ImageTag,
        Self::ImageCve,
        Self::ImageSeverity,
        Self::ImageUnscanned,
        Self::RuntimeProcess,
        Self::RuntimeSyscall,
        Self::RuntimeCpu,
        Self::RuntimeMemory,
        Self::NetworkPort,
        Self::NetworkExposedPort,
        Self::NetworkDestination,
    ];

    /// The `rule` label value.
    pub fn id(self) -> &'static str {
        match self {
            Self::ImageTag => "image_tag",
            Self::ImageCve => "image_cve",
            Self::ImageSeverity => "image_severity",
            Self::ImageUnscanned => "image_unscanned",
            Self::RuntimeProcess => "runtime_process",
            Self::RuntimeSyscall => "runtime_syscall",
            Self::RuntimeCpu => "runtime_cpu",
            Self::RuntimeMemory => "runtime_memory",
            Self::NetworkPort => "network_port",
            Self::NetworkExposedPort => "network_exposed_port",
            Self::NetworkDestination => "network_destination",
        }
    }

    /// The `category` label value.
    pub fn category(self) -> &'static str {
        match self {
            Self::ImageTag | Self::ImageCve | Self::ImageSeverity | Self::ImageUnscanned => "image",
            Self::RuntimeProcess
            | Self::RuntimeSyscall
            | Self::RuntimeCpu
            | Self::RuntimeMemory => "runtime",
            Self::NetworkPort | Self::NetworkExposedPort | Self::NetworkDestination => "network",
        }
    }

    /// Severity unless the policy overrides it.
    pub fn default_severity(self) -> Severity {
        match self {
            Self::ImageCve | Self::RuntimeSyscall | Self::NetworkDestination => Severity::Critical,
            Self::ImageSeverity | Self::RuntimeProcess | Self::NetworkPort => Severity::High,
            Self::ImageTag | Self::RuntimeCpu | Self::RuntimeMemory => Severity::Medium,
            Self::ImageUnscanned | Self::NetworkExposedPort => Severity::Low,
        }
    }
}

/// One condition that holds for one container in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Policy name.
    pub policy: String,
    /// Rule.
    pub rule: Rule,
    /// Severity.
    pub severity: Severity,
    /// Mode of the policy.
    pub mode: Mode,
    /// What violated (tag, CVE, process, syscall, port, address).
    pub subject: String,
    /// Why, for people.
    pub message: String,
}
