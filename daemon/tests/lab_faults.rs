//! Issue-level acceptance of the lab and the fault lifecycle, against real namespaces, a real
//! nats-server cluster and the real binaries.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{can_run_lab, tcp_reachable, wait_until, TestLab, NETNS_DIR};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
}

/// Whether `pid` has exited (gone or a zombie nobody reaped yet).
fn has_exited(pid: i32) -> bool {
    faultline_experiments::lab::agent::is_zombie(Path::new("/proc"), pid)
}

fn fault_ids(lab: &TestLab) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("json");
    json.as_array()
        .expect("array")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_owned())
        .collect()
}

fn injected_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "fault")
        .nth(1)
        .expect("fault id in output")
        .trim_end_matches(':')
        .to_owned()
}

/// A listener inside `netns`, accepting (and dropping) connections in the background.
fn listen_in(netns: &str, addr: &str) -> TcpListener {
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let listener =
        faultline_injectors::netns::run_in_netns(Path::new(NETNS_DIR), netns, move || {
            TcpListener::bind(addr)
        })
        .expect("enter")
        .expect("bind");
    let accepting = listener.try_clone().expect("clone");
    std::thread::spawn(move || for _ in accepting.incoming() {});
    listener
}

#[test]
fn zone_partition_cuts_the_zone_off_both_ways_and_keeps_each_side_whole() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    // NATS monitor ports listen on a1, b1 and c1; add listeners on a2 and b2.
    let _a2 = listen_in(&lab.netns("a2"), "10.203.1.12:7000");
    let _b2 = listen_in(&lab.netns("b2"), "10.203.2.12:7000");
    let checks = |expect_cut: bool| {
        let cut = !expect_cut;
        assert_eq!(
            tcp_reachable(&lab.netns("a1"), "10.203.2.11:8222"),
            cut,
            "a1 -> b1"
        );
        assert_eq!(
            tcp_reachable(&lab.netns("b2"), "10.203.1.11:8222"),
            cut,
            "b2 -> a1"
        );
        assert_eq!(
            tcp_reachable(&lab.netns("c1"), "10.203.1.12:7000"),
            cut,
            "c1 -> a2"
        );
        assert_eq!(
            tcp_reachable(&lab.netns("a2"), "10.203.2.12:7000"),
            cut,
            "a2 -> b2"
        );
        // Clients stand with the largest side.
        assert_eq!(
            tcp_reachable(&lab.netns("client"), "10.203.1.11:8222"),
            cut,
            "client -> a1"
        );
        assert!(
            tcp_reachable(&lab.netns("client"), "10.203.2.11:8222"),
            "client -> b1"
        );
        // Inside each side, traffic is untouched.
        assert!(
            tcp_reachable(&lab.netns("a1"), "10.203.1.12:7000"),
            "a1 -> a2"
        );
        assert!(
            tcp_reachable(&lab.netns("a2"), "10.203.1.11:8222"),
            "a2 -> a1"
        );
        assert!(
            tcp_reachable(&lab.netns("b1"), "10.203.3.11:8222"),
            "b1 -> c1"
        );
        assert!(
            tcp_reachable(&lab.netns("c2"), "10.203.2.12:7000"),
            "c2 -> b2"
        );
    };
    checks(false);
    let out = lab.ok(&["inject", "partition", "--zone", "a", "--for", "60s"]);
    assert!(
        out.contains("zone a vs rest") && out.contains("36 rules"),
        "{out}"
    );
    // 16 between the zones, 4 between zone a and the client namespace, 8 between zone a's
    // client namespace and zones b and c, 4 + 4 between zone a and the other zones' clients.
    assert_eq!(lab.our_rules().len(), 36, "{:#?}", lab.our_rules());
    assert!(lab
        .our_rules()
        .iter()
        .all(|r| r.contains("/32 priority 24")));
    checks(true);
    lab.ok(&["revert", &injected_id(&out)]);
    assert!(lab.our_rules().is_empty());
    checks(false);
}

#[test]
fn zone_clients_share_their_zones_fate_and_go_at_lab_down() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let status = lab.status();
    let zone_clients: Vec<(String, String)> = status["zone_clients"]
        .as_array()
        .expect("zone_clients")
        .iter()
        .map(|c| {
            assert_eq!(c["present"], true, "{c}");
            (
                c["zone"].as_str().expect("zone").to_owned(),
                c["netns"].as_str().expect("netns").to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = zone_clients.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [lab.netns("c-a"), lab.netns("c-b"), lab.netns("c-c")],
        "one client namespace per zone"
    );
    let a2_listener = listen_in(&lab.netns("a2"), "10.203.1.12:7000");
    // NATS monitors listen on a1, b1 and c1.
    let (a1, a2, b1, c1) = (
        "10.203.1.11:8222",
        "10.203.1.12:7000",
        "10.203.2.11:8222",
        "10.203.3.11:8222",
    );
    let reach = |zone: &str, addr: &str| tcp_reachable(&lab.netns(&format!("c-{zone}")), addr);
    for zone in ["a", "b", "c"] {
        for addr in [a1, a2, b1, c1] {
            assert!(reach(zone, addr), "c-{zone} -> {addr} before the partition");
        }
    }
    let out = lab.ok(&["inject", "partition", "--zone", "a", "--for", "60s"]);
    // The cut zone's clients reach their own zone only, the others' clients everything else.
    assert!(reach("a", a1), "c-a -> a1");
    assert!(reach("a", a2), "c-a -> a2");
    assert!(!reach("a", b1), "c-a -> b1 during the partition");
    assert!(!reach("a", c1), "c-a -> c1 during the partition");
    for zone in ["b", "c"] {
        assert!(!reach(zone, a1), "c-{zone} -> a1 during the partition");
        assert!(!reach(zone, a2), "c-{zone} -> a2 during the partition");
        assert!(reach(zone, b1), "c-{zone} -> b1");
        assert!(reach(zone, c1), "c-{zone} -> c1");
    }
    // The majority's client namespace stands with b and c, as before.
    assert!(!tcp_reachable(&lab.netns("client"), a1), "client -> a1");
    assert!(tcp_reachable(&lab.netns("client"), b1), "client -> b1");
    lab.ok(&["revert", &injected_id(&out)]);
    assert!(reach("a", b1), "c-a -> b1 after the revert");
    assert!(reach("b", a1), "c-b -> a1 after the revert");

    drop(a2_listener);
    lab.ok(&["lab", "down"]);
    let left: Vec<String> = lab
        .namespaces()
        .into_iter()
        .filter(|n| names.contains(&n.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "zone client namespaces left after lab down: {left:?}"
    );
}

#[test]
fn deadlines_survive_sigkill_of_every_faultline_process() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let short = injected_id(&lab.ok(&["inject", "partition", "--zone", "b", "--for", "5s"]));
    let long = injected_id(&lab.ok(&["inject", "partition", "--node", "c2", "--for", "120s"]));
    // Zone b: 20 among the nodes and the client namespace, 16 with the zones' client
    // namespaces. Node c2: 12 among the nodes and the client namespace, 2 with each zone's
    // client namespace (every zone's first node is cut off from c2).
    let short_rules = 36;
    let long_rules = 18;
    assert_eq!(lab.our_rules().len(), short_rules + long_rules);

    let _b1 = listen_in(&lab.netns("b1"), "10.203.2.11:7001");
    let _c2 = listen_in(&lab.netns("c2"), "10.203.3.12:7002");
    assert!(
        !tcp_reachable(&lab.netns("a1"), "10.203.2.11:7001"),
        "zone b is cut off"
    );

    // No chaosctl runs now; kill the agent too.
    let agent = lab.agent_pid().expect("agent pid");
    sigkill(agent);
    wait_until(Duration::from_secs(5), "the agent to die", || {
        has_exited(agent)
    });
    std::thread::sleep(Duration::from_secs(6));
    // Nobody was left to revert, yet the kernel dropped the expired partition at its deadline,
    // and only that one.
    assert_eq!(lab.our_rules().len(), long_rules, "{:#?}", lab.our_rules());
    assert!(
        tcp_reachable(&lab.netns("a1"), "10.203.2.11:7001"),
        "zone b is back with no Faultline process alive"
    );
    assert!(
        !tcp_reachable(&lab.netns("a1"), "10.203.3.12:7002"),
        "c2 is still cut off until its own deadline"
    );

    // The next chaosctl command, whatever it is, forgets the expired record.
    assert_eq!(fault_ids(&lab), vec![long.clone()]);
    assert_eq!(lab.our_rules().len(), long_rules, "{:#?}", lab.our_rules());
    assert!(!fault_ids(&lab).contains(&short));
    assert_eq!(
        lab.status()["agent_pid"],
        serde_json::Value::Null,
        "the agent is dead"
    );

    // A pause has its deadline guard; kill that too, and the pause outlives its deadline
    // until the next Faultline process: here the agent, started directly, not through chaosctl.
    let third = pause_with_its_guard_killed(&lab, "nats/3");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["lab", "--name", &lab.name, "--state-root"])
        .arg(lab.state_root())
        .spawn()
        .expect("start agent");
    wait_until(
        Duration::from_secs(10),
        "the agent to revert the pause",
        || {
            !std::fs::read_dir(lab.lab_dir().join("ledger")).is_ok_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(&third))
            })
        },
    );
    let status = lab.status();
    assert!(status["services"]
        .as_array()
        .expect("services")
        .iter()
        .all(|s| s["health"] != "paused"));
    assert_eq!(
        lab.our_rules().len(),
        long_rules,
        "the live partition must stay"
    );
    agent.kill().expect("kill agent");
    agent.wait().expect("reap agent");
    // `lab up` notices the missing agent and starts a new one; the services keep running.
    let pids_before: Vec<i64> = lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["pid"].as_i64())
        .collect();
    let out = lab.ok(&["lab", "up"]);
    assert!(out.contains("agent started"), "{out}");
    assert!(lab.status()["agent_pid"].is_i64());
    let pids_after: Vec<i64> = lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["pid"].as_i64())
        .collect();
    assert_eq!(
        pids_before, pids_after,
        "a restarted agent adopts the running services"
    );
    lab.ok(&["revert", &long]);
    assert!(lab.our_rules().is_empty());
}

#[test]
fn users_own_services_from_a_topology_file_get_the_same_faults() {
    if !can_run_lab() {
        return;
    }
    let mut topology = tempfile::NamedTempFile::new().expect("temp");
    write!(
        topology,
        "zones:
  - name: east
    nodes: [e1]
  - name: west
    nodes: [w1, w2]
services:
  - name: web
    replicas: 2
    placement: spread_zones
    command: [python3, -m, http.server, '8080', --bind, '{{node_ip}}']
    ready:
      http: {{port: 8080, path: /}}
    ports: {{http: 8080}}
"
    )
    .expect("write");
    let lab = TestLab::new();
    lab.ok(&[
        "lab",
        "up",
        "--topology",
        topology.path().to_str().expect("utf8"),
    ]);
    let status = lab.status();
    let nodes: Vec<&str> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["node"].as_str().expect("node"))
        .collect();
    assert_eq!(nodes, ["e1", "w1"]);
    assert!(status["services"]
        .as_array()
        .expect("services")
        .iter()
        .all(|s| s["health"] == "ready"));
    // east is 10.203.1.11, west's first node 10.203.2.11.
    assert!(tcp_reachable(&lab.netns("w2"), "10.203.1.11:8080"));
    lab.ok(&["inject", "partition", "--zone", "east", "--for", "60s"]);
    assert!(!tcp_reachable(&lab.netns("w2"), "10.203.1.11:8080"));
    assert!(tcp_reachable(&lab.netns("w2"), "10.203.2.11:8080"));
    lab.ok(&["inject", "kill", "--service", "web", "--replica", "2"]);
    wait_until(Duration::from_secs(20), "web/2 restarted", || {
        let s = lab.status();
        s["services"][1]["restarts"] == 1 && s["services"][1]["health"] == "ready"
    });
}

#[test]
fn reconcile_removes_our_rules_when_the_ledger_is_gone() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    lab.ok(&["inject", "partition", "--shape", "halves", "--for", "120s"]);
    assert!(!lab.our_rules().is_empty());
    std::fs::remove_dir_all(lab.lab_dir().join("ledger")).expect("delete ledger");
    let out = lab.ok(&["reconcile"]);
    assert!(out.contains("orphaned rules"), "{out}");
    assert!(lab.our_rules().is_empty(), "{:#?}", lab.our_rules());
}

#[test]
fn killed_replica_is_restarted_and_status_shows_it() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let before = lab.status();
    let old_pid = before["services"][1]["pid"].as_i64().expect("pid");
    let out = lab.ok(&["inject", "kill", "--service", "nats", "--replica", "2"]);
    assert!(out.contains("SIGKILL"), "{out}");
    wait_until(
        Duration::from_secs(20),
        "nats/2 restarted and ready",
        || {
            let s = lab.status();
            let replica = &s["services"][1];
            replica["restarts"] == 1
                && replica["health"] == "ready"
                && replica["pid"].as_i64() != Some(old_pid)
        },
    );
    let text = lab.ok(&["lab", "status"]);
    assert!(text.contains("last restart: killed by SIGKILL"), "{text}");
}

#[test]
fn drain_moves_services_off_the_node_and_revert_uncordons() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let node = lab.node_of("nats/1");
    let out = lab.ok(&["inject", "drain", "--node", &node, "--for", "120s"]);
    wait_until(
        Duration::from_secs(20),
        "nats/1 to move and be ready",
        || {
            let s = lab.status();
            s["services"][0]["node"] != node.as_str() && s["services"][0]["health"] == "ready"
        },
    );
    let status = lab.status();
    assert_eq!(status["nodes"][0]["cordoned"], true);
    assert!(lab
        .ok(&["lab", "status"])
        .contains(&format!("evicted from {node} (cordoned)")));
    lab.ok(&["revert", &injected_id(&out)]);
    assert_eq!(lab.status()["nodes"][0]["cordoned"], false);
}

#[test]
fn lab_down_cleans_up_after_lab_up_was_killed_halfway() {
    if !can_run_lab() {
        return;
    }
    for delay_ms in [60, 400] {
        let lab = TestLab::new();
        let mut up = common::chaosctl_command(lab.state_root(), &lab.name)
            .args(["lab", "up"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn lab up");
        std::thread::sleep(Duration::from_millis(delay_ms));
        up.kill().expect("SIGKILL lab up");
        up.wait().expect("reap");
        // Whatever it managed to start: namespaces, agent, nats-servers.
        std::thread::sleep(Duration::from_millis(300));
        lab.ok(&["lab", "down"]);
        assert!(
            lab.namespaces().is_empty(),
            "namespaces left after {delay_ms} ms: {:?}",
            lab.namespaces()
        );
        assert!(!lab.lab_dir().exists(), "state left after {delay_ms} ms");
        let root = lab.state_root().display().to_string();
        let leftovers: Vec<String> = std::fs::read_dir("/proc")
            .expect("proc")
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
            .filter_map(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .map(|c| (pid, c))
            })
            .map(|(pid, c)| (pid, String::from_utf8_lossy(&c).replace('\0', " ")))
            .filter(|(_, c)| c.contains(&root))
            .map(|(pid, c)| format!("{pid}: {c}"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "processes left after {delay_ms} ms: {leftovers:#?}"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let cases: &[(&[&str], &str)] = &[
        (
            &["inject", "partition", "--zone", "q", "--for", "10s"],
            "zone `q` is not in lab",
        ),
        (
            &["inject", "kill", "--service", "redis", "--replica", "1"],
            "service `redis` is not in lab",
        ),
        (
            &["inject", "kill", "--service", "nats", "--replica", "9"],
            "replica `nats/9` is not in lab",
        ),
        (
            &["inject", "drain", "--node", "z9", "--for", "10s"],
            "node `z9` is not in lab",
        ),
        (
            &["inject", "partition", "--zone", "a", "--for", "0s"],
            "--for 0s: a fault must hold for some time",
        ),
        (
            &["inject", "partition", "--zone", "a", "--for", "3h"],
            "--for 3h is longer than the 2h limit",
        ),
        (
            &[
                "inject",
                "pause",
                "--service",
                "nats",
                "--replica",
                "1",
                "--for",
                "0s",
            ],
            "--for 0s: a fault must hold for some time",
        ),
    ];
    for (args, expected) in cases {
        let stderr = lab.fails(args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(fault_ids(&lab).is_empty());
    assert!(lab.our_rules().is_empty());
    assert!(lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .all(|s| s["health"] == "ready"));
}

#[test]
fn bad_topology_name_or_privileges_get_a_clear_error_and_change_nothing() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    // Malformed topology: line and column.
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    writeln!(
        file,
        "zones:\n  - name: a\n    nodes: [a1, a2]\n  - name: b\n    nodez: [b1]"
    )
    .expect("write");
    let other = TestLab::new();
    let stderr = other.fails(&[
        "lab",
        "up",
        "--topology",
        file.path().to_str().expect("utf8"),
    ]);
    assert!(stderr.contains("line 5 column 5"), "{stderr}");
    assert!(other.namespaces().is_empty());

    // The same name with another topology.
    let namespaces_up = lab.namespaces();
    let mut smaller = tempfile::NamedTempFile::new().expect("temp");
    writeln!(smaller, "zones:\n  - name: a\n    nodes: [a1]").expect("write");
    let stderr = lab.fails(&[
        "lab",
        "up",
        "--topology",
        smaller.path().to_str().expect("utf8"),
    ]);
    assert!(
        stderr.contains("is up with a different topology")
            && stderr.contains("the lab that is up runs service `nats`"),
        "{stderr}"
    );
    assert_eq!(
        lab.namespaces(),
        namespaces_up,
        "the running lab is untouched"
    );

    // Without root.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_chaosctl"),
            "inject",
            "kill",
            "--service",
            "nats",
            "--replica",
            "1",
        ])
        .env("FAULTLINE_STATE_ROOT", lab.state_root())
        .env("FAULTLINE_LAB", &lab.name)
        .output()
        .expect("setpriv");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("need root"), "{stderr}");
    assert!(lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .all(|s| s["restarts"] == 0));
}

#[test]
fn halt_reverts_everything_and_blocks_until_resume() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    lab.ok(&["inject", "partition", "--zone", "c", "--for", "120s"]);
    lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "1",
        "--for",
        "120s",
    ]);
    lab.ok(&["halt"]);
    assert!(lab.our_rules().is_empty());
    assert!(fault_ids(&lab).is_empty());
    let stderr = lab.fails(&["inject", "partition", "--zone", "a", "--for", "10s"]);
    assert!(
        stderr.contains("halted") && stderr.contains("chaosctl resume"),
        "{stderr}"
    );
    lab.ok(&["resume"]);
    lab.ok(&["inject", "partition", "--zone", "a", "--for", "10s"]);
}

/// Fields of `/proc/PID/stat` after the command name: state, and the session id.
fn state_and_session(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(3)?.parse().ok()?,
    ))
}

fn replica_status(lab: &TestLab, replica: &str) -> serde_json::Value {
    lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["replica"] == replica)
        .unwrap_or_else(|| panic!("{replica} is in the status"))
        .clone()
}

fn pid_of(lab: &TestLab, replica: &str) -> i32 {
    replica_status(lab, replica)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{replica} runs")) as i32
}

/// The deadline of fault `id`, from `chaosctl faults`.
fn deadline_of(lab: &TestLab, id: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("json");
    json.as_array()
        .expect("array")
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["deadline_unix_ms"].as_u64())
        .unwrap_or_else(|| panic!("fault {id} is active"))
}

/// Kills `child` (by its PID) when dropped, so a failing test leaves no `chaosctl` behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pause_outlives_a_killed_agent_until_its_deadline_then_the_restarted_agent_resumes_it() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let victim = pid_of(&lab, "nats/3");
    let agent = lab.agent_pid().expect("agent pid");
    // Each service is alone in its own session, out of reach of the agent's death.
    let (_, victim_session) = state_and_session(victim).expect("victim runs");
    let (_, agent_session) = state_and_session(agent).expect("agent runs");
    assert_eq!(victim_session, victim, "the replica leads its own session");
    assert_ne!(victim_session, agent_session);

    let id = injected_id(&lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "3",
        "--for",
        "10s",
    ]));
    let deadline = deadline_of(&lab, &id);
    assert_eq!(state_and_session(victim).map(|s| s.0), Some('T'));

    sigkill(agent);
    wait_until(Duration::from_secs(5), "the agent to die", || {
        has_exited(agent)
    });
    std::thread::sleep(Duration::from_secs(1));
    // With the agent dead, the kernel would have sent an orphaned, stopped process group SIGHUP
    // and SIGCONT: the replica must still be the same process, still stopped.
    assert_eq!(
        state_and_session(victim).map(|s| s.0),
        Some('T'),
        "the pause must hold after the agent's death"
    );
    let status = lab.status();
    assert_eq!(status["agent_pid"], serde_json::Value::Null);
    assert_eq!(status["agent_dead"], i64::from(agent), "{status:#}");
    let text = lab.ok(&["lab", "status"]);
    assert!(text.contains("agent dead"), "{text}");

    // `lab up` starts a new agent and waits until every replica is really ready, which nats/3
    // is only once its pause ends: at the deadline, not before.
    let mut up = Reaped(
        common::chaosctl_command(lab.state_root(), &lab.name)
            .args(["lab", "up", "--timeout", "60s"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start lab up"),
    );
    while faultline_injectors::ledger::now_unix_ms() + 700 < deadline {
        assert_eq!(
            state_and_session(victim).map(|s| s.0),
            Some('T'),
            "the restarted agent must keep the pause until its deadline"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = up.0.wait().expect("lab up ends");
    assert!(status.success(), "lab up: {status}");
    assert!(
        faultline_injectors::ledger::now_unix_ms() >= deadline,
        "lab up returned before the paused replica could be ready"
    );
    let (state, _) = state_and_session(victim).expect("the same replica process still runs");
    assert_ne!(state, 'T', "resumed at the deadline");
    assert_eq!(pid_of(&lab, "nats/3"), victim, "resumed, not restarted");
    assert!(!fault_ids(&lab).contains(&id));
    assert_eq!(replica_status(&lab, "nats/3")["health"], "ready");
}

#[test]
fn status_does_not_trust_a_dead_agent_and_lab_up_waits_for_real_readiness() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let agent = lab.agent_pid().expect("agent pid");
    let victim = pid_of(&lab, "gateway/2");
    sigkill(agent);
    wait_until(Duration::from_secs(5), "the agent to die", || {
        has_exited(agent)
    });
    sigkill(victim);
    wait_until(Duration::from_secs(5), "the replica to die", || {
        has_exited(victim)
    });

    let status = lab.status();
    assert_eq!(status["agent_pid"], serde_json::Value::Null);
    assert_eq!(status["agent_dead"], i64::from(agent));
    let gateway = replica_status(&lab, "gateway/2");
    assert_eq!(gateway["health"], "dead", "{gateway:#}");
    assert_eq!(
        gateway["pid"],
        serde_json::Value::Null,
        "a dead PID is not shown"
    );
    let text = lab.ok(&["lab", "status"]);
    assert!(text.contains("agent dead"), "{text}");
    assert!(
        text.contains(&format!("DEAD (pid {agent} is gone)")),
        "{text}"
    );

    let out = lab.ok(&["lab", "up"]);
    assert!(out.contains("agent started"), "{out}");
    let status = lab.status();
    assert_eq!(status["agent_dead"], serde_json::Value::Null);
    for service in status["services"].as_array().expect("services") {
        assert_eq!(service["health"], "ready", "after lab up: {service:#}");
        let pid = service["pid"].as_i64().expect("pid") as i32;
        assert!(
            !has_exited(pid),
            "{} has a live process",
            service["replica"]
        );
    }
    assert_ne!(pid_of(&lab, "gateway/2"), victim, "restarted");

    // A hold shows as held, and stops showing so as soon as it is released.
    let id = injected_id(&lab.ok(&[
        "inject",
        "stop",
        "--service",
        "gateway",
        "--replica",
        "1",
        "--for",
        "60s",
    ]));
    wait_until(Duration::from_secs(10), "gateway/1 to show held", || {
        replica_status(&lab, "gateway/1")["health"] == "held"
    });
    lab.ok(&["revert", &id]);
    let health = replica_status(&lab, "gateway/1")["health"].clone();
    assert_ne!(health, "held", "released holds are not shown as held");
}

/// The deadline guard recorded for fault `id` (its PID), read from the lab's state without
/// running chaosctl.
fn guard_of(lab: &TestLab, id: &str) -> i32 {
    let path = lab.lab_dir().join("guards").join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fault {id} has a guard file {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("guard json");
    json["pid"].as_i64().expect("guard pid") as i32
}

/// The deadline in fault `id`'s ledger record, read without running chaosctl.
fn recorded_deadline(lab: &TestLab, id: &str) -> u64 {
    let path = lab.lab_dir().join("ledger").join(format!("{id}.json"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("ledger record")).expect("json");
    json["deadline_unix_ms"].as_u64().expect("deadline")
}

/// Pauses `replica` for 2 s, SIGKILLs the pause's deadline guard, and asserts that (with the
/// agent dead and no chaosctl running) the pause outlives its deadline. Returns the fault id.
fn pause_with_its_guard_killed(lab: &TestLab, replica: &str) -> String {
    let paused = pid_of(lab, replica);
    let (service, number) = replica.split_once('/').expect("service/replica");
    let id = injected_id(&lab.ok(&[
        "inject",
        "pause",
        "--service",
        service,
        "--replica",
        number,
        "--for",
        "2s",
    ]));
    let guard = guard_of(lab, &id);
    sigkill(guard);
    wait_until(Duration::from_secs(5), "the guard to die", || {
        has_exited(guard)
    });
    let deadline = recorded_deadline(lab, &id);
    while faultline_injectors::ledger::now_unix_ms() < deadline + 1_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        proc_state(paused),
        Some('T'),
        "with its guard killed too, nothing ends the pause"
    );
    id
}

/// The audit log's entries for fault `id`.
fn audit_of(lab: &TestLab, id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(lab.state_root().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fault"] == id)
        .collect()
}

/// How long after its deadline a fault may still be in effect with every Faultline process but
/// its guard dead: the guard's wake-up, its reconcile, and this poll. A bound on correctness,
/// not a performance figure.
const DEADLINE_SLACK_MS: u64 = 3_000;

/// Polls `in_effect` (reading /proc and the lab's files only, never running a Faultline
/// command) and asserts the fault was in effect at every look before `deadline` and was over by
/// `deadline` + [`DEADLINE_SLACK_MS`]. Returns when it was first seen over, Unix ms.
fn assert_ends_at_its_deadline(
    deadline: u64,
    what: &str,
    mut in_effect: impl FnMut() -> bool,
) -> u64 {
    use faultline_injectors::ledger::now_unix_ms;
    loop {
        let before = now_unix_ms();
        let on = in_effect();
        let after = now_unix_ms();
        if !on {
            // Seen over: it may have ended only once the deadline had passed.
            assert!(
                after >= deadline,
                "{what} ended {} ms before its deadline",
                deadline - after
            );
            return after;
        }
        assert!(
            before <= deadline + DEADLINE_SLACK_MS,
            "{what} still in effect {} ms after its deadline",
            before - deadline
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process state letter of `pid` (`T` when stopped), `None` once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    state_and_session(pid).map(|s| s.0)
}

/// The fields of `/proc/PID/stat` after the command name: the parent PID and the process group.
fn parent_and_group(pid: i32) -> Option<(i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(2)?.parse().ok()?))
}

/// Injects `args` through `chaosctl`, which exits, then SIGKILLs the agent: no Faultline process
/// is left but the fault's guard. Returns the fault id and its guard's PID.
fn inject_then_kill_the_agent(lab: &TestLab, args: &[&str]) -> (String, i32) {
    let agent = lab.agent_pid().expect("agent pid");
    let id = injected_id(&lab.ok(args));
    let guard = guard_of(lab, &id);
    // Alone in its own session and process group, and not chaosctl's child any more: neither
    // the end of chaosctl (or a SIGKILL of its whole process group) nor the agent's death
    // reaches it.
    let (_, session) = state_and_session(guard).expect("the guard runs");
    let (parent, group) = parent_and_group(guard).expect("the guard runs");
    assert_eq!(
        (session, group),
        (guard, guard),
        "the guard leads its own session"
    );
    assert_ne!(parent, agent);
    sigkill(agent);
    wait_until(Duration::from_secs(5), "the agent to die", || {
        has_exited(agent)
    });
    assert!(
        !has_exited(guard),
        "the guard outlives chaosctl and the agent"
    );
    (id, guard)
}

/// Asserts that the expiry of fault `id` was done by its guard (the audit log's command line),
/// that the guard exited, and that it started the dead agent again.
fn assert_the_guard_reverted_it_and_restarted_the_agent(lab: &TestLab, id: &str, guard: i32) {
    wait_until(Duration::from_secs(5), "the guard to exit", || {
        has_exited(guard)
    });
    let expiries: Vec<serde_json::Value> = audit_of(lab, id)
        .into_iter()
        .filter(|e| e["event"] == "expire")
        .collect();
    assert_eq!(expiries.len(), 1, "{expiries:#?}");
    assert_eq!(expiries[0]["pid"], i64::from(guard), "{expiries:#?}");
    assert!(
        expiries[0]["command"]
            .as_str()
            .is_some_and(|c| c.contains(" guard ") && c.contains(id)),
        "{expiries:#?}"
    );
    assert!(
        !lab.lab_dir()
            .join("guards")
            .join(format!("{id}.json"))
            .exists(),
        "the guard removed its file"
    );
    let agent = lab.agent_pid().expect("the guard started an agent");
    assert!(!has_exited(agent), "the agent the guard started runs");
}

#[test]
fn a_pause_ends_at_its_deadline_with_chaosctl_and_the_agent_killed() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let victim = pid_of(&lab, "nats/3");
    let (id, guard) = inject_then_kill_the_agent(
        &lab,
        &[
            "inject",
            "pause",
            "--service",
            "nats",
            "--replica",
            "3",
            "--for",
            "4s",
        ],
    );
    let deadline = recorded_deadline(&lab, &id);
    assert_eq!(proc_state(victim), Some('T'));
    assert_ends_at_its_deadline(deadline, "the pause of nats/3", || {
        proc_state(victim) == Some('T')
    });
    assert!(proc_state(victim).is_some(), "resumed, not restarted");
    assert_the_guard_reverted_it_and_restarted_the_agent(&lab, &id, guard);
    assert!(fault_ids(&lab).is_empty());
    assert_eq!(pid_of(&lab, "nats/3"), victim, "the same process runs on");
}

#[test]
fn a_hold_ends_at_its_deadline_with_chaosctl_and_the_agent_killed_and_the_replica_comes_back() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let victim = pid_of(&lab, "gateway/2");
    let (id, guard) = inject_then_kill_the_agent(
        &lab,
        &[
            "inject",
            "stop",
            "--service",
            "gateway",
            "--replica",
            "2",
            "--for",
            "4s",
        ],
    );
    let deadline = recorded_deadline(&lab, &id);
    wait_until(Duration::from_secs(2), "the held replica to die", || {
        has_exited(victim)
    });
    let held = || {
        std::fs::read_to_string(lab.lab_dir().join("held.json"))
            .is_ok_and(|text| text.contains("gateway/2"))
    };
    assert!(held());
    assert_ends_at_its_deadline(deadline, "the hold of gateway/2", held);
    assert_the_guard_reverted_it_and_restarted_the_agent(&lab, &id, guard);
    // The agent the guard started brings the released replica back: a new process.
    wait_until(
        Duration::from_secs(30),
        "gateway/2 to be ready again",
        || replica_status(&lab, "gateway/2")["health"] == "ready",
    );
    assert_ne!(pid_of(&lab, "gateway/2"), victim, "a new process");
    assert!(fault_ids(&lab).is_empty());
}

#[test]
fn a_cordon_ends_at_its_deadline_with_chaosctl_and_the_agent_killed() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let (id, guard) =
        inject_then_kill_the_agent(&lab, &["inject", "drain", "--node", "c2", "--for", "4s"]);
    let deadline = recorded_deadline(&lab, &id);
    let cordoned = || {
        std::fs::read_to_string(lab.lab_dir().join("cordoned.json"))
            .is_ok_and(|text| text.contains("\"c2\""))
    };
    assert!(cordoned());
    assert_ends_at_its_deadline(deadline, "the cordon of c2", cordoned);
    assert_the_guard_reverted_it_and_restarted_the_agent(&lab, &id, guard);
    assert!(fault_ids(&lab).is_empty());
    let status = lab.status();
    let c2 = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "c2")
        .expect("c2");
    assert_eq!(c2["cordoned"], false, "{c2:#}");
}

#[test]
fn a_fault_reverted_by_hand_ends_its_guard_which_changes_nothing() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let victim = pid_of(&lab, "nats/2");
    let id = injected_id(&lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "2",
        "--for",
        "60s",
    ]));
    let guard = guard_of(&lab, &id);
    let status = lab.status();
    assert_eq!(status["guards"][0]["fault"], id.as_str(), "{status:#}");
    assert_eq!(status["guards"][0]["pid"], i64::from(guard), "{status:#}");
    // With the agent dead, a guard that did anything at all would start it again.
    let agent = lab.agent_pid().expect("agent pid");
    sigkill(agent);
    wait_until(Duration::from_secs(5), "the agent to die", || {
        has_exited(agent)
    });
    lab.ok(&["revert", &id]);
    assert_ne!(proc_state(victim), Some('T'));
    wait_until(Duration::from_secs(3), "the guard to exit", || {
        has_exited(guard)
    });
    let events: Vec<serde_json::Value> = audit_of(&lab, &id)
        .into_iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, ["inject", "revert"], "nothing from the guard");
    assert!(
        audit_of(&lab, &id)
            .iter()
            .all(|e| e["pid"] != i64::from(guard)),
        "the guard wrote nothing"
    );
    assert_eq!(lab.agent_pid(), Some(agent), "no agent was started");
    assert!(has_exited(agent));
    assert_eq!(lab.status()["guards"], serde_json::json!([]));

    // `lab down` stops a guard that is still waiting, by its PID.
    let id = injected_id(&lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "2",
        "--for",
        "60s",
    ]));
    let guard = guard_of(&lab, &id);
    let out = lab.ok(&["lab", "down"]);
    assert!(out.contains("1 deadline guards stopped"), "{out}");
    wait_until(Duration::from_secs(3), "the guard to be gone", || {
        has_exited(guard)
    });
}
