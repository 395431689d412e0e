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

#[test]
fn netlink_rules_are_real_prohibit_rules_and_idempotent() {
    if !root_or_skip("netlink_rules_are_real_prohibit_rules_and_idempotent") {
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
    // Somebody else's rule, outside our range: never listed, never touched.
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

    table.add(&rules).expect("add");
    table
        .add(&rules)
        .expect("adding the same rules again is fine");
    for node in [&a1, &b1] {
        let listed = table.list_ours(&node.netns).expect("list");
        assert_eq!(listed, rules_in(&rules, &node.netns), "in {}", node.netns);
        assert!(listed.iter().all(|r| is_ours(r.priority)));
    }
    let shown = shown_rules(&a1.netns, priority);
    assert_eq!(shown.len(), 1, "exactly one rule after two adds: {shown:?}");
    assert!(
        shown[0].contains(&format!("to {}", b1.address)),
        "{shown:?}"
    );
    assert!(shown[0].contains("prohibit"), "{shown:?}");
    assert!(
        !shown[0].contains("lookup"),
        "must be table 0, not `lookup main`: {shown:?}"
    );
    let shown_other = shown_rules(&a1.netns, other_slot.priority);
    assert_eq!(shown_other.len(), 1, "{shown_other:?}");
    assert!(
        shown_other[0].contains("to 10.203.7.0/24 prohibit"),
        "{shown_other:?}"
    );
    assert!(!shown_other[0].contains("lookup"), "{shown_other:?}");

    // Deleting one slot leaves the other alone.
    table
        .delete(std::slice::from_ref(&other_slot))
        .expect("delete one slot");
    assert_eq!(
        table.list_ours(&a1.netns).unwrap(),
        rules_in(&rules[..rules.len() - 1], &a1.netns)
    );

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
    }
    assert_eq!(
        shown_rules(&a1.netns, 100).len(),
        1,
        "the foreign rule must stay"
    );

    // A namespace that has gone away: nothing to list, nothing to delete, but no adding.
    table.add(&rules).expect("add again");
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
        .add(&rules)
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
    table.add(&rules).expect("install the partition");

    let started = Instant::now();
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2), (a1, b2), (b2, a1)] {
        let err = connect(from, addr(to)).expect_err(&format!(
            "{} must not reach {} during the partition",
            from.netns, to.netns
        ));
        // `prohibit` answers the sender at once with EACCES; a timeout would mean the packets
        // were silently lost instead.
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::PermissionDenied,
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
