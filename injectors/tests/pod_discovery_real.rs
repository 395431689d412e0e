//! Pod discovery against real kernel objects: kubelet-shaped cgroups, real processes, real
//! network namespaces, real rtnetlink and real signals.
//!
//! Needs root; without it every test prints why and passes. Each fixture builds a small
//! "node" under its own test-only parent cgroup `fl-test-<pid>-<n>`:
//! - a cgroupfs-driver pod (`kubepods/burstable/pod<uid>/<container>`) in a cgroup v1 hierarchy
//!   (the freezer's, or another controller's), with two processes in their own network
//!   namespace;
//! - a systemd-driver pod (`kubepods.slice/kubepods-besteffort.slice/…/cri-containerd-<id>.scope`)
//!   in cgroup v2, with two processes in another network namespace;
//! - a `hostNetwork` pod (systemd driver, guaranteed QoS, v2) whose process stays in the host's
//!   namespace, and a bystander process in no pod.
//!
//! On a hybrid host (this machine's layout) that exercises both kinds of `/proc/PID/cgroup`
//! line at once; on a pure v1 or pure v2 host both pods go to the hierarchy there is. The
//! fixture (and only the fixture) uses `ip netns add`/`exec`/`del` and `mkdir`/`rmdir`; the code
//! under test reads `/proc` and speaks rtnetlink. Processes are `sleep`s killed by PID, cgroups
//! are removed children first once their processes are reaped, namespaces are deleted, on
//! panic too; leftovers of a killed earlier run are swept at the start.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_injectors::net_partition::{
    priority_for_slot, NetlinkRuleTable, PartitionRule, RuleTable,
};
use faultline_injectors::netns::{self, DEFAULT_NETNS_DIR};
use faultline_injectors::pod_discovery::{
    discover_pods, find_pod, pod_entry_name, NetnsId, PodNetnsDir, PodUid, NODE_ENTRY,
};
use faultline_injectors::process::{NixSignaller, Signaller};
use nix::sys::signal::Signal;

/// How long the fixture's processes live if a crashed run leaves them behind.
const SLEEP_SECONDS: &str = "300";
/// Upper bound for anything the kernel does asynchronously (exec, stop, continue).
const SETTLE: Duration = Duration::from_secs(5);

fn proc_root() -> &'static Path {
    Path::new("/proc")
}

/// Whether we run as root; prints why a test is skipped when not.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!(
            "skipping {test}: it needs root to create cgroups and network namespaces \
             and to read other processes' namespaces"
        );
        false
    }
}

/// Runs `ip ARGS` (fixture only); panics with its error.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (is iproute2 installed?): {e}"));
    assert!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// The cgroup hierarchies this host has mounted.
struct Hierarchies {
    /// A v1 hierarchy with a resource controller (the freezer's if there is one).
    v1: Option<PathBuf>,
    /// The v2 hierarchy.
    v2: Option<PathBuf>,
}

impl Hierarchies {
    fn find() -> Hierarchies {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((mount, fs_part)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = mount.split_whitespace().nth(4) else {
                continue;
            };
            let mut fs_fields = fs_part.split_whitespace();
            let fs_type = fs_fields.next();
            let options = fs_fields.nth(1).unwrap_or("");
            match fs_type {
                Some("cgroup2") => v2 = Some(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    let controllers: Vec<&str> = options
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                        .collect();
                    if !controllers.is_empty() {
                        let rank = ["freezer", "pids", "cpu"]
                            .iter()
                            .position(|c| controllers.contains(c))
                            .unwrap_or(usize::MAX);
                        v1.push((rank, PathBuf::from(mount_point)));
                    }
                }
                _ => {}
            }
        }
        v1.sort();
        Hierarchies {
            v1: v1.into_iter().next().map(|(_, path)| path),
            v2,
        }
    }

    fn roots(&self) -> impl Iterator<Item = &PathBuf> {
        self.v1.iter().chain(self.v2.iter())
    }
}

/// Removes what a killed earlier run of this file left: namespaces `fl-pd<pid>-…` and
/// parents `fl-test-<pid>-…` whose creating process is gone. A cgroup that still holds
/// processes cannot be removed; it is reported, and those processes are left alone.
fn sweep_stale(hierarchies: &Hierarchies) {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let dead = |pid: &str| {
            pid.parse::<u32>().is_ok_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        };
        if let Ok(names) = fs::read_dir(DEFAULT_NETNS_DIR) {
            for name in names.flatten() {
                let name = name.file_name().to_string_lossy().into_owned();
                let owner = name.strip_prefix("fl-pd").and_then(|r| r.split('-').next());
                if owner.is_some_and(dead) {
                    eprintln!("removing namespace {name} left by a dead test run");
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
        }
        for root in hierarchies.roots() {
            let Ok(entries) = fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let owner = name
                    .strip_prefix("fl-test-")
                    .and_then(|r| r.split('-').next());
                if owner.is_some_and(dead) {
                    if let Err(e) = remove_cgroup_tree(&entry.path()) {
                        eprintln!("cannot remove stale cgroup {}: {e}", entry.path().display());
                    }
                }
            }
        }
    });
}

/// Removes a cgroup and its descendants, deepest first (cgroup files are not removable, only
/// the directories are, with `rmdir`).
fn remove_cgroup_tree(path: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(path)
}

/// A pod the fixture made.
struct TestPod {
    uid: PodUid,
    pids: Vec<i32>,
    /// The namespace its processes run in (`ip netns` name), `None` for the host's.
    netns: Option<String>,
}

/// Everything one test made; dropping it removes all of it.
struct Node {
    prefix: String,
    parent: String,
    serial: u32,
    hierarchies: Hierarchies,
    children: Vec<Child>,
    /// Created cgroup directories, parents before children.
    cgroups: Vec<PathBuf>,
    namespaces: Vec<String>,
    entries: tempfile::TempDir,
}

impl Node {
    /// `None` (after saying why) when the host has no cgroup hierarchy to work in.
    fn new() -> Option<Node> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let hierarchies = Hierarchies::find();
        if hierarchies.v1.is_none() && hierarchies.v2.is_none() {
            eprintln!("skipping: no cgroup hierarchy is mounted");
            return None;
        }
        sweep_stale(&hierarchies);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Some(Node {
            prefix: format!("fl-pd{pid}-{n}"),
            parent: format!("fl-test-{pid}-{n}"),
            serial: n,
            hierarchies,
            children: Vec::new(),
            cgroups: Vec::new(),
            namespaces: Vec::new(),
            entries: tempfile::Builder::new()
                .prefix("faultline-pod-netns-")
                .tempdir()
                .expect("tempdir"),
        })
    }

    /// A UID no other test (or run) uses; `index` tells this node's pods apart.
    fn uid(&self, index: u16) -> PodUid {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let text = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            std::process::id(),
            self.serial & 0xffff,
            index & 0xfff,
            (nanos >> 48) & 0xfff,
            nanos & 0xffff_ffff_ffff
        );
        PodUid::parse(&text).expect("a well-formed uid")
    }

    /// A 64-hex container id derived from the pod and container index.
    fn container_id(uid: &PodUid, index: usize) -> String {
        let hex: String = uid
            .as_str()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        format!("{hex}{hex}")[..62].to_owned() + &format!("{index:02x}")
    }

    fn add_netns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        name
    }

    /// Makes every level of `relative` under `root`'s test parent, recording each for removal.
    fn add_cgroup(&mut self, root: &Path, relative: &str) -> PathBuf {
        let mut path = root.join(&self.parent);
        let mut levels = vec![path.clone()];
        for level in relative.split('/') {
            path = path.join(level);
            levels.push(path.clone());
        }
        for level in levels {
            if !level.exists() {
                fs::create_dir(&level)
                    .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", level.display()));
                self.cgroups.push(level);
            }
        }
        path
    }

    /// Starts `sleep` (inside `netns` if given) and waits until it really is `sleep`, so that
    /// `ip netns exec` has entered the namespace. Returns its PID.
    fn spawn(&mut self, netns: Option<&str>) -> i32 {
        let mut command = if let Some(name) = netns {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", name, "sleep", SLEEP_SECONDS]);
            c
        } else {
            let mut c = Command::new("sleep");
            c.arg(SLEEP_SECONDS);
            c
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        self.children.push(child);
        let deadline = Instant::now() + SETTLE;
        while !fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            assert!(Instant::now() < deadline, "pid {pid} never became sleep");
            std::thread::sleep(Duration::from_millis(5));
        }
        pid
    }

    fn move_into(pid: i32, cgroup: &Path) {
        fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", cgroup.display()));
    }

    /// A cgroupfs-driver, burstable pod in the v1 hierarchy (v2 on a pure v2 host).
    fn cgroupfs_pod(&mut self, index: u16, netns: Option<String>, processes: usize) -> TestPod {
        let root = self
            .hierarchies
            .v1
            .clone()
            .or_else(|| self.hierarchies.v2.clone())
            .expect("a hierarchy");
        let uid = self.uid(index);
        let mut pids = Vec::new();
        for k in 0..processes {
            let cgroup = self.add_cgroup(
                &root,
                &format!(
                    "kubepods/burstable/pod{uid}/{}",
                    Self::container_id(&uid, k)
                ),
            );
            let pid = self.spawn(netns.as_deref());
            Self::move_into(pid, &cgroup);
            pids.push(pid);
        }
        TestPod { uid, pids, netns }
    }

    /// A systemd-driver pod in v2 (the v1 hierarchy on a pure v1 host): besteffort, or
    /// guaranteed when `guaranteed`.
    fn systemd_pod(
        &mut self,
        index: u16,
        netns: Option<String>,
        processes: usize,
        guaranteed: bool,
    ) -> TestPod {
        let root = self
            .hierarchies
            .v2
            .clone()
            .or_else(|| self.hierarchies.v1.clone())
            .expect("a hierarchy");
        let uid = self.uid(index);
        let escaped = uid.as_str().replace('-', "_");
        let pod_slices = if guaranteed {
            format!("kubepods.slice/kubepods-pod{escaped}.slice")
        } else {
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{escaped}.slice"
            )
        };
        let mut pids = Vec::new();
        for k in 0..processes {
            let cgroup = self.add_cgroup(
                &root,
                &format!(
                    "{pod_slices}/cri-containerd-{}.scope",
                    Self::container_id(&uid, k)
                ),
            );
            let pid = self.spawn(netns.as_deref());
            Self::move_into(pid, &cgroup);
            pids.push(pid);
        }
        TestPod { uid, pids, netns }
    }

    /// The usual node: pod `a` (cgroupfs, v1, own namespace, 2 processes), pod `b` (systemd,
    /// v2, own namespace, 2 processes), pod `h` (hostNetwork), and a bystander's PID.
    fn populate(&mut self) -> (TestPod, TestPod, TestPod, i32) {
        let netns_a = self.add_netns("a");
        let netns_b = self.add_netns("b");
        let a = self.cgroupfs_pod(1, Some(netns_a), 2);
        let b = self.systemd_pod(2, Some(netns_b), 2, false);
        let h = self.systemd_pod(3, None, 1, true);
        let bystander = self.spawn(None);
        (a, b, h, bystander)
    }

    /// The entries directory, with this test process as the host reference: PID 1 is not
    /// always readable (it is not on our CI's firecracker VMs), and we run in the host's
    /// namespace.
    fn entries(&self) -> PodNetnsDir {
        PodNetnsDir::open(self.entries.path().join("netns"), proc_root())
            .expect("entries dir")
            .with_host_netns(format!("/proc/{}/ns/net", std::process::id()))
    }

    /// SIGKILLs (by PID) and reaps the fixture's processes among `pids`.
    fn kill(&mut self, pids: &[i32]) {
        for child in &mut self.children {
            if pids.contains(&(child.id() as i32)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for cgroup in self.cgroups.iter().rev() {
            // A reaped process can leave its cgroup a moment later than `wait` returns.
            let deadline = Instant::now() + SETTLE;
            loop {
                match fs::remove_dir(cgroup) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("cannot remove cgroup {}: {e}", cgroup.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for name in self.namespaces.iter().rev() {
            match Command::new("ip").args(["netns", "del", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "cannot delete namespace {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("cannot delete namespace {name}: {e}"),
            }
        }
    }
}

fn sorted(pids: &[i32]) -> Vec<i32> {
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids
}

/// Waits until `done` holds, for at most [`SETTLE`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn discovery_finds_exactly_each_pods_processes() {
    if !root_or_skip("discovery_finds_exactly_each_pods_processes") {
        return;
    }
    let Some(mut node) = Node::new() else { return };
    let (a, b, h, bystander) = node.populate();

    if node.hierarchies.v1.is_some() && node.hierarchies.v2.is_some() {
        // A hybrid host: pod a is named only by a v1 line, pod b only by the v2 line.
        let naming_lines = |pod: &TestPod| -> Vec<String> {
            let text = fs::read_to_string(format!("/proc/{}/cgroup", pod.pids[0])).unwrap();
            let needle = format!("pod{}", pod.uid.as_str().replace('-', "_"));
            text.lines()
                .filter(|line| line.replace('-', "_").contains(&needle))
                .map(str::to_owned)
                .collect()
        };
        let (lines_a, lines_b) = (naming_lines(&a), naming_lines(&b));
        assert!(
            lines_a.len() == 1 && !lines_a[0].starts_with("0::"),
            "{lines_a:?}"
        );
        assert!(
            lines_b.len() == 1 && lines_b[0].starts_with("0::"),
            "{lines_b:?}"
        );
    }

    let pods = discover_pods(proc_root()).expect("discover");
    for pod in [&a, &b, &h] {
        let found: Vec<i32> = pods
            .get(&pod.uid)
            .unwrap_or_else(|| panic!("pod {} not found", pod.uid))
            .iter()
            .map(|p| p.target.pid)
            .collect();
        assert_eq!(found, sorted(&pod.pids), "pod {}", pod.uid);
        let one = find_pod(proc_root(), &pod.uid).expect("find");
        assert_eq!(one.iter().map(|p| p.target.pid).collect::<Vec<_>>(), found);
    }
    let ours: BTreeSet<i32> = [&a, &b, &h].iter().flat_map(|p| p.pids.clone()).collect();
    for (uid, processes) in &pods {
        for process in processes {
            assert_ne!(
                process.target.pid, bystander,
                "bystander found in pod {uid}"
            );
            if ![&a.uid, &b.uid, &h.uid].contains(&uid) {
                assert!(
                    !ours.contains(&process.target.pid),
                    "pid {} attributed to a foreign pod {uid}",
                    process.target.pid
                );
            }
        }
    }

    // Labels and cgroup details come from the real files.
    let first_a = &pods[&a.uid][0];
    assert!(first_a
        .target
        .label
        .starts_with(&format!("pod {} container ", a.uid)));
    assert!(first_a.cgroup.container_id.is_some());
    let b_ids: BTreeSet<_> = pods[&b.uid]
        .iter()
        .map(|p| p.cgroup.container_id.clone().expect("container id"))
        .collect();
    assert_eq!(
        b_ids,
        (0..2).map(|k| Node::container_id(&b.uid, k)).collect(),
        "each scope's container id"
    );
}

#[test]
fn pod_entries_enter_the_pods_namespaces_and_die_with_the_pod() {
    if !root_or_skip("pod_entries_enter_the_pods_namespaces_and_die_with_the_pod") {
        return;
    }
    let Some(mut node) = Node::new() else { return };
    let (a, b, h, _bystander) = node.populate();
    let entries = node.entries();
    let report = entries
        .refresh(&discover_pods(proc_root()).expect("discover"))
        .expect("refresh");
    for pod in [&a, &b] {
        assert!(report.changed.contains(&pod.uid), "{} is new", pod.uid);
    }
    assert!(report.host_network.contains(&h.uid));
    assert!(!report.changed.contains(&h.uid));

    // Each entry is the pod's real namespace, and `node` the host's.
    let id = |path: PathBuf| NetnsId::of_path(&path).expect("namespace id");
    let named = |name: &str| id(Path::new(DEFAULT_NETNS_DIR).join(name));
    let entry = |name: &str| id(entries.dir().join(name));
    let (netns_a, netns_b) = (a.netns.clone().unwrap(), b.netns.clone().unwrap());
    assert_eq!(entry(&pod_entry_name(&a.uid)), named(&netns_a));
    assert_eq!(entry(&pod_entry_name(&b.uid)), named(&netns_b));
    assert_eq!(entry(NODE_ENTRY), id(PathBuf::from("/proc/self/ns/net")));
    assert!(!entries.dir().join(pod_entry_name(&h.uid)).exists());

    // Rules added through the entries land in that pod's namespace only. (Nothing is ever
    // added to the host namespace; it is only read.)
    let rules = NetlinkRuleTable::new(entries.dir());
    let priority = priority_for_slot(900 + node.serial % 100);
    let rule = |netns: &str, last: u8| PartitionRule {
        netns: netns.to_owned(),
        destination: Ipv4Addr::new(10, 203, 251, last),
        prefix_len: 32,
        priority,
    };
    let (rule_a, rule_b) = (
        rule(&pod_entry_name(&a.uid), 1),
        rule(&pod_entry_name(&b.uid), 2),
    );
    rules
        .add(
            &[rule_a.clone(), rule_b.clone()],
            faultline_injectors::ledger::now_unix_ms() + 60_000,
        )
        .expect("add pod rules");
    assert_eq!(
        rules.list_ours(&rule_a.netns).unwrap(),
        vec![rule_a.clone()]
    );
    assert_eq!(
        rules.list_ours(&rule_b.netns).unwrap(),
        vec![rule_b.clone()]
    );
    let by_name = NetlinkRuleTable::new(DEFAULT_NETNS_DIR);
    assert_eq!(
        by_name.list_ours(&netns_a).unwrap(),
        vec![PartitionRule {
            netns: netns_a.clone(),
            ..rule_a.clone()
        }],
        "seen through `ip netns`' own file"
    );
    let on_host = rules.list_ours(NODE_ENTRY).expect("list host rules");
    for installed in [&rule_a, &rule_b] {
        assert!(
            !on_host
                .iter()
                .any(|r| r.destination == installed.destination && r.priority == priority),
            "{installed:?} leaked into the host namespace"
        );
    }

    // The pod's processes die: its entry counts as a gone namespace, so revert and reconcile
    // succeed on it (and find nothing), while the other pod is untouched.
    node.kill(&a.pids);
    let err = netns::run_in_netns(entries.dir(), &rule_a.netns, || ()).unwrap_err();
    assert!(netns::is_netns_gone(&err), "{err}");
    rules
        .delete(std::slice::from_ref(&rule_a))
        .expect("delete on a gone pod");
    assert!(rules.list_ours(&rule_a.netns).unwrap().is_empty());
    assert_eq!(
        rules.list_ours(&rule_b.netns).unwrap(),
        vec![rule_b.clone()]
    );

    // The next sync drops the dead pod's entry and keeps the live one's.
    let report = entries.sync().expect("sync");
    assert!(report.removed.contains(&a.uid), "{report:?}");
    let left = entries.pod_entries().unwrap();
    assert!(!left.contains(&a.uid) && left.contains(&b.uid), "{left:?}");

    rules
        .delete(std::slice::from_ref(&rule_b))
        .expect("delete pod b's rule");
    assert!(rules.list_ours(&rule_b.netns).unwrap().is_empty());
}

#[test]
fn pausing_a_pod_stops_and_resumes_every_process() {
    if !root_or_skip("pausing_a_pod_stops_and_resumes_every_process") {
        return;
    }
    let Some(mut node) = Node::new() else { return };
    let (a, b, _h, _bystander) = node.populate();
    let signaller = NixSignaller::new(proc_root());
    let targets = |pod: &TestPod| {
        let targets: Vec<_> = find_pod(proc_root(), &pod.uid)
            .expect("find")
            .into_iter()
            .map(|p| p.target)
            .collect();
        assert_eq!(targets.len(), pod.pids.len(), "pod {}", pod.uid);
        targets
    };
    let (paused, bystanders) = (targets(&b), targets(&a));

    for target in &paused {
        assert!(signaller.signal(target, Signal::SIGSTOP).expect("SIGSTOP"));
    }
    eventually("every process of the pod is stopped", || {
        paused.iter().all(|t| signaller.is_stopped(t))
    });
    assert!(
        bystanders.iter().all(|t| !signaller.is_stopped(t)),
        "another pod was stopped too"
    );

    for target in &paused {
        assert!(signaller.signal(target, Signal::SIGCONT).expect("SIGCONT"));
    }
    eventually("every process of the pod runs again", || {
        paused.iter().all(|t| !signaller.is_stopped(t))
    });
    // Still the same processes, still in their pod.
    assert_eq!(targets(&b), paused);
}
