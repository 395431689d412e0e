//! Finding a node's pods, their processes and their network namespaces through `/proc` alone:
//! no CRI socket, no exec, nothing that knows about Kubernetes objects.
//!
//! kubelet puts every pod in a cgroup named after its UID, so `/proc/PID/cgroup` tells which pod
//! (and which container) a process belongs to, and `/proc/PID/ns/net` which network namespace
//! it lives in. The module has three layers:
//! - **The parser** ([`parse_proc_cgroup`], [`parse_cgroup_path`]): pure, for both cgroup
//!   drivers (cgroupfs and systemd), every QoS class, cgroup v1, v2 and hybrid, and any prefix
//!   before `kubepods` (nested nodes such as kind, or a test-only parent).
//! - **Discovery** ([`discover_pods`], [`find_pod`], [`pod_netns`]): scans a proc root (normally
//!   `/proc`, which on a `hostPID` pod is the node's) and pins every pod process as a
//!   [`ProcessTarget`].
//! - **The entries directory** ([`PodNetnsDir`]): one file per namespace, `node` for the host
//!   and `pod-<uid>` for each pod, so that [`crate::net_partition::NetlinkRuleTable::new`]
//!   enters pod namespaces by name, unchanged.
//!
//! A process counts once, as of the moment it was read; threads are not looked at, because a
//! signal reaches the whole process and kubelet places whole processes.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::process::{read_proc_stat, ProcessTarget};
use crate::{Error, Result};

/// The entry that names the node's own (host) network namespace.
pub const NODE_ENTRY: &str = "node";

/// The entry name of a pod's network namespace: `pod-<uid>`.
pub fn pod_entry_name(uid: &PodUid) -> String {
    format!("pod-{uid}")
}

// ---------------------------------------------------------------------------------------------
// The parser.
// ---------------------------------------------------------------------------------------------

/// A pod UID as kubelet writes it into cgroup names, normalised to lower case with dashes.
///
/// API pods have RFC 4122 UIDs (`8-4-4-4-12` hex digits; the systemd driver writes them with
/// underscores). Static pods have the 32 hex digits of their manifest hash, without dashes,
/// which is also the value of their mirror pod's `kubernetes.io/config.mirror` annotation; they
/// are kept as they are, since no dashes exist to restore.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodUid(String);

impl PodUid {
    /// Parses a UID with dashes or underscores, in any case; `None` if it is not one.
    pub fn parse(text: &str) -> Option<PodUid> {
        let normalised: String = text
            .chars()
            .map(|c| {
                if c == '_' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let bytes = normalised.as_bytes();
        let valid = match bytes.len() {
            36 => bytes.iter().enumerate().all(|(i, b)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    *b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            }),
            32 => bytes.iter().all(u8::is_ascii_hexdigit),
            _ => false,
        };
        valid.then_some(PodUid(normalised))
    }

    /// The normalised UID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PodUid {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        PodUid::parse(&text).ok_or_else(|| format!("{text:?} is not a pod UID"))
    }
}

impl From<PodUid> for String {
    fn from(uid: PodUid) -> String {
        uid.0
    }
}

/// The QoS class kubelet files a pod under (the level between `kubepods` and the pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `burstable`.
    Burstable,
    /// Under `besteffort`.
    BestEffort,
}

/// Where a process sits in kubelet's cgroup tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodCgroup {
    /// The pod.
    pub pod_uid: PodUid,
    /// Its QoS class.
    pub qos: QosClass,
    /// The container's id (lower-case hex, runtime prefix and `.scope` removed), or `None` when
    /// the process sits in the pod's own cgroup or in one whose name is no container id. The
    /// pause (sandbox) container is one container among the others here: only the runtime
    /// knows which one it is.
    pub container_id: Option<String>,
    /// Whether the process is a runtime's monitor for that container rather than the
    /// container itself (CRI-O's `crio-conmon-<id>`, with `conmon_cgroup = "pod"`). Pausing it
    /// is harmless; killing it leaves the runtime without its container's exit status.
    pub runtime_monitor: bool,
}

/// Which kind of `/proc/PID/cgroup` line a path came from, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hierarchy {
    /// A cgroup v1 hierarchy with resource controllers (`4:memory:/…`, `6:cpu,cpuacct:/…`).
    V1Controllers,
    /// A named cgroup v1 hierarchy without controllers (`1:name=systemd:/…`).
    V1Named,
    /// The cgroup v2 hierarchy (`0::/…`).
    V2,
}

/// Which pod (and container) a process belongs to, from the text of its `/proc/PID/cgroup`;
/// `None` for a process outside every pod, and for lines that are not cgroup lines.
///
/// Hybrid hosts list the v1 hierarchies and v2 in one file, and the lines may disagree, e.g.
/// when kubelet uses the cgroupfs driver and systemd keeps the process's v2 cgroup. The rule:
/// the first line naming a pod wins, v1 controller lines before named v1 hierarchies
/// (`name=systemd`) before v2. The v1 controllers go first because on a hybrid host that is
/// where kubelet enforces the pod's limits, so that is where the runtime must have put the
/// process; the others follow because systemd may keep its own idea of the process there. A
/// line that names no pod never outvotes one that does.
pub fn parse_proc_cgroup(text: &str) -> Option<PodCgroup> {
    let mut best: Option<(Hierarchy, PodCgroup)> = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id.parse::<u32>().is_err() {
            continue;
        }
        let hierarchy = if controllers.is_empty() {
            Hierarchy::V2
        } else if controllers.split(',').all(|c| c.starts_with("name=")) {
            Hierarchy::V1Named
        } else {
            Hierarchy::V1Controllers
        };
        if best.as_ref().is_some_and(|(kind, _)| *kind <= hierarchy) {
            continue;
        }
        if let Some(found) = parse_cgroup_path(path) {
            best = Some((hierarchy, found));
        }
    }
    best.map(|(_, found)| found)
}

/// Which pod (and container) a cgroup path belongs to; `None` if it is no pod's.
///
/// Both kubelet drivers are recognised, in every QoS class:
/// - cgroupfs: `kubepods[/burstable|/besteffort]/pod<uid>[/<container>]`, where the container
///   is `<id>` (containerd, Docker) or `crio-<id>`;
/// - systemd: `kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid>.slice`, then
///   `<runtime>-<id>.scope` (`cri-containerd-`, `crio-`, `crio-conmon-`, `docker-`). With
///   kubelet's `--cgroup-root`, every slice carries its prefix (kind: `kubelet-kubepods.slice`).
///
/// Anything before `kubepods` is allowed (nested nodes, a test-only parent), and so is anything
/// below the container (cgroups a container makes for itself). The first `kubepods` that is
/// followed by a pod wins, so a node running inside another cluster's pod sees the outer pod.
pub fn parse_cgroup_path(path: &str) -> Option<PodCgroup> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    (0..components.len()).find_map(|start| pod_at(&components[start..]))
}

/// A pod whose `kubepods` level is `components[0]`.
fn pod_at(components: &[&str]) -> Option<PodCgroup> {
    let (first, rest) = components.split_first()?;
    if *first == "kubepods" {
        return cgroupfs_pod(rest);
    }
    let stem = first.strip_suffix(".slice")?;
    if stem == "kubepods" || stem.ends_with("-kubepods") {
        systemd_pod(stem, rest)
    } else {
        None
    }
}

/// The levels below a cgroupfs `kubepods`.
fn cgroupfs_pod(below: &[&str]) -> Option<PodCgroup> {
    let (qos, below) = match *below.first()? {
        "burstable" => (QosClass::Burstable, &below[1..]),
        "besteffort" => (QosClass::BestEffort, &below[1..]),
        _ => (QosClass::Guaranteed, below),
    };
    let (pod, below) = below.split_first()?;
    let pod_uid = PodUid::parse(pod.strip_prefix("pod")?)?;
    Some(with_container(pod_uid, qos, below.first().copied()))
}

/// The levels below a systemd `<kubepods>.slice`. Each slice's name starts with its parent's
/// stem and a dash, which is how systemd nests slices.
fn systemd_pod(kubepods: &str, below: &[&str]) -> Option<PodCgroup> {
    let child_of = |parent: &str, component: &str| -> Option<String> {
        let stem = component.strip_suffix(".slice")?;
        Some(stem.strip_prefix(parent)?.strip_prefix('-')?.to_owned())
    };
    let (first, rest) = below.split_first()?;
    let level = child_of(kubepods, first)?;
    let (qos, pod, below) = match level.as_str() {
        "burstable" | "besteffort" => {
            let qos = if level == "burstable" {
                QosClass::Burstable
            } else {
                QosClass::BestEffort
            };
            let (pod_component, below) = rest.split_first()?;
            let pod = child_of(&format!("{kubepods}-{level}"), pod_component)?;
            (qos, pod, below)
        }
        _ => (QosClass::Guaranteed, level, rest),
    };
    let pod_uid = PodUid::parse(pod.strip_prefix("pod")?)?;
    Some(with_container(pod_uid, qos, below.first().copied()))
}

/// A [`PodCgroup`] whose level below the pod, if any, is `container`.
fn with_container(pod_uid: PodUid, qos: QosClass, container: Option<&str>) -> PodCgroup {
    let parsed = container.and_then(|component| {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        let (runtime, id) = match name.rsplit_once('-') {
            Some((runtime, id)) => (Some(runtime), id),
            None => (None, name),
        };
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            (
                id.to_ascii_lowercase(),
                runtime.is_some_and(|r| r.ends_with("-conmon")),
            )
        })
    });
    let (container_id, runtime_monitor) = match parsed {
        Some((id, monitor)) => (Some(id), monitor),
        None => (None, false),
    };
    PodCgroup {
        pod_uid,
        qos,
        container_id,
        runtime_monitor,
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery.
// ---------------------------------------------------------------------------------------------

/// One process of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodProcess {
    /// The process, pinned by its start time, labelled `pod <uid> container <id>`.
    pub target: ProcessTarget,
    /// Where it sits in the pod's cgroups.
    pub cgroup: PodCgroup,
}

/// Every pod found on the node, with its processes sorted by PID.
pub type PodProcesses = BTreeMap<PodUid, Vec<PodProcess>>;

/// Scans `<proc_root>/*/cgroup` and returns every pod that has a live process, with those
/// processes. Zombies, and processes that exit (or whose PID is recycled) during the scan, are
/// skipped without error.
///
/// # Errors
/// [`Error::ProcList`] if `proc_root` cannot be listed; [`Error::ProcRead`] if a process's
/// `cgroup` file exists but cannot be read.
pub fn discover_pods(proc_root: &Path) -> Result<PodProcesses> {
    scan(proc_root, |_| true)
}

/// The live processes of one pod, sorted by PID; empty when the pod has none on this node.
///
/// # Errors
/// As [`discover_pods`].
pub fn find_pod(proc_root: &Path, uid: &PodUid) -> Result<Vec<PodProcess>> {
    Ok(scan(proc_root, |cgroup| cgroup.pod_uid == *uid)?
        .remove(uid)
        .unwrap_or_default())
}

/// Scans `proc_root`, keeping the pod processes that `wanted` accepts.
fn scan(proc_root: &Path, wanted: impl Fn(&PodCgroup) -> bool) -> Result<PodProcesses> {
    let list_error = |source| Error::ProcList {
        path: proc_root.to_owned(),
        source,
    };
    let mut pods = PodProcesses::new();
    for entry in fs::read_dir(proc_root).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        if let Some(process) = pod_process(proc_root, pid)? {
            if wanted(&process.cgroup) {
                pods.entry(process.cgroup.pod_uid.clone())
                    .or_default()
                    .push(process);
            }
        }
    }
    for processes in pods.values_mut() {
        processes.sort_by_key(|p| p.target.pid);
    }
    Ok(pods)
}

/// Reads one PID: `None` unless it is a live process of some pod.
///
/// The start time is read before and after the cgroup file, so that a PID that exits and is
/// recycled in between is never pinned with the cgroup of the process it replaced.
fn pod_process(proc_root: &Path, pid: i32) -> Result<Option<PodProcess>> {
    let Some(before) = read_proc_stat(proc_root, pid).filter(|stat| is_live(stat.state)) else {
        return Ok(None);
    };
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if is_vanished(&e) => return Ok(None),
        Err(source) => return Err(Error::ProcRead { path, source }),
    };
    let Some(cgroup) = parse_proc_cgroup(&text) else {
        return Ok(None);
    };
    let unchanged = read_proc_stat(proc_root, pid)
        .is_some_and(|after| after.start_ticks == before.start_ticks && is_live(after.state));
    if !unchanged {
        return Ok(None);
    }
    let label = match (&cgroup.container_id, cgroup.runtime_monitor) {
        (Some(id), false) => format!("pod {} container {id}", cgroup.pod_uid),
        (Some(id), true) => format!("pod {} runtime monitor of {id}", cgroup.pod_uid),
        (None, _) => format!("pod {}", cgroup.pod_uid),
    };
    Ok(Some(PodProcess {
        target: ProcessTarget {
            pid,
            start_ticks: before.start_ticks,
            label,
        },
        cgroup,
    }))
}

/// Whether a `/proc/PID/stat` state is a process that can still run (not zombie, not dead).
fn is_live(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// Whether reading a `/proc/PID/…` file failed because the process is gone.
fn is_vanished(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ESRCH)
}

// ---------------------------------------------------------------------------------------------
// Network namespaces.
// ---------------------------------------------------------------------------------------------

/// A network namespace's identity: the device and inode of its nsfs file, equal for every path
/// that leads to the same namespace (`/proc/PID/ns/net`, `/run/netns/NAME`, our entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetnsId {
    /// Device number of the namespace file system.
    pub device: u64,
    /// Inode number, as in `net:[4026531833]`.
    pub inode: u64,
}

impl NetnsId {
    /// The namespace behind `path`, following symbolic links.
    ///
    /// # Errors
    /// [`Error::NetnsIdentity`] if the path cannot be followed or inspected (its `source` is
    /// [`io::ErrorKind::NotFound`] when it is gone).
    pub fn of_path(path: &Path) -> Result<NetnsId> {
        let metadata = fs::metadata(path).map_err(|source| Error::NetnsIdentity {
            path: path.to_owned(),
            source,
        })?;
        Ok(NetnsId {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// The node's own network namespace, as seen through `<proc_root>/1/ns/net` (PID 1 of a
/// `hostPID` pod is the node's init).
///
/// # Errors
/// [`Error::NetnsIdentity`], e.g. when PID 1 is hidden from us; then pass another reference
/// to [`PodNetnsDir::with_host_netns`].
pub fn host_netns(proc_root: &Path) -> Result<NetnsId> {
    NetnsId::of_path(&proc_root.join("1").join("ns").join("net"))
}

/// The network namespace of one pinned process; `None` when the process is gone (zombies have
/// none) or its PID now belongs to another process.
///
/// # Errors
/// [`Error::NetnsIdentity`] if the process is there but its namespace cannot be read, which
/// needs root and `CAP_SYS_PTRACE`.
pub fn process_netns(proc_root: &Path, target: &ProcessTarget) -> Result<Option<NetnsId>> {
    let path = proc_root
        .join(target.pid.to_string())
        .join("ns")
        .join("net");
    let id = match NetnsId::of_path(&path) {
        Ok(id) => id,
        Err(Error::NetnsIdentity { source, .. }) if is_vanished(&source) => return Ok(None),
        Err(e) => return Err(e),
    };
    let same_process = read_proc_stat(proc_root, target.pid)
        .is_some_and(|stat| stat.start_ticks == target.start_ticks && is_live(stat.state));
    Ok(same_process.then_some(id))
}

/// A pod's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetns {
    /// The pod.
    pub uid: PodUid,
    /// The namespace.
    pub netns: NetnsId,
    /// The pod's oldest live process, whose `ns/net` the pod's entry points at. The sandbox
    /// (pause) process starts first and lives as long as the pod, so it usually is this one.
    pub holder: ProcessTarget,
    /// Whether this is the node's own namespace (a `hostNetwork` pod): then the node-level
    /// rules already cover the pod, and it gets no entry of its own.
    pub host_network: bool,
    /// The pod's processes that live in another namespace than the holder's (a container that
    /// made its own); pod-level rules do not reach them.
    pub outside: Vec<ProcessTarget>,
}

/// The network namespace of a pod, given its processes (from [`discover_pods`] or
/// [`find_pod`]) and the host's namespace (from [`host_netns`] or another reference). It is
/// the namespace of the pod's oldest live process, since all containers of a pod join the
/// sandbox's namespace. `None` when every process has gone.
///
/// # Errors
/// As [`process_netns`].
pub fn pod_netns(
    proc_root: &Path,
    uid: &PodUid,
    processes: &[PodProcess],
    host: NetnsId,
) -> Result<Option<PodNetns>> {
    let mut by_age: Vec<&ProcessTarget> = processes.iter().map(|p| &p.target).collect();
    by_age.sort_by_key(|target| (target.start_ticks, target.pid));
    let mut found: Option<(NetnsId, ProcessTarget)> = None;
    let mut outside = Vec::new();
    for target in by_age {
        let Some(id) = process_netns(proc_root, target)? else {
            continue;
        };
        match &found {
            None => found = Some((id, target.clone())),
            Some((netns, _)) if *netns == id => {}
            Some(_) => outside.push(target.clone()),
        }
    }
    Ok(found.map(|(netns, holder)| PodNetns {
        uid: uid.clone(),
        netns,
        holder,
        host_network: netns == host,
        outside,
    }))
}

// ---------------------------------------------------------------------------------------------
// The entries directory.
// ---------------------------------------------------------------------------------------------

/// A directory of network-namespace entries that [`crate::net_partition::NetlinkRuleTable`]
/// and [`crate::netns::run_in_netns`] use as their namespace directory: `node` for the host's
/// namespace and `pod-<uid>` for each pod's.
///
/// **Entries are symbolic links to `<proc_root>/PID/ns/net`, not bind mounts.** A bind mount
/// (what `ip netns add` makes) keeps a namespace alive after its last process has exited: a
/// deleted pod's namespace would linger, our rules would still "succeed" in it, and nothing
/// would ever say it is gone until we unmounted it; it would also need mount privileges and
/// mount propagation into the agent's mount namespace. A symbolic link pins nothing: once the
/// process behind it has exited (or is a zombie) the link dangles, opening it fails with
/// `NotFound`, and [`crate::netns::is_netns_gone`] holds, so
/// [`crate::net_partition::RuleTable::delete`] and `list_ours` succeed on a deleted pod and
/// reverts and reconciles never fail on one.
///
/// The link's weak spot is PID reuse: after the holder exits, its PID could be given to
/// another process before the next [`PodNetnsDir::refresh`] or [`PodNetnsDir::prune`]. Two
/// things keep that window small: the link points at the pod's oldest process (the sandbox,
/// which lives as long as the pod), and the agent refreshes and prunes at every reconcile.
/// Recycling a PID inside that window needs the whole PID space (up to `pid_max`, 4 194 304 on
/// systemd hosts) to wrap around within it.
///
/// The entries only make sense for the running processes, so keep the directory on a tmpfs
/// (e.g. `/run/faultline/netns`), not next to the ledger, and not at `/run/netns`, where
/// `ip netns` would list the pods' entries. Only one writer (the agent's reconcile loop) should
/// refresh and prune a directory.
#[derive(Clone, Debug)]
pub struct PodNetnsDir {
    dir: PathBuf,
    proc_root: PathBuf,
    host_netns: PathBuf,
}

/// What [`PodNetnsDir::refresh`] (and [`PodNetnsDir::sync`]) did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Every pod that has an entry now, by UID.
    pub pods: Vec<PodNetns>,
    /// Pods whose entry is new or now leads to another namespace than before (e.g. a recreated
    /// sandbox): faults active on them must be applied there again.
    pub changed: Vec<PodUid>,
    /// Pods in the host's namespace (`hostNetwork`); they have no entry.
    pub host_network: Vec<PodUid>,
    /// Pods whose processes exited while we looked; an entry they still have leads nowhere
    /// (a gone namespace) and goes at the next prune.
    pub vanished: Vec<PodUid>,
    /// Pods whose namespace could not be read or whose entry could not be written; their
    /// entries were left as they were. One such pod does not keep the others from being done.
    pub failed: Vec<(PodUid, Error)>,
    /// Entries removed by prune (only filled by [`PodNetnsDir::sync`]).
    pub removed: Vec<PodUid>,
}

/// What refreshing one pod's entry came to.
enum PodRefresh {
    Linked { found: PodNetns, changed: bool },
    HostNetwork,
    Vanished,
}

impl PodNetnsDir {
    /// Opens (creating it if needed, mode 0700) the entries directory `dir`, for the processes
    /// under `proc_root` (normally `/proc`). Both paths are made absolute, because the entries
    /// are links into `proc_root`. The host's namespace defaults to `<proc_root>/1/ns/net`.
    ///
    /// # Errors
    /// [`Error::NetnsDir`] if the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> Result<PodNetnsDir> {
        use std::os::unix::fs::DirBuilderExt;

        let absolute = |path: PathBuf| {
            std::path::absolute(&path).map_err(|source| Error::NetnsDir { path, source })
        };
        let dir = absolute(dir.into())?;
        let proc_root = absolute(proc_root.into())?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::NetnsDir {
                path: dir.clone(),
                source,
            })?;
        let host_netns = proc_root.join("1").join("ns").join("net");
        Ok(PodNetnsDir {
            dir,
            proc_root,
            host_netns,
        })
    }

    /// Uses `path` (any file of the host's network namespace, absolute) as the host's
    /// namespace instead of `<proc_root>/1/ns/net`; the `node` entry will point at it.
    #[must_use]
    pub fn with_host_netns(mut self, path: impl Into<PathBuf>) -> PodNetnsDir {
        self.host_netns = path.into();
        self
    }

    /// The directory, to pass to [`crate::net_partition::NetlinkRuleTable::new`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The proc root the entries point into.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// The host's namespace.
    ///
    /// # Errors
    /// [`Error::NetnsIdentity`] if the reference cannot be read.
    pub fn host_netns(&self) -> Result<NetnsId> {
        NetnsId::of_path(&self.host_netns)
    }

    /// Discovers the pods under the proc root, then [`refresh`](Self::refresh)es and
    /// [`prune`](Self::prune)s: the whole job of one reconcile.
    ///
    /// # Errors
    /// As [`discover_pods`], [`refresh`](Self::refresh) and [`prune`](Self::prune).
    pub fn sync(&self) -> Result<RefreshReport> {
        let pods = discover_pods(&self.proc_root)?;
        let mut report = self.refresh(&pods)?;
        report.removed = self.prune(&pods)?;
        Ok(report)
    }

    /// Points `node` at the host's namespace and `pod-<uid>` at each pod's, adding or replacing
    /// entries (atomically, by rename) where they are missing or lead elsewhere. A pod in the
    /// host's namespace gets no entry, and loses one it had. Entries of pods missing from
    /// `pods` are left alone; see [`prune`](Self::prune). A pod that fails is listed in
    /// [`RefreshReport::failed`] and the others are still done.
    ///
    /// # Errors
    /// [`Error::NetnsIdentity`] if the host's namespace cannot be read;
    /// [`Error::NetnsEntryWrite`] if the `node` entry cannot be written.
    pub fn refresh(&self, pods: &PodProcesses) -> Result<RefreshReport> {
        let host = self.host_netns()?;
        self.link(NODE_ENTRY, &self.host_netns, host)?;
        let mut report = RefreshReport::default();
        for (uid, processes) in pods {
            match self.refresh_pod(uid, processes, host) {
                Ok(PodRefresh::Linked { found, changed }) => {
                    if changed {
                        report.changed.push(uid.clone());
                    }
                    report.pods.push(found);
                }
                Ok(PodRefresh::HostNetwork) => report.host_network.push(uid.clone()),
                Ok(PodRefresh::Vanished) => report.vanished.push(uid.clone()),
                Err(e) => report.failed.push((uid.clone(), e)),
            }
        }
        Ok(report)
    }

    /// One pod's share of [`refresh`](Self::refresh).
    fn refresh_pod(
        &self,
        uid: &PodUid,
        processes: &[PodProcess],
        host: NetnsId,
    ) -> Result<PodRefresh> {
        let entry = pod_entry_name(uid);
        let Some(found) = pod_netns(&self.proc_root, uid, processes, host)? else {
            return Ok(PodRefresh::Vanished);
        };
        if found.host_network {
            self.remove_entry(&entry)?;
            return Ok(PodRefresh::HostNetwork);
        }
        let target = self
            .proc_root
            .join(found.holder.pid.to_string())
            .join("ns")
            .join("net");
        let changed = self.link(&entry, &target, found.netns)?;
        // The holder may have exited between reading its namespace and linking to it; a link
        // to a PID that is no longer the holder's must not stay behind.
        if process_netns(&self.proc_root, &found.holder)? != Some(found.netns) {
            self.remove_entry(&entry)?;
            return Ok(PodRefresh::Vanished);
        }
        Ok(PodRefresh::Linked { found, changed })
    }

    /// Removes the entries of pods that are not in `pods` (those with no live process left on
    /// the node), entries whose name is no pod UID, and temporary files left by an interrupted
    /// refresh of an earlier agent. Returns the UIDs whose entries were removed, sorted. The
    /// `node` entry and files that are not ours stay.
    ///
    /// # Errors
    /// [`Error::NetnsDir`] if the directory cannot be listed; [`Error::NetnsEntryRemove`] if an
    /// entry cannot be removed.
    pub fn prune(&self, pods: &PodProcesses) -> Result<Vec<PodUid>> {
        let own_temp_prefix = format!("{}-", std::process::id());
        let mut removed = Vec::new();
        for name in self.names()? {
            if let Some(uid_text) = name.strip_prefix("pod-") {
                let uid = PodUid::parse(uid_text);
                if uid.as_ref().is_some_and(|uid| pods.contains_key(uid)) {
                    continue;
                }
                self.remove_entry(&name)?;
                removed.extend(uid);
            } else if let Some(writer) = name.strip_prefix(".tmp-") {
                if !writer.starts_with(&own_temp_prefix) {
                    self.remove_entry(&name)?;
                }
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// The pods that have an entry, sorted.
    ///
    /// # Errors
    /// [`Error::NetnsDir`] if the directory cannot be listed.
    pub fn pod_entries(&self) -> Result<Vec<PodUid>> {
        let mut uids: Vec<PodUid> = self
            .names()?
            .iter()
            .filter_map(|name| PodUid::parse(name.strip_prefix("pod-")?))
            .collect();
        uids.sort();
        Ok(uids)
    }

    /// The file names in the directory.
    fn names(&self) -> Result<Vec<String>> {
        let list_error = |source| Error::NetnsDir {
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(list_error)? {
            if let Some(name) = entry.map_err(list_error)?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Makes `name` a link to `target`, which leads to `expected`. Returns whether the entry
    /// leads to `expected` now but did not before.
    fn link(&self, name: &str, target: &Path, expected: NetnsId) -> Result<bool> {
        static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
        let path = self.dir.join(name);
        let before = NetnsId::of_path(&path).ok();
        if before == Some(expected) && fs::read_link(&path).is_ok_and(|old| old == target) {
            return Ok(false);
        }
        let temp = self.dir.join(format!(
            ".tmp-{}-{}-{name}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::NetnsEntryWrite { path, source }
        };
        std::os::unix::fs::symlink(target, &temp).map_err(write_error(&temp))?;
        if let Err(e) = fs::rename(&temp, &path).map_err(write_error(&path)) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(before != Some(expected))
    }

    /// Removes the entry `name`; one that is already gone counts as removed.
    fn remove_entry(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::NetnsEntryRemove { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net_partition::{NetlinkRuleTable, PartitionRule, RuleTable};
    use crate::netns;

    const UID: &str = "0b8a9b3e-5f4c-4c6e-9a43-1f2a3b4c5d6e";
    const UID_SYSTEMD: &str = "0b8a9b3e_5f4c_4c6e_9a43_1f2a3b4c5d6e";
    const STATIC_UID: &str = "6a3e0c1f9b2d4e5f8a7b6c5d4e3f2a1b";
    const CID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn uid() -> PodUid {
        PodUid::parse(UID).unwrap()
    }

    fn pod(qos: QosClass, container: Option<&str>, monitor: bool) -> PodCgroup {
        PodCgroup {
            pod_uid: uid(),
            qos,
            container_id: container.map(str::to_owned),
            runtime_monitor: monitor,
        }
    }

    #[test]
    fn pod_uids_are_normalised_and_garbage_is_refused() {
        for (text, expected) in [
            (UID, Some(UID)),
            (UID_SYSTEMD, Some(UID)),
            ("0B8A9B3E-5F4C-4C6E-9A43-1F2A3B4C5D6E", Some(UID)),
            (STATIC_UID, Some(STATIC_UID)),
            ("0b8a9b3e5f4c4c6e9a431f2a3b4c5d6", None),
            ("0b8a9b3e-5f4c-4c6e-9a43-1f2a3b4c5d6", None),
            ("0b8a9b3e-5f4c-4c6e-9a43-1f2a3b4c5d6ef", None),
            ("0b8a9b3e5-f4c-4c6e-9a43-1f2a3b4c5d6e", None),
            ("0b8a9b3e-5f4c-4c6e-9a43-1f2a3b4c5d6g", None),
            ("", None),
        ] {
            assert_eq!(
                PodUid::parse(text).as_ref().map(PodUid::as_str),
                expected,
                "{text:?}"
            );
        }
        let json = serde_json::to_string(&uid()).unwrap();
        assert_eq!(json, format!("\"{UID}\""));
        assert_eq!(serde_json::from_str::<PodUid>(&json).unwrap(), uid());
        assert!(serde_json::from_str::<PodUid>("\"not-a-uid\"").is_err());
    }

    #[test]
    fn cgroup_paths_of_the_cgroupfs_driver() {
        use QosClass::{BestEffort, Burstable, Guaranteed};
        let cases: Vec<(String, Option<PodCgroup>)> = vec![
            // cgroupfs driver.
            (
                format!("/kubepods/pod{UID}/{CID}"),
                Some(pod(Guaranteed, Some(CID), false)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{CID}"),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{CID}"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-conmon-{CID}"),
                Some(pod(BestEffort, Some(CID), true)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}"),
                Some(pod(Burstable, None, false)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/"),
                Some(pod(Burstable, None, false)),
            ),
            (
                format!("/kubepods/pod{UID}/{}", CID.to_uppercase()),
                Some(pod(Guaranteed, Some(CID), false)),
            ),
            // A prefix: kubelet's --cgroup-root, a kind node seen from its host, a test parent.
            (
                format!("/kubelet/kubepods/burstable/pod{UID}/{CID}"),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                format!("/docker/{CID}/kubepods/besteffort/pod{UID}/{CID}"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                format!("/fl-test-42-0/kubepods/pod{UID}/{CID}"),
                Some(pod(Guaranteed, Some(CID), false)),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_cgroup_path(&path), expected, "{path:?}");
        }
    }

    #[test]
    fn cgroup_paths_of_the_systemd_driver() {
        use QosClass::{BestEffort, Burstable, Guaranteed};
        let cases: Vec<(String, Option<PodCgroup>)> = vec![
            (
                format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"),
                Some(pod(Guaranteed, Some(CID), false)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
                ),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope"
                ),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{CID}.scope"
                ),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{CID}.scope"
                ),
                Some(pod(Burstable, Some(CID), true)),
            ),
            // crun's own sub-cgroup below the container's scope.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{CID}.scope/container"
                ),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"),
                Some(pod(Burstable, None, false)),
            ),
            // kind: --cgroup-root=/kubelet under systemd, and a reader inside a cgroup namespace.
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
                ),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                format!("/../../kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"),
                Some(pod(Guaranteed, Some(CID), false)),
            ),
            // A nested node inside another cluster's pod: the outer pod wins.
            (
                format!(
                    "/kubepods/burstable/pod{UID}/{CID}/kubepods/besteffort/pod{STATIC_UID}/{CID}"
                ),
                Some(pod(Burstable, Some(CID), false)),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_cgroup_path(&path), expected, "{path:?}");
        }
    }

    #[test]
    fn cgroup_paths_of_no_pod() {
        let cases: Vec<(String, Option<PodCgroup>)> = vec![
            ("/".to_owned(), None),
            (String::new(), None),
            ("/system.slice/containerd.service".to_owned(), None),
            ("/user.slice/user-1000.slice/session-3.scope".to_owned(), None),
            ("/kubepods".to_owned(), None),
            ("/kubepods/burstable".to_owned(), None),
            ("/kubepods.slice/kubepods-burstable.slice".to_owned(), None),
            ("/kubepods/burstable/podnot-a-uid/abc".to_owned(), None),
            (format!("/kubepods/burstable/pod{}/{CID}", &UID[..30]), None),
            (format!("/kube-pods/pod{UID}/{CID}"), None),
            (format!("/kubepods/guaranteed/pod{UID}/{CID}"), None),
            (format!("/system.slice/kubepods-pod{UID_SYSTEMD}.slice"), None),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope"
                ),
                None,
            ),
            (
                format!("/kubepods.slice/kubelet-kubepods-pod{UID_SYSTEMD}.slice/crio-{CID}.scope"),
                None,
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_cgroup_path(&path), expected, "{path:?}");
        }
    }

    #[test]
    fn a_container_component_that_is_no_id_still_finds_the_pod() {
        let found = parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/not-hex!")).unwrap();
        assert_eq!(found.pod_uid, uid());
        assert_eq!(found.container_id, None);
        let static_pod = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope"
        ))
        .unwrap();
        assert_eq!(static_pod.pod_uid.as_str(), STATIC_UID);
    }

    /// A `/proc/PID/cgroup` of a cgroup v1 host (every controller in its own hierarchy).
    fn v1_file(controllers_path: &str, systemd_path: &str) -> String {
        let mut lines: Vec<String> = [
            "12:hugetlb",
            "11:cpuset",
            "10:net_cls,net_prio",
            "9:devices",
            "8:memory",
            "7:perf_event",
            "6:cpu,cpuacct",
            "5:freezer",
            "4:blkio",
            "3:pids",
            "2:rdma",
        ]
        .iter()
        .map(|prefix| format!("{prefix}:{controllers_path}"))
        .collect();
        lines.push(format!("1:name=systemd:{systemd_path}"));
        lines.join("\n") + "\n"
    }

    #[test]
    fn proc_cgroup_files_of_v1_v2_and_hybrid_hosts() {
        use QosClass::{BestEffort, Burstable};
        let cgroupfs = format!("/kubepods/burstable/pod{UID}/{CID}");
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
        );
        let other_uid = "11111111-2222-4333-8444-555555555555";
        let other = format!("/kubepods/besteffort/pod{other_uid}/{CID}");
        let service = "/system.slice/containerd.service";
        let cases: Vec<(&str, String, Option<PodCgroup>)> = vec![
            (
                "v1, cgroupfs driver, systemd keeps its own name=systemd",
                v1_file(&cgroupfs, service),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                "v1, systemd driver",
                v1_file(&systemd, &systemd),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                "v2",
                format!("0::{systemd}\n"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                "hybrid, all agree",
                v1_file(&systemd, &systemd) + &format!("0::{systemd}\n"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                "hybrid, v1 controllers and v2 disagree: v1 controllers win",
                v1_file(&cgroupfs, service) + &format!("0::{other}\n"),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                "hybrid, v2 first in the file still loses to v1 controllers",
                format!("0::{other}\n") + &v1_file(&cgroupfs, &other),
                Some(pod(Burstable, Some(CID), false)),
            ),
            (
                "hybrid, only name=systemd and v2 name pods: name=systemd wins",
                v1_file("/", &systemd) + &format!("0::{other}\n"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                "hybrid, only v2 names a pod",
                v1_file("/user.slice", "/user.slice/user-0.slice/session-1.scope")
                    + &format!("0::{systemd}\n"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
            (
                "no pod anywhere",
                v1_file("/", service) + &format!("0::{service}\n"),
                None,
            ),
            ("empty", String::new(), None),
            (
                "garbage",
                format!("hello\n12:memory\nx:memory:{cgroupfs}\n\0\0\n"),
                None,
            ),
            (
                "garbage around a good line",
                format!("hello\n::{other}\n0::{systemd}\nworld:\n"),
                Some(pod(BestEffort, Some(CID), false)),
            ),
        ];
        for (what, text, expected) in cases {
            assert_eq!(parse_proc_cgroup(&text), expected, "{what}:\n{text}");
        }
    }

    /// A fake proc root: `<root>/<pid>/{stat,cgroup,ns/net}`, where each `ns/net` is a hard
    /// link to a file standing for one namespace, so processes in one namespace share an
    /// inode exactly as nsfs files do.
    struct FakeProc {
        root: tempfile::TempDir,
        namespaces: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> FakeProc {
            FakeProc {
                root: tempfile::tempdir().unwrap(),
                namespaces: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self) -> &Path {
            self.root.path()
        }

        fn namespace(&self, name: &str) -> PathBuf {
            let path = self.namespaces.path().join(name);
            if !path.exists() {
                fs::write(&path, b"").unwrap();
            }
            path
        }

        fn netns_id(&self, name: &str) -> NetnsId {
            NetnsId::of_path(&self.namespace(name)).unwrap()
        }

        fn add(&self, pid: i32, state: char, start_ticks: u64, cgroup: &str, netns: &str) {
            let dir = self.path().join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            let fields: Vec<String> = (1..=18).map(|n: u32| n.to_string()).collect();
            fs::write(
                dir.join("stat"),
                format!(
                    "{pid} (sle ep) {state} {} {start_ticks} 0 0\n",
                    fields.join(" ")
                ),
            )
            .unwrap();
            fs::write(dir.join("cgroup"), cgroup).unwrap();
            let link = dir.join("ns").join("net");
            let _ = fs::remove_file(&link);
            fs::hard_link(self.namespace(netns), link).unwrap();
        }

        fn remove(&self, pid: i32) {
            fs::remove_dir_all(self.path().join(pid.to_string())).unwrap();
        }
    }

    const OTHER_UID: &str = "11111111-2222-4333-8444-555555555555";
    const HOST_UID: &str = "99999999-8888-4777-a666-555555555555";

    fn cgroupfs_line(uid: &str, container: &str) -> String {
        format!("5:freezer:/kubepods/burstable/pod{uid}/{container}\n0::/\n")
    }

    fn systemd_line(uid: &str, container: &str) -> String {
        format!(
            "5:freezer:/\n0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{container}.scope\n",
            uid.replace('-', "_")
        )
    }

    /// Pod `UID` (pids 10 and 11, namespace `a`, 11 the older), pod `OTHER_UID` (pid 20,
    /// namespace `b`), a hostNetwork pod (pid 30), a zombie of pod `UID` (pid 12), and
    /// processes of no pod.
    fn node() -> FakeProc {
        let proc = FakeProc::new();
        proc.add(1, 'S', 1, "0::/init.scope\n", "host");
        proc.add(10, 'S', 500, &cgroupfs_line(UID, "aa01"), "a");
        proc.add(11, 'S', 400, &cgroupfs_line(UID, "aa00"), "a");
        proc.add(12, 'Z', 450, &cgroupfs_line(UID, "aa02"), "a");
        proc.add(20, 'S', 600, &systemd_line(OTHER_UID, "bb00"), "b");
        proc.add(30, 'S', 700, &cgroupfs_line(HOST_UID, "cc00"), "host");
        proc.add(40, 'R', 800, "0::/system.slice/kubelet.service\n", "host");
        fs::create_dir_all(proc.path().join("self")).unwrap();
        fs::create_dir_all(proc.path().join("sys")).unwrap();
        fs::write(proc.path().join("uptime"), b"1.0 1.0\n").unwrap();
        proc
    }

    fn pids(processes: &[PodProcess]) -> Vec<i32> {
        processes.iter().map(|p| p.target.pid).collect()
    }

    #[test]
    fn discovery_finds_each_pods_live_processes_only() {
        let proc = node();
        let pods = discover_pods(proc.path()).unwrap();
        let found: Vec<(&str, Vec<i32>)> = pods
            .iter()
            .map(|(uid, processes)| (uid.as_str(), pids(processes)))
            .collect();
        assert_eq!(
            found,
            vec![
                (UID, vec![10, 11]),
                (OTHER_UID, vec![20]),
                (HOST_UID, vec![30]),
            ]
        );
        let first = &pods[&uid()][0];
        assert_eq!(first.target.start_ticks, 500);
        assert_eq!(first.target.label, format!("pod {UID} container aa01"));
        assert_eq!(first.cgroup.qos, QosClass::Burstable);

        assert_eq!(pids(&find_pod(proc.path(), &uid()).unwrap()), vec![10, 11]);
        let absent = PodUid::parse("00000000-0000-4000-8000-000000000000").unwrap();
        assert!(find_pod(proc.path(), &absent).unwrap().is_empty());
    }

    #[test]
    fn discovery_says_where_it_failed() {
        let proc = node();
        let missing = proc.path().join("nope");
        match discover_pods(&missing).unwrap_err() {
            Error::ProcList { path, .. } => assert_eq!(path, missing),
            other => panic!("unexpected {other}"),
        }
        // A cgroup file that exists but cannot be read is an error, not a silent skip.
        let cgroup = proc.path().join("40").join("cgroup");
        fs::remove_file(&cgroup).unwrap();
        fs::create_dir(&cgroup).unwrap();
        let err = discover_pods(proc.path()).unwrap_err();
        assert!(
            matches!(&err, Error::ProcRead { path, .. } if *path == cgroup),
            "{err}"
        );
        assert!(err.to_string().contains("/40/cgroup"), "{err}");
    }

    #[test]
    fn a_pods_namespace_is_its_oldest_process_and_host_network_is_told() {
        let proc = node();
        proc.add(13, 'S', 900, &cgroupfs_line(UID, "aa03"), "own");
        let pods = discover_pods(proc.path()).unwrap();
        let host = proc.netns_id("host");

        let found = pod_netns(proc.path(), &uid(), &pods[&uid()], host)
            .unwrap()
            .unwrap();
        assert_eq!(found.netns, proc.netns_id("a"));
        assert_eq!(
            found.holder.pid, 11,
            "the oldest process holds the namespace"
        );
        assert!(!found.host_network);
        assert_eq!(
            found.outside.iter().map(|t| t.pid).collect::<Vec<_>>(),
            vec![13]
        );

        let host_uid = PodUid::parse(HOST_UID).unwrap();
        let host_pod = pod_netns(proc.path(), &host_uid, &pods[&host_uid], host)
            .unwrap()
            .unwrap();
        assert!(host_pod.host_network);

        proc.remove(10);
        proc.remove(11);
        proc.remove(13);
        assert_eq!(
            pod_netns(proc.path(), &uid(), &pods[&uid()], host).unwrap(),
            None
        );
    }

    #[test]
    fn a_recycled_pid_is_not_the_pods() {
        let proc = node();
        let pods = discover_pods(proc.path()).unwrap();
        // Pid 11 exits and its PID goes to a process of another namespace.
        proc.add(11, 'S', 4000, "0::/\n", "elsewhere");
        let target = &pods[&uid()][1].target;
        assert_eq!(target.pid, 11);
        assert_eq!(process_netns(proc.path(), target).unwrap(), None);
        let found = pod_netns(proc.path(), &uid(), &pods[&uid()], proc.netns_id("host"))
            .unwrap()
            .unwrap();
        assert_eq!(found.holder.pid, 10);
    }

    fn entries_dir(proc: &FakeProc) -> (tempfile::TempDir, PodNetnsDir) {
        let parent = tempfile::tempdir().unwrap();
        let dir = PodNetnsDir::open(parent.path().join("netns"), proc.path())
            .unwrap()
            .with_host_netns(proc.namespace("host"));
        (parent, dir)
    }

    #[test]
    fn refresh_links_each_pod_and_the_node_and_reports_changes() {
        let proc = node();
        let (_parent, dir) = entries_dir(&proc);
        let pods = discover_pods(proc.path()).unwrap();
        let report = dir.refresh(&pods).unwrap();

        let other_uid = PodUid::parse(OTHER_UID).unwrap();
        let host_uid = PodUid::parse(HOST_UID).unwrap();
        assert_eq!(report.changed, vec![uid(), other_uid.clone()]);
        assert_eq!(report.host_network, vec![host_uid.clone()]);
        assert!(report.vanished.is_empty());
        assert_eq!(dir.pod_entries().unwrap(), vec![uid(), other_uid.clone()]);
        let entry = |name: &str| NetnsId::of_path(&dir.dir().join(name)).unwrap();
        assert_eq!(entry(NODE_ENTRY), proc.netns_id("host"));
        assert_eq!(entry(&pod_entry_name(&uid())), proc.netns_id("a"));
        assert_eq!(entry(&pod_entry_name(&other_uid)), proc.netns_id("b"));
        assert_eq!(
            fs::read_link(dir.dir().join(pod_entry_name(&uid()))).unwrap(),
            proc.path().join("11/ns/net")
        );

        // Nothing moved: nothing changed.
        assert!(dir.refresh(&pods).unwrap().changed.is_empty());

        // The sandbox is recreated in a new namespace: the entry follows and says so.
        proc.remove(10);
        proc.remove(11);
        proc.add(14, 'S', 5000, &cgroupfs_line(UID, "aa10"), "a2");
        let pods = discover_pods(proc.path()).unwrap();
        let report = dir.refresh(&pods).unwrap();
        assert_eq!(report.changed, vec![uid()]);
        assert_eq!(entry(&pod_entry_name(&uid())), proc.netns_id("a2"));

        // A pod that turned out to be in the host's namespace loses its entry.
        fs::write(dir.dir().join(pod_entry_name(&host_uid)), b"").unwrap();
        dir.refresh(&pods).unwrap();
        assert!(!dir.dir().join(pod_entry_name(&host_uid)).exists());
        assert!(!dir.dir().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp")));
    }

    #[test]
    fn an_entry_whose_process_died_is_a_gone_namespace() {
        let proc = node();
        let (_parent, dir) = entries_dir(&proc);
        dir.refresh(&discover_pods(proc.path()).unwrap()).unwrap();
        let name = pod_entry_name(&uid());
        proc.remove(10);
        proc.remove(11);

        let err = netns::run_in_netns(dir.dir(), &name, || ()).unwrap_err();
        assert!(netns::is_netns_gone(&err), "{err}");
        // So reverts and reconciles on a deleted pod succeed and find nothing.
        let rules = NetlinkRuleTable::new(dir.dir());
        let rule = PartitionRule {
            netns: name.clone(),
            destination: std::net::Ipv4Addr::new(10, 203, 9, 9),
            prefix_len: 32,
            priority: crate::net_partition::priority_for_slot(7),
        };
        rules.delete(&[rule]).unwrap();
        assert!(rules.list_ours(&name).unwrap().is_empty());
    }

    #[test]
    fn prune_drops_gone_pods_and_leftovers_only() {
        let proc = node();
        let (_parent, dir) = entries_dir(&proc);
        let pods = discover_pods(proc.path()).unwrap();
        dir.refresh(&pods).unwrap();
        fs::write(dir.dir().join("pod-garbage"), b"").unwrap();
        fs::write(dir.dir().join(".tmp-1-0-pod-x"), b"").unwrap();
        let own_temp = format!(".tmp-{}-99-pod-y", std::process::id());
        fs::write(dir.dir().join(&own_temp), b"").unwrap();
        fs::write(dir.dir().join("README"), b"").unwrap();

        proc.remove(20);
        let pods = discover_pods(proc.path()).unwrap();
        let other_uid = PodUid::parse(OTHER_UID).unwrap();
        assert_eq!(dir.prune(&pods).unwrap(), vec![other_uid]);
        let mut left: Vec<String> = dir
            .dir()
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec![
            own_temp,
            "README".to_owned(),
            NODE_ENTRY.to_owned(),
            pod_entry_name(&uid()),
        ];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[test]
    fn sync_refreshes_and_prunes() {
        let proc = node();
        let (_parent, dir) = entries_dir(&proc);
        dir.sync().unwrap();
        proc.remove(20);
        let report = dir.sync().unwrap();
        assert_eq!(report.removed, vec![PodUid::parse(OTHER_UID).unwrap()]);
        assert_eq!(dir.pod_entries().unwrap(), vec![uid()]);
        assert_eq!(
            report
                .pods
                .iter()
                .map(|p| p.uid.clone())
                .collect::<Vec<_>>(),
            vec![uid()]
        );
    }

    #[test]
    fn one_unreadable_pod_does_not_stop_the_others() {
        let proc = node();
        let (_parent, dir) = entries_dir(&proc);
        // Pod OTHER_UID's only process has a namespace file that cannot be followed.
        let ns = proc.path().join("20").join("ns");
        fs::remove_dir_all(&ns).unwrap();
        fs::write(&ns, b"").unwrap();
        let report = dir.refresh(&discover_pods(proc.path()).unwrap()).unwrap();
        let other_uid = PodUid::parse(OTHER_UID).unwrap();
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let (failed_uid, error) = &report.failed[0];
        assert_eq!(*failed_uid, other_uid);
        assert!(
            matches!(error, Error::NetnsIdentity { path, .. } if path.ends_with("20/ns/net")),
            "{error}"
        );
        assert_eq!(report.changed, vec![uid()]);
        assert_eq!(dir.pod_entries().unwrap(), vec![uid()]);
    }

    #[test]
    fn an_unreadable_host_reference_is_an_error_with_its_path() {
        let proc = node();
        let parent = tempfile::tempdir().unwrap();
        let dir = PodNetnsDir::open(parent.path().join("netns"), proc.path())
            .unwrap()
            .with_host_netns(proc.path().join("nope/ns/net"));
        let err = dir.refresh(&PodProcesses::new()).unwrap_err();
        assert!(
            matches!(&err, Error::NetnsIdentity { path, .. } if path.ends_with("nope/ns/net")),
            "{err}"
        );
    }
}
