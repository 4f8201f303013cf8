//! Runtime rules: processes outside the allowed set, blocked syscalls the container's
//! configuration lets through, and CPU and memory ceilings.

use std::collections::BTreeSet;

use bollard::models::{ContainerInspectResponse, ContainerTopResponse};
use serde::Deserialize;

use crate::model::ContainerMeta;

use super::config::RuntimePolicy;
use super::rules::{Finding, Rule};

/// Executable names of the processes in a `top` answer, deduplicated.
///
/// The kernel's task name (`comm`) is preferred: it names what actually runs even when a
/// shell runs a builtin in a forked child or a program rewrites its argv. `comm` is cut at
/// 15 bytes, so when argv[0]'s basename extends it, that is used. With the engine's default
/// `ps -ef` columns only the command line (`CMD`) is there and argv[0] is used.
pub fn process_names(top: &ContainerTopResponse) -> BTreeSet<String> {
    let titles = top.titles.as_deref().unwrap_or_default();
    let comm_col = titles.iter().position(|t| t == "COMMAND" || t == "COMM");
    let cmd_col = titles
        .iter()
        .rposition(|t| t == "CMD" || t == "COMMAND" || t == "ARGS")
        .unwrap_or(titles.len().saturating_sub(1));
    let comm_col = comm_col.filter(|c| *c != cmd_col);
    let mut out = BTreeSet::new();
    for row in top.processes.as_deref().unwrap_or_default() {
        let argv0 = row.get(cmd_col).and_then(|c| executable_name(c));
        let comm = comm_col
            .and_then(|c| row.get(c))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let name = match (comm, argv0) {
            (Some(comm), Some(argv0)) if comm.len() >= 15 && argv0.starts_with(&comm) => {
                Some(argv0)
            }
            (Some(comm), _) => Some(comm),
            (None, argv0) => argv0,
        };
        out.extend(name);
    }
    out
}

/// `/usr/bin/python3 -m x` → `python3`; kernel-thread style `[kworker]` → `kworker`.
fn executable_name(cmdline: &str) -> Option<String> {
    let first = cmdline.split_whitespace().next()?;
    let first = first.trim_start_matches('[').trim_end_matches(']');
    let base = first.rsplit('/').next().unwrap_or(first);
    let base = base.trim_end_matches(':');
    (!base.is_empty()).then(|| base.to_string())
}

/// `runtime_process`: one finding per executable outside `allowed_processes`.
pub fn check_processes(policy: &RuntimePolicy, names: &BTreeSet<String>) -> Vec<Finding> {
    let Some(allowed) = &policy.allowed_processes else {
        return Vec::new();
    };
    let globs: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
    names
        .iter()
        .filter(|n| !allowed.iter().any(|p| p.is_match(n)))
        .map(|n| Finding {
            policy: policy.name.clone(),
            rule: Rule::RuntimeProcess,
            severity: policy.severity(Rule::RuntimeProcess),
            mode: policy.mode,
            subject: n.clone(),
            message: format!(
                "process {n:?} is running and matches none of the allowed processes [{}]",
                globs.join(", ")
            ),
        })
        .collect()
}

/// Syscalls Docker's default seccomp profile blocks, with the capability that makes the
/// profile allow them (`None`: blocked whatever the capabilities).
const DEFAULT_PROFILE_BLOCKS: &[(&str, Option<&str>)] = &[
    ("acct", Some("SYS_PACCT")),
    ("add_key", None),
    ("bpf", Some("SYS_ADMIN")),
    ("clock_adjtime", Some("SYS_TIME")),
    ("clock_settime", Some("SYS_TIME")),
    ("create_module", None),
    ("delete_module", Some("SYS_MODULE")),
    ("fanotify_init", Some("SYS_ADMIN")),
    ("finit_module", Some("SYS_MODULE")),
    ("get_kernel_syms", None),
    ("get_mempolicy", Some("SYS_NICE")),
    ("init_module", Some("SYS_MODULE")),
    ("ioperm", Some("SYS_RAWIO")),
    ("iopl", Some("SYS_RAWIO")),
    ("kcmp", Some("SYS_PTRACE")),
    ("kexec_file_load", Some("SYS_BOOT")),
    ("kexec_load", Some("SYS_BOOT")),
    ("keyctl", None),
    ("lookup_dcookie", Some("SYS_ADMIN")),
    ("mbind", Some("SYS_NICE")),
    ("mount", Some("SYS_ADMIN")),
    ("move_pages", Some("SYS_NICE")),
    ("name_to_handle_at", Some("SYS_ADMIN")),
    ("nfsservctl", None),
    ("open_by_handle_at", Some("DAC_READ_SEARCH")),
    ("perf_event_open", Some("SYS_ADMIN")),
    ("pivot_root", Some("SYS_ADMIN")),
    ("process_vm_readv", Some("SYS_PTRACE")),
    ("process_vm_writev", Some("SYS_PTRACE")),
    ("ptrace", Some("SYS_PTRACE")),
    ("query_module", None),
    ("quotactl", Some("SYS_ADMIN")),
    ("reboot", Some("SYS_BOOT")),
    ("request_key", None),
    ("set_mempolicy", Some("SYS_NICE")),
    ("setns", Some("SYS_ADMIN")),
    ("settimeofday", Some("SYS_TIME")),
    ("stime", Some("SYS_TIME")),
    ("swapoff", Some("SYS_ADMIN")),
    ("swapon", Some("SYS_ADMIN")),
    ("syslog", Some("SYSLOG")),
    ("sysfs", None),
    ("_sysctl", None),
    ("umount", Some("SYS_ADMIN")),
    ("umount2", Some("SYS_ADMIN")),
    ("unshare", Some("SYS_ADMIN")),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("vm86", None),
    ("vm86old", None),
];

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// `sys_admin`, `SYS_ADMIN`, `CAP_SYS_ADMIN` → `SYS_ADMIN`.
pub fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}

/// The effective capability set: Docker's defaults plus `CapAdd` minus `CapDrop`; `ALL` on
/// either side stands for every capability. Returns (all, explicit set).
fn capabilities(inspect: &ContainerInspectResponse) -> (bool, BTreeSet<String>) {
    let hc = inspect.host_config.as_ref();
    let add: Vec<String> = hc
        .and_then(|h| h.cap_add.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| normalize_cap(c))
        .collect();
    let drop: Vec<String> = hc
        .and_then(|h| h.cap_drop.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| normalize_cap(c))
        .collect();
    let drop_all = drop.iter().any(|c| c == "ALL");
    let mut set: BTreeSet<String> = if drop_all {
        BTreeSet::new()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    let mut all = add.iter().any(|c| c == "ALL");
    set.extend(add.iter().filter(|c| *c != "ALL").cloned());
    for c in &drop {
        set.remove(c);
    }
    if drop_all {
        all = false;
    }
    // With ALL added, drops are exceptions: keep them in a deny list encoded as `!CAP`.
    if all {
        set = drop.iter().map(|c| format!("!{c}")).collect();
    }
    (all, set)
}

fn has_cap(caps: &(bool, BTreeSet<String>), cap: &str) -> bool {
    if caps.0 {
        !caps.1.contains(&format!("!{cap}"))
    } else {
        caps.1.contains(cap)
    }
}

/// The seccomp setting of a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// Docker's built-in default profile.
    Default,
    /// `seccomp=unconfined`.
    Unconfined,
    /// A custom profile (its JSON arrives inside `SecurityOpt`).
    Custom(Profile),
    /// A custom profile dockwatch could not parse; treated as allowing everything.
    Unreadable(String),
}

/// The parts of a seccomp profile that decide whether a syscall is allowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Action for syscalls no rule names.
    pub default_action: String,
    /// Rules.
    #[serde(default)]
    pub syscalls: Option<Vec<ProfileRule>>,
}

/// One rule of a seccomp profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRule {
    /// Syscall names.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Older single-name form.
    #[serde(default)]
    pub name: Option<String>,
    /// `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`…
    pub action: String,
    /// Argument filters; a rule with any only partly allows the syscall.
    #[serde(default)]
    pub args: Option<Vec<serde_json::Value>>,
    /// Conditions under which the rule applies.
    #[serde(default)]
    pub includes: Option<Filter>,
    /// Conditions under which it does not.
    #[serde(default)]
    pub excludes: Option<Filter>,
}

/// `includes` / `excludes` of a profile rule; only capabilities are considered.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct Filter {
    /// Capabilities.
    #[serde(default)]
    pub caps: Option<Vec<String>>,
}

fn allows(action: &str) -> bool {
    matches!(
        action,
        "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY"
    )
}

/// Reads the seccomp setting from `SecurityOpt` (`seccomp=…` or the old `seccomp:…`).
pub fn seccomp(inspect: &ContainerInspectResponse) -> Seccomp {
    let opts = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.security_opt.as_deref())
        .unwrap_or_default();
    for opt in opts {
        let Some(value) = opt
            .strip_prefix("seccomp=")
            .or_else(|| opt.strip_prefix("seccomp:"))
        else {
            continue;
        };
        let value = value.trim();
        if value == "unconfined" {
            return Seccomp::Unconfined;
        }
        if value.is_empty() || value == "builtin" || value == "default" {
            return Seccomp::Default;
        }
        return match serde_json::from_str::<Profile>(value) {
            Ok(p) => Seccomp::Custom(p),
            Err(e) => Seccomp::Unreadable(e.to_string()),
        };
    }
    Seccomp::Default
}

/// Why `syscall` is reachable, or `None` when the configuration blocks it.
pub fn syscall_reachable(inspect: &ContainerInspectResponse, syscall: &str) -> Option<String> {
    let privileged = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.privileged)
        .unwrap_or(false);
    if privileged {
        return Some("the container is privileged (no seccomp filter, every capability)".into());
    }
    let caps = capabilities(inspect);
    match seccomp(inspect) {
        Seccomp::Unconfined => Some("seccomp is disabled (seccomp=unconfined)".into()),
        Seccomp::Unreadable(e) => Some(format!(
            "the custom seccomp profile could not be read ({e}); assuming it allows {syscall}"
        )),
        Seccomp::Custom(p) => {
            let mut denied_by_rule = false;
            for rule in p.syscalls.as_deref().unwrap_or_default() {
                let named = rule.names.iter().flatten().any(|n| n == syscall)
                    || rule.name.as_deref() == Some(syscall);
                if !named || !rule_applies(rule, &caps) {
                    continue;
                }
                if allows(&rule.action) {
                    let partly = if rule.args.as_ref().is_some_and(|a| !a.is_empty()) {
                        " (with argument conditions)"
                    } else {
                        ""
                    };
                    return Some(format!(
                        "the custom seccomp profile allows {syscall} ({}){partly}",
                        rule.action
                    ));
                }
                denied_by_rule = true;
            }
            if !denied_by_rule && allows(&p.default_action) {
                return Some(format!(
                    "the custom seccomp profile allows {syscall} (defaultAction {})",
                    p.default_action
                ));
            }
            None
        }
        Seccomp::Default => match DEFAULT_PROFILE_BLOCKS.iter().find(|(s, _)| *s == syscall) {
            None => Some(format!("the default seccomp profile allows {syscall}")),
            Some((_, Some(cap))) if has_cap(&caps, cap) => Some(format!(
                "the default seccomp profile allows {syscall} with capability CAP_{cap}, which the container has"
            )),
            Some(_) => None,
        },
    }
}

fn rule_applies(rule: &ProfileRule, caps: &(bool, BTreeSet<String>)) -> bool {
    let inc = rule
        .includes
        .as_ref()
        .and_then(|f| f.caps.as_deref())
        .unwrap_or_default();
    let exc = rule
        .excludes
        .as_ref()
        .and_then(|f| f.caps.as_deref())
        .unwrap_or_default();
    inc.iter().all(|c| has_cap(caps, &normalize_cap(c)))
        && !exc.iter().any(|c| has_cap(caps, &normalize_cap(c)))
}

/// `runtime_syscall`: one finding per blocked syscall the configuration lets through.
pub fn check_syscalls(policy: &RuntimePolicy, meta: &ContainerMeta) -> Vec<Finding> {
    policy
        .blocked_syscalls
        .iter()
        .filter_map(|s| {
            let why = syscall_reachable(&meta.inspect, s)?;
            Some(Finding {
                policy: policy.name.clone(),
                rule: Rule::RuntimeSyscall,
                severity: policy.severity(Rule::RuntimeSyscall),
                mode: policy.mode,
                subject: s.clone(),
                message: format!("blocked syscall {s} is reachable: {why}"),
            })
        })
        .collect()
}

/// Whether a ceiling is exceeded now: CPU in cores × 100 against `max_cpu_percent`.
pub fn cpu_over(policy: &RuntimePolicy, cpu_cores: Option<f64>) -> Option<(f64, f64)> {
    let max = policy.max_cpu_percent?.0;
    let pct = cpu_cores? * 100.0;
    (pct > max).then_some((pct, max))
}

/// Whether the working set exceeds `max_memory_mb` × 2^20 bytes.
pub fn memory_over(policy: &RuntimePolicy, working_set: Option<u64>) -> Option<(f64, f64)> {
    let max = policy.max_memory_bytes()?;
    let ws = working_set? as f64;
    (ws > max).then_some((ws, max))
}

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::super::tests::fixture_meta;
    use super::*;
    use crate::events::Severity;

    fn policy(yaml: &str) -> RuntimePolicy {
        parse(
            "p.yaml",
            &format!("runtime_policies:\n  - name: rt\n{yaml}"),
        )
        .unwrap()
        .runtime_policies
        .remove(0)
    }

    fn top(name: &str) -> ContainerTopResponse {
        crate::docker::fake::fixture(name)
    }

    #[test]
    fn process_names_from_both_top_layouts() {
        // The recorded container runs `sh -c 'yes > /dev/null & sleep 600'`: busybox sh runs
        // `yes` in a forked child that keeps the shell's argv; only comm tells.
        let names = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        assert_eq!(
            process_names(&top("top-policy-plain-default.json")),
            names(&["sh", "sleep"])
        );
        assert_eq!(
            process_names(&top("top-policy-plain.json")),
            names(&["sleep", "yes"])
        );
        let long = ContainerTopResponse {
            titles: Some(vec!["PID".into(), "COMMAND".into(), "COMMAND".into()]),
            processes: Some(vec![vec![
                "1".into(),
                "kube-controller".into(),
                "/usr/local/bin/kube-controller-manager --v=2".into(),
            ]]),
        };
        assert_eq!(process_names(&long), names(&["kube-controller-manager"]));
        assert_eq!(
            executable_name("/usr/local/bin/node server.js").as_deref(),
            Some("node")
        );
        assert_eq!(
            executable_name("nginx: worker process").as_deref(),
            Some("nginx")
        );
    }

    #[test]
    fn disallowed_processes() {
        let p = policy("    allowed_processes: [sleep, \"ng*\"]\n");
        let names: BTreeSet<String> = ["sleep", "nginx", "sh", "yes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = check_processes(&p, &names);
        let subjects: Vec<&str> = found.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, vec!["sh", "yes"]);
        assert_eq!(found[0].severity, Severity::High);
        assert_eq!(
            found[1].message,
            "process \"yes\" is running and matches none of the allowed processes [sleep, ng*]"
        );
    }

    fn reach(meta: &ContainerMeta, s: &str) -> Option<String> {
        syscall_reachable(&meta.inspect, s)
    }

    #[test]
    fn default_profile_and_default_caps_block_the_usual_suspects() {
        let m = fixture_meta("inspect-policy-plain.json");
        assert_eq!(reach(&m, "ptrace"), None);
        assert_eq!(reach(&m, "mount"), None);
        assert_eq!(reach(&m, "keyctl"), None);
        assert_eq!(
            reach(&m, "chmod").as_deref(),
            Some("the default seccomp profile allows chmod")
        );
    }

    #[test]
    fn privileged_and_unconfined() {
        let m = fixture_meta("inspect-policy-priv.json");
        assert_eq!(
            reach(&m, "mount").as_deref(),
            Some("the container is privileged (no seccomp filter, every capability)")
        );
        let m = fixture_meta("inspect-policy-unconfined.json");
        assert_eq!(
            reach(&m, "ptrace").as_deref(),
            Some("seccomp is disabled (seccomp=unconfined)")
        );
    }

    #[test]
    fn added_capabilities_in_every_spelling() {
        let m = fixture_meta("inspect-policy-capadd.json");
        assert_eq!(
            reach(&m, "mount").as_deref(),
            Some(
                "the default seccomp profile allows mount with capability CAP_SYS_ADMIN, which the container has"
            )
        );
        assert!(reach(&m, "ptrace").unwrap().contains("CAP_SYS_PTRACE"));
        assert_eq!(reach(&m, "reboot"), None);
        for spelling in [
            "sys_admin",
            "SYS_ADMIN",
            "CAP_SYS_ADMIN",
            "cap_sys_admin",
            "ALL",
            "all",
        ] {
            let m = super::super::tests::meta_with(|i| {
                i.host_config.as_mut().unwrap().cap_add = Some(vec![spelling.to_string()]);
            });
            assert!(reach(&m, "umount2").is_some(), "{spelling}");
        }
        // ALL minus a drop; and a drop that cancels an add.
        let m = fixture_meta("inspect-policy-capall.json");
        assert_eq!(reach(&m, "mount"), None);
        assert!(reach(&m, "ptrace").is_some());
        let m = super::super::tests::meta_with(|i| {
            let hc = i.host_config.as_mut().unwrap();
            hc.cap_add = Some(vec!["SYS_PTRACE".into()]);
            hc.cap_drop = Some(vec!["cap_sys_ptrace".into()]);
        });
        assert_eq!(reach(&m, "ptrace"), None);
    }

    #[test]
    fn custom_profiles() {
        // The recorded profile: allow by default, deny ptrace and mount.
        let m = fixture_meta("inspect-policy-profile.json");
        assert_eq!(reach(&m, "ptrace"), None);
        assert_eq!(reach(&m, "mount"), None);
        assert_eq!(
            reach(&m, "umount").as_deref(),
            Some("the custom seccomp profile allows umount (defaultAction SCMP_ACT_ALLOW)")
        );
        let with_profile = |json: &str| {
            let opt = format!("seccomp={json}");
            super::super::tests::meta_with(move |i| {
                i.host_config.as_mut().unwrap().security_opt = Some(vec![opt.clone()]);
            })
        };
        let m = with_profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","ptrace"],"action":"SCMP_ACT_ALLOW"},{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
        );
        assert_eq!(
            reach(&m, "ptrace").as_deref(),
            Some("the custom seccomp profile allows ptrace (SCMP_ACT_ALLOW)")
        );
        assert_eq!(reach(&m, "mount"), None, "rule needs CAP_SYS_ADMIN");
        assert_eq!(reach(&m, "umount"), None);
        let m = with_profile(
            r#"{"defaultAction":"SCMP_ACT_KILL","syscalls":[{"name":"ptrace","action":"SCMP_ACT_LOG","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert_eq!(
            reach(&m, "ptrace").as_deref(),
            Some(
                "the custom seccomp profile allows ptrace (SCMP_ACT_LOG) (with argument conditions)"
            )
        );
        let m = with_profile("{not json");
        assert!(
            reach(&m, "ptrace")
                .unwrap()
                .starts_with("the custom seccomp profile could not be read")
        );
        let m = super::super::tests::meta_with(|i| {
            i.host_config.as_mut().unwrap().security_opt = Some(vec!["seccomp:unconfined".into()]);
        });
        assert!(reach(&m, "mount").is_some());
    }

    #[test]
    fn ceilings_in_base_units() {
        let p = policy("    max_cpu_percent: 80\n    max_memory_mb: 1\n");
        assert_eq!(cpu_over(&p, Some(0.5)), None);
        assert_eq!(cpu_over(&p, Some(1.2)), Some((120.0, 80.0)));
        assert_eq!(cpu_over(&p, None), None);
        assert_eq!(memory_over(&p, Some(1048576)), None);
        assert_eq!(memory_over(&p, Some(1048577)), Some((1048577.0, 1048576.0)));
    }
}
