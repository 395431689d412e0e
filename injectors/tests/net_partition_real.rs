//! [`NetlinkRuleTable`] against real network namespaces, and real TCP across a real partition.
//!
//! Needs root; without it every test prints why and passes. The fixture builds its own small
//! lab: node namespaces joined by veth pairs to a bridge in a switch namespace, all named
//! `fl-t<pid>-<n>-…`, with addresses from 10.203.0.0/16 that exist only inside those
//! namespaces. The fixture (and only the fixture) uses `ip` to build and remove them; the
//! code under test speaks rtnetlink. Everything it made is deleted on drop, on panic too, and
//! namespaces left by an earlier run that was killed are swept at the start.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use faultline_injectors::net_partition::{
    is_ours, isolate, priority_for_slot, rules_for, Endpoint, NetlinkRuleTable, PartitionRule,
    RuleTable,
};
use faultline_injectors::netns::{self, DEFAULT_NETNS_DIR};

/// How long one connection attempt may take; prohibited ones fail at once.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn netns_dir() -> &'static Path {
    Path::new(DEFAULT_NETNS_DIR)
}

/// Whether we run as root; prints why a test is skipped when not.
fn root_or_skip(test: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        });
    if euid.as_deref() == Some("0") {
        true
    } else {
        eprintln!("skipping {test}: it needs root to create network namespaces");
        false
    }
}

/// Runs `ip ARGS` (fixture only) and returns its standard output; panics with its error.
fn ip(args: &[&str]) -> String {
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
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Deletes test namespaces (`fl-t<pid>-…`) whose creating process is gone, e.g. after a run
/// was killed. Namespaces of live processes, ours included, are left alone.
fn sweep_stale_namespaces() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        for line in ip(&["netns", "list"]).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix("fl-t")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing namespace {name} left by dead test process {pid}");
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    });
}

/// One node of the lab.
#[derive(Clone, Debug)]
struct Node {
    netns: String,
    address: Ipv4Addr,
}

impl Node {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            netns: self.netns.clone(),
            address: self.address,
        }
    }
}

/// A throw-away lab: `zones` × `per_zone` node namespaces on one bridge. Node `k` of zone `z`
/// (both from 1) is `<prefix>-<zone letter><k>` at `10.203.z.k/16`.
struct Lab {
    /// `zones[z][k]`.
    zones: Vec<Vec<Node>>,
    /// Every namespace made, in creation order.
    created: Vec<String>,
}

impl Lab {
    fn new(zones: u8, per_zone: u8) -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale_namespaces();
        let prefix = format!(
            "fl-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // `lab` owns every namespace from the moment it exists, so a failing step below
        // still removes what was made.
        let mut lab = Lab {
            zones: Vec::new(),
            created: Vec::new(),
        };
        let switch = format!("{prefix}-sw");
        lab.add_netns(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for zone in 1..=zones {
            let mut nodes = Vec::new();
            for k in 1..=per_zone {
                let netns = format!("{prefix}-{}{k}", char::from(b'a' + zone - 1));
                let address = Ipv4Addr::new(10, 203, zone, k);
                let port = format!("p{zone}-{k}");
                lab.add_netns(&netns);
                ip(&[
                    "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &switch,
                ]);
                ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
                ip(&[
                    "-n",
                    &netns,
                    "addr",
                    "add",
                    &format!("{address}/16"),
                    "dev",
                    "eth0",
                ]);
                ip(&["-n", &netns, "link", "set", "eth0", "up"]);
                ip(&["-n", &netns, "link", "set", "lo", "up"]);
                nodes.push(Node { netns, address });
            }
            lab.zones.push(nodes);
        }
        lab
    }

    fn add_netns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.created.push(name.to_owned());
    }

    fn node(&self, zone: usize, k: usize) -> &Node {
        &self.zones[zone][k]
    }

    fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.zones.iter().flatten()
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes().map(Node::endpoint).collect()
    }

    /// Deletes one namespace now, as if its node had gone away.
    fn remove_netns(&mut self, name: &str) {
        ip(&["netns", "del", name]);
        self.created.retain(|n| n != name);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
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

/// A TCP listener inside `node`'s namespace; connections complete in the kernel's backlog, so
/// nobody needs to accept them. Drop it before the lab, so the namespace really goes.
fn listen(node: &Node) -> TcpListener {
    let address = node.address;
    netns::run_in_netns(netns_dir(), &node.netns, move || {
        TcpListener::bind((address, 0))
    })
    .expect("enter the node namespace")
    .expect("bind a listener")
}

/// Tries one TCP connection from `from` to `to`; the error says why it failed.
fn connect(from: &Node, to: SocketAddr) -> std::io::Result<()> {
    netns::connect_tcp_in_netns(netns_dir(), &from.netns, to, CONNECT_TIMEOUT)
        .expect("enter the node namespace")
        .map(drop)
}

/// Waits (at most 5 s) until `from` reaches `to`, so tests start from a working network.
fn wait_reachable(from: &Node, to: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(from, to) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "{} cannot reach {to} even before any fault: {e}",
                    from.netns
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn rules_in(rules: &[PartitionRule], netns: &str) -> Vec<PartitionRule> {
    let mut mine: Vec<PartitionRule> = rules.iter().filter(|r| r.netns == netns).cloned().collect();
    mine.sort();
    mine
}

/// The lines of `ip rule show` in `netns` for `priority`.
fn shown_rules(netns: &str, priority: u32) -> Vec<String> {
    ip(&["-n", netns, "rule", "show"])
        .lines()
        .filter(|line| line.starts_with(&format!("{priority}:")))
        .map(str::to_owned)
        .collect()
}

/// A deadline `ms` from now, on the wall clock the table measures against.
fn in_ms(ms: u64) -> u64 {
    faultline_injectors::ledger::now_unix_ms() + ms
}

#[test]
#[allow(clippy::too_many_lines)] // One lab, one story from install to expiry; split, it repeats the lab.
fn partitions_are_kernel_set_elements_that_expire_at_the_deadline() {
    if !root_or_skip("partitions_are_kernel_set_elements_that_expire_at_the_deadline") {
        return;
    }
    let mut lab = Lab::new(2, 1);
    let (a1, b1) = (lab.node(0, 0).clone(), lab.node(1, 0).clone());
    let table = NetlinkRuleTable::new(DEFAULT_NETNS_DIR);
    let priority = priority_for_slot(3);
    let endpoints = lab.endpoints();
    let mut rules = rules_for(&isolate(&endpoints[..1], &endpoints).unwrap(), priority);
    // A wider prefix in another slot, to see prefix and priority come back as installed.
    let other_slot = PartitionRule {
        netns: a1.netns.clone(),
        destination: Ipv4Addr::new(10, 203, 7, 0),
        prefix_len: 24,
        priority: priority_for_slot(4),
    };
    rules.push(other_slot.clone());
    // Somebody else's policy rule, outside our range: never listed, never touched.
    ip(&[
        "-n",
        &a1.netns,
        "rule",
        "add",
        "to",
        "10.203.9.9/32",
        "prohibit",
        "priority",
        "100",
    ]);

    table.add(&rules, in_ms(60_000)).expect("add");
    table
        .add(&rules, in_ms(60_000))
        .expect("adding the same rules again is fine");
    for node in [&a1, &b1] {
        let listed = table.list_ours(&node.netns).expect("list");
        assert_eq!(listed, rules_in(&rules, &node.netns), "in {}", node.netns);
        assert!(listed.iter().all(|r| is_ours(r.priority)));
    }
    // The kernel holds each prefix with the time left to the deadline, and no policy rule.
    let held = table
        .expirations(&a1.netns, priority)
        .unwrap()
        .expect("slot 3 has a set in a1");
    assert_eq!(held.len(), 1, "one element after two adds: {held:?}");
    let (address, len, left_ms) = held[0];
    assert_eq!((address, len), (b1.address, 32));
    assert!(
        (50_000..=60_000).contains(&left_ms),
        "the element expires with the fault, {left_ms} ms from now"
    );
    let wide = table
        .expirations(&a1.netns, other_slot.priority)
        .unwrap()
        .expect("slot 4 has a set in a1");
    assert_eq!(
        wide.iter().map(|(a, l, _)| (*a, *l)).collect::<Vec<_>>(),
        vec![(Ipv4Addr::new(10, 203, 7, 0), 24)]
    );
    assert!(
        shown_rules(&a1.netns, priority).is_empty(),
        "no policy rule any more"
    );

    // Deleting one slot leaves the other alone; its set stays, empty, until a tidy, which
    // spares the slots it is told are live.
    table
        .delete(std::slice::from_ref(&other_slot))
        .expect("delete one slot");
    assert_eq!(
        table.list_ours(&a1.netns).unwrap(),
        rules_in(&rules[..rules.len() - 1], &a1.netns)
    );
    assert_eq!(
        table.expirations(&a1.netns, other_slot.priority).unwrap(),
        Some(vec![])
    );
    let live: BTreeSet<u32> = [other_slot.priority].into();
    assert!(table.tidy(&a1.netns, &live).unwrap().is_empty());
    assert_eq!(
        table.tidy(&a1.netns, &BTreeSet::new()).unwrap(),
        vec![other_slot.priority],
        "the empty slot goes; slot 3 still blocks, so it stays"
    );
    assert_eq!(
        table.expirations(&a1.netns, other_slot.priority).unwrap(),
        None
    );
    assert!(table.expirations(&a1.netns, priority).unwrap().is_some());

    table.delete(&rules).expect("delete");
    table
        .delete(&rules)
        .expect("deleting rules that are gone is fine");
    for node in [&a1, &b1] {
        assert_eq!(
            table.list_ours(&node.netns).unwrap(),
            vec![],
            "in {}",
            node.netns
        );
        assert_eq!(
            table.expirations(&node.netns, priority).unwrap(),
            Some(vec![])
        );
    }
    assert_eq!(
        shown_rules(&a1.netns, 100).len(),
        1,
        "the foreign rule must stay"
    );

    // A policy rule in our range, as an earlier version installed it: listed and removed.
    ip(&[
        "-n",
        &a1.netns,
        "rule",
        "add",
        "to",
        &b1.address.to_string(),
        "prohibit",
        "priority",
        &priority.to_string(),
    ]);
    let legacy = vec![PartitionRule {
        netns: a1.netns.clone(),
        destination: b1.address,
        prefix_len: 32,
        priority,
    }];
    assert_eq!(table.list_ours(&a1.netns).unwrap(), legacy);
    table.delete(&legacy).expect("delete the old-style rule");
    assert!(shown_rules(&a1.netns, priority).is_empty());
    assert_eq!(table.list_ours(&a1.netns).unwrap(), vec![]);

    // A short deadline: the kernel drops the elements on its own.
    table.add(&rules, in_ms(300)).expect("add until soon");
    assert_eq!(
        table.list_ours(&b1.netns).unwrap(),
        rules_in(&rules, &b1.netns)
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        table.list_ours(&b1.netns).unwrap(),
        vec![],
        "expired elements are not listed"
    );
    // Reinstalling into the slot's existing (empty) set works, and so does the revert.
    table.add(&rules, in_ms(60_000)).expect("add again");
    assert_eq!(
        table.list_ours(&b1.netns).unwrap(),
        rules_in(&rules, &b1.netns)
    );

    // A namespace that has gone away: nothing to list, nothing to delete, but no adding.
    lab.remove_netns(&b1.netns);
    assert_eq!(table.list_ours(&b1.netns).unwrap(), vec![]);
    table
        .delete(&rules)
        .expect("deleting in a removed namespace is fine");
    assert_eq!(
        table.list_ours(&a1.netns).unwrap(),
        vec![],
        "a1's rules went"
    );
    let err = table
        .add(&rules, in_ms(60_000))
        .expect_err("adding into a removed namespace fails");
    assert!(netns::is_netns_gone(&err), "{err}");
    assert!(err.to_string().contains(&b1.netns), "{err}");
    // ...and the rules that could be added are there, to be reverted by a delete.
    assert_eq!(
        table.list_ours(&a1.netns).unwrap(),
        rules_in(&rules, &a1.netns)
    );
    table.delete(&rules).expect("revert");
    assert_eq!(table.list_ours(&a1.netns).unwrap(), vec![]);
}

#[test]
fn tcp_is_cut_across_the_partition_and_heals() {
    if !root_or_skip("tcp_is_cut_across_the_partition_and_heals") {
        return;
    }
    let lab = Lab::new(2, 2);
    let (a1, a2) = (lab.node(0, 0), lab.node(0, 1));
    let (b1, b2) = (lab.node(1, 0), lab.node(1, 1));
    // Declared after `lab`, so dropped before it.
    let listeners: Vec<(String, TcpListener)> = lab
        .nodes()
        .map(|node| (node.netns.clone(), listen(node)))
        .collect();
    let addr = |node: &Node| -> SocketAddr {
        let (_, listener) = listeners
            .iter()
            .find(|(netns, _)| *netns == node.netns)
            .expect("every node listens");
        listener.local_addr().unwrap()
    };
    for from in lab.nodes() {
        for to in lab.nodes() {
            wait_reachable(from, addr(to));
        }
    }

    let table = NetlinkRuleTable::new(DEFAULT_NETNS_DIR);
    let endpoints = lab.endpoints();
    let zone_a: Vec<Endpoint> = lab.zones[0].iter().map(Node::endpoint).collect();
    let rules = rules_for(&isolate(&zone_a, &endpoints).unwrap(), priority_for_slot(0));
    assert_eq!(rules.len(), 8);
    table
        .add(&rules, in_ms(60_000))
        .expect("install the partition");

    let started = Instant::now();
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2), (a1, b2), (b2, a1)] {
        let err = connect(from, addr(to)).expect_err(&format!(
            "{} must not reach {} during the partition",
            from.netns, to.netns
        ));
        // The reject answers the sender at once with ICMP admin-prohibited (EHOSTUNREACH); a
        // timeout would mean the packets were silently lost instead.
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::HostUnreachable,
            "{} -> {}: {err}",
            from.netns,
            to.netns
        );
    }
    for (from, to) in [(a1, a2), (a2, a1), (b1, b2), (b2, b1)] {
        connect(from, addr(to)).unwrap_or_else(|e| {
            panic!(
                "{} and {} are on the same side and must still talk: {e}",
                from.netns, to.netns
            )
        });
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "prohibited connections should fail at once, took {:?}",
        started.elapsed()
    );

    table.delete(&rules).expect("heal");
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2)] {
        connect(from, addr(to)).unwrap_or_else(|e| {
            panic!("{} must reach {} after the heal: {e}", from.netns, to.netns)
        });
    }
    let left: BTreeSet<PartitionRule> = lab
        .nodes()
        .flat_map(|node| table.list_ours(&node.netns).unwrap())
        .collect();
    assert!(left.is_empty(), "rules left after heal: {left:?}");
}

/// Environment variable that turns [`installer_child`] into a partition installer: the rules
/// as `netns=address/len@priority` joined by spaces, then `|` and the deadline in Unix ms.
const INSTALLER_ENV: &str = "FL_TEST_PARTITION_INSTALLER";

/// Not a test on its own: re-run by [`a_partition_ends_at_its_deadline_with_its_installer_killed`]
/// as a separate process that installs a partition, says so, and then waits to be killed, as
/// an agent would. Without the variable it does nothing.
#[test]
fn installer_child() {
    let Ok(spec) = std::env::var(INSTALLER_ENV) else {
        return;
    };
    let (rules, deadline) = spec.split_once('|').expect("rules|deadline");
    let rules: Vec<PartitionRule> = rules
        .split_whitespace()
        .map(|rule| {
            let (netns, rest) = rule.split_once('=').expect("netns=");
            let (prefix, priority) = rest.split_once('@').expect("@priority");
            let (address, len) = prefix.split_once('/').expect("/len");
            PartitionRule {
                netns: netns.to_owned(),
                destination: address.parse().expect("address"),
                prefix_len: len.parse().expect("len"),
                priority: priority.parse().expect("priority"),
            }
        })
        .collect();
    NetlinkRuleTable::new(DEFAULT_NETNS_DIR)
        .add(&rules, deadline.parse().expect("deadline"))
        .expect("install");
    println!("INSTALLED");
    std::thread::sleep(Duration::from_secs(120));
}

/// Kills `child` (by its PID) when dropped, so a failing test leaves no installer behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[allow(clippy::too_many_lines)] // One story: install, kill the installer, see the kernel end it.
fn a_partition_ends_at_its_deadline_with_its_installer_killed() {
    if !root_or_skip("a_partition_ends_at_its_deadline_with_its_installer_killed") {
        return;
    }
    let lab = Lab::new(2, 2);
    let listeners: Vec<(String, TcpListener)> = lab
        .nodes()
        .map(|node| (node.netns.clone(), listen(node)))
        .collect();
    let addr = |node: &Node| -> SocketAddr {
        let (_, listener) = listeners
            .iter()
            .find(|(netns, _)| *netns == node.netns)
            .expect("every node listens");
        listener.local_addr().unwrap()
    };
    let (a1, b1) = (lab.node(0, 0), lab.node(1, 0));
    let (a2, b2) = (lab.node(0, 1), lab.node(1, 1));
    for (from, to) in [(a1, b1), (b2, a2)] {
        wait_reachable(from, addr(to));
    }

    let endpoints = lab.endpoints();
    let zone_a: Vec<Endpoint> = lab.zones[0].iter().map(Node::endpoint).collect();
    let rules = rules_for(
        &isolate(&zone_a, &endpoints).unwrap(),
        priority_for_slot(11),
    );
    let deadline = in_ms(3_000);
    let spec = rules
        .iter()
        .map(|r| {
            format!(
                "{}={}/{}@{}",
                r.netns, r.destination, r.prefix_len, r.priority
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Reaped(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "installer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSTALLER_ENV, format!("{spec}|{deadline}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the installer"),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("INSTALLED") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut out, &mut line).expect("read the installer");
        assert!(read > 0, "the installer ended before installing");
    }

    // The installer is the only process that knew about the partition: kill it (SIGKILL, by
    // PID) and reap it, so that nothing of ours is left running.
    child.0.kill().expect("kill the installer");
    let status = child.0.wait().expect("reap the installer");
    assert!(!status.success(), "the installer was killed: {status}");
    let table = NetlinkRuleTable::new(DEFAULT_NETNS_DIR);

    let killed_at = faultline_injectors::ledger::now_unix_ms();
    assert!(
        killed_at + 500 < deadline,
        "the installer took too long to start; the rest of the test needs time before the deadline"
    );
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2)] {
        connect(from, addr(to)).expect_err(&format!(
            "{} must not reach {} before the deadline, installer dead or not",
            from.netns, to.netns
        ));
    }

    // After the deadline the kernel has dropped every element by itself.
    let wait = Duration::from_millis(
        deadline.saturating_sub(faultline_injectors::ledger::now_unix_ms()) + 300,
    );
    std::thread::sleep(wait);
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2), (a1, b2)] {
        connect(from, addr(to)).unwrap_or_else(|e| {
            panic!(
                "{} must reach {} after the deadline with no process of ours alive: {e}",
                from.netns, to.netns
            )
        });
    }
    for node in lab.nodes() {
        assert_eq!(
            table.list_ours(&node.netns).unwrap(),
            vec![],
            "in {}",
            node.netns
        );
    }
    // A reconcile's tidy removes the expired slot's empty chains and set.
    for node in lab.nodes() {
        assert_eq!(
            table.tidy(&node.netns, &BTreeSet::new()).unwrap(),
            vec![priority_for_slot(11)],
            "in {}",
            node.netns
        );
    }
    assert_eq!(
        table.expirations(&a1.netns, priority_for_slot(11)).unwrap(),
        None
    );
}
