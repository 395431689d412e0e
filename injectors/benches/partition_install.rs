//! How long a zone-vs-rest partition takes to install and remove: [`NetlinkRuleTable`]
//! (nf_tables set elements with a kernel timeout, over nfnetlink) against exec'ing `ip rule`
//! once per rule (the previous mechanism's command-line equivalent), measured in the same run.
//!
//! Run as root with `cargo bench -p faultline-injectors --bench partition_install`
//! (`FL_BENCH_ITERATIONS` overrides the 50 iterations). It builds its own lab of 3 zones × 2
//! nodes: namespaces `fl-t<pid>-b-…` joined by veth pairs to a bridge in a switch namespace,
//! addresses 10.203.<zone>.<n>/16 inside them only. Zone a against the rest is 16 rules across
//! the 6 node namespaces. The lab is removed when the bench ends, on panic too. `ip` is used by
//! the fixture and as the baseline; the code under test speaks netlink.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_injectors::net_partition::{
    isolate, priority_for_slot, rules_for, Endpoint, NetlinkRuleTable, PartitionRule, RuleTable,
};
use faultline_injectors::netns::DEFAULT_NETNS_DIR;

const DEFAULT_ITERATIONS: usize = 50;
const WARMUP_ITERATIONS: usize = 3;
/// The pause before each change in the spaced measurement: longer than an RCU grace period.
const QUIET: Duration = Duration::from_millis(50);

fn main() {
    if !is_root() {
        println!("partition_install: skipped, it needs root to create network namespaces");
        return;
    }
    let iterations = std::env::var("FL_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_ITERATIONS);

    let lab = Lab::new(3, 2);
    let endpoints = lab.endpoints();
    let grudge = isolate(&endpoints[..2], &endpoints).expect("zone a vs rest");
    let rules = rules_for(&grudge, priority_for_slot(0));
    let namespaces: std::collections::BTreeSet<&str> =
        rules.iter().map(|r| r.netns.as_str()).collect();
    assert_eq!((rules.len(), namespaces.len()), (16, 6));

    let table = NetlinkRuleTable::new(DEFAULT_NETNS_DIR);
    let deadline = || faultline_injectors::ledger::now_unix_ms() + 60_000;
    // Back to back: each install starts right after the previous removal. The kernel finishes
    // releasing deleted set elements after an RCU grace period, and the next nf_tables change
    // in the namespace waits for that, so the install pays for the previous removal here.
    let netlink = measure(iterations, || {
        let start = Instant::now();
        table.add(&rules, deadline()).expect("netlink add");
        let installed = Instant::now();
        table.delete(&rules).expect("netlink delete");
        (installed - start, installed.elapsed())
    });
    assert_clean(&table, &lab);
    // Spaced: a quiet pause (not counted) before each change, as between real faults.
    let spaced = measure(iterations, || {
        std::thread::sleep(QUIET);
        let start = Instant::now();
        table.add(&rules, deadline()).expect("netlink add");
        let added = start.elapsed();
        std::thread::sleep(QUIET);
        let start = Instant::now();
        table.delete(&rules).expect("netlink delete");
        (added, start.elapsed())
    });
    assert_clean(&table, &lab);
    let exec = measure(iterations, || {
        let start = Instant::now();
        exec_rules("add", &rules);
        let installed = Instant::now();
        exec_rules("del", &rules);
        (installed - start, installed.elapsed())
    });
    assert_clean(&table, &lab);

    println!(
        "zone-vs-rest partition: {} rules in {} namespaces, {iterations} iterations (after {WARMUP_ITERATIONS} warm-up)",
        rules.len(),
        namespaces.len()
    );
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "approach", "add p50", "add p90", "del p50", "del p90", "both p50", "both p90"
    );
    for (name, samples) in [
        ("netlink, back to back", &netlink),
        ("netlink, spaced", &spaced),
        ("exec `ip rule`", &exec),
    ] {
        println!(
            "{name:<26} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            ms(samples.add.p50()),
            ms(samples.add.p90()),
            ms(samples.delete.p50()),
            ms(samples.delete.p90()),
            ms(samples.both.p50()),
            ms(samples.both.p90()),
        );
    }
    for (name, samples) in [("back to back", &netlink), ("spaced", &spaced)] {
        let ratio = exec.both.p50().as_secs_f64() / samples.both.p50().as_secs_f64();
        println!(
            "{name}: exec / netlink (add + remove, median): {ratio:.1}x  (goal: at least 20x); \
             netlink add + remove, median: {}  (goal: under 2 ms)",
            ms(samples.both.p50())
        );
    }
}

/// Timings of one approach.
struct Samples {
    add: Series,
    delete: Series,
    both: Series,
}

struct Series(Vec<Duration>);

impl Series {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index]
    }

    fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    fn p90(&self) -> Duration {
        self.quantile(0.9)
    }
}

/// Runs `round` (install, then remove; it returns how long each took) a few times to warm up,
/// then `iterations` times measured.
fn measure(iterations: usize, mut round: impl FnMut() -> (Duration, Duration)) -> Samples {
    for _ in 0..WARMUP_ITERATIONS {
        round();
    }
    let mut samples = Samples {
        add: Series(Vec::with_capacity(iterations)),
        delete: Series(Vec::with_capacity(iterations)),
        both: Series(Vec::with_capacity(iterations)),
    };
    for _ in 0..iterations {
        let (add, delete) = round();
        samples.add.0.push(add);
        samples.delete.0.push(delete);
        samples.both.0.push(add + delete);
    }
    samples
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The baseline: one `ip -n NS rule add|del to A/32 prohibit priority P` per rule.
fn exec_rules(verb: &str, rules: &[PartitionRule]) {
    for rule in rules {
        ip(&[
            "-n",
            &rule.netns,
            "rule",
            verb,
            "to",
            &format!("{}/{}", rule.destination, rule.prefix_len),
            "prohibit",
            "priority",
            &rule.priority.to_string(),
        ]);
    }
}

fn assert_clean(table: &NetlinkRuleTable, lab: &Lab) {
    for node in &lab.nodes {
        let left = table.list_ours(&node.netns).expect("list");
        assert!(left.is_empty(), "rules left in {}: {left:?}", node.netns);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Runs `ip ARGS`; panics with its error.
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

/// One node of the lab.
struct Node {
    netns: String,
    address: Ipv4Addr,
}

/// `zones` × `per_zone` node namespaces on one bridge, removed on drop.
struct Lab {
    nodes: Vec<Node>,
    created: Vec<String>,
}

impl Lab {
    fn new(zones: u8, per_zone: u8) -> Lab {
        let prefix = format!("fl-t{}-b", std::process::id());
        // `lab` owns every namespace from the moment it exists, so a failing step below still
        // removes what was made.
        let mut lab = Lab {
            nodes: Vec::new(),
            created: Vec::new(),
        };
        let switch = format!("{prefix}-sw");
        lab.add_netns(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for zone in 1..=zones {
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
                lab.nodes.push(Node { netns, address });
            }
        }
        lab
    }

    fn add_netns(&mut self, name: &str) {
        assert!(
            !Path::new(DEFAULT_NETNS_DIR).join(name).exists(),
            "namespace {name} already exists"
        );
        ip(&["netns", "add", name]);
        self.created.push(name.to_owned());
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes
            .iter()
            .map(|node| Endpoint {
                netns: node.netns.clone(),
                address: node.address,
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            if let Err(e) = Command::new("ip").args(["netns", "del", name]).status() {
                eprintln!("cannot delete namespace {name}: {e}");
            }
        }
    }
}
