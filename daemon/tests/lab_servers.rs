//! Which servers a lab runs: chosen explicitly (`lab up --nats-server`, a topology, the spec's
//! `topology:`, `run --topology`), recorded with their versions in `lab status`, and a lab up
//! with other binaries refused naming both. Also the revert hint of `inject`, run as printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{can_run_lab, spec_file, version_of, TestLab};
use serde_json::Value;

/// Debian's package: the documented known-buggy release.
const DEBIAN_NATS_SERVER: &str = "/usr/sbin/nats-server";

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn server<'a>(status: &'a Value, service: &str) -> &'a Value {
    status["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == service))
        .unwrap_or_else(|| panic!("no {service} in {}", status["servers"]))
}

/// The default topology with its nats-server replaced by `program`, written next to `dir`.
fn topology_running(dir: &Path, program: &Path) -> PathBuf {
    let yaml = faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML.replace(
        "      - nats-server\n",
        &format!("      - {}\n", program.display()),
    );
    let path = dir.join("other-topology.yaml");
    std::fs::write(&path, yaml).expect("write topology");
    path
}

#[test]
fn a_lab_records_its_servers_and_refuses_another_binary_naming_both() {
    if !can_run_lab() {
        return;
    }
    assert!(
        Path::new(DEBIAN_NATS_SERVER).exists(),
        "{DEBIAN_NATS_SERVER} is missing: run scripts/setup.sh"
    );
    let debian_version = version_of(DEBIAN_NATS_SERVER);
    let lab = TestLab::new();
    let up = lab.chaosctl(&["lab", "up", "--nats-server", DEBIAN_NATS_SERVER]);
    assert!(up.status.success(), "{}", stderr_of(&up));
    if debian_version.starts_with("nats-server: v2.9.") {
        assert!(
            stderr_of(&up).contains("known JetStream replication bugs"),
            "lab up warns about 2.9.x: {}",
            stderr_of(&up)
        );
    }

    // Status names every service's program and version, in JSON and text.
    let status = lab.status();
    assert_eq!(status["topology"], "<built-in default>");
    let nats = server(&status, "nats");
    assert_eq!(nats["program"], DEBIAN_NATS_SERVER);
    assert_eq!(nats["version"], debian_version.as_str());
    let gateway = server(&status, "gateway");
    assert_eq!(
        gateway["version"],
        format!("tenant-gateway {}", env!("CARGO_PKG_VERSION")).as_str()
    );
    let text = lab.ok(&["lab", "status"]);
    assert!(
        text.lines().any(|l| l.starts_with("nats ")
            && l.contains(&debian_version)
            && l.ends_with(DEBIAN_NATS_SERVER)),
        "{text}"
    );

    // Another binary, by flag, by a topology file, and by a spec's `topology:`: each refused,
    // naming the binary that runs (with its version) and the one asked for.
    let other = lab.state_root().join("bin");
    std::fs::create_dir_all(&other).expect("mkdir");
    let other = other.join("nats-server");
    std::os::unix::fs::symlink(DEBIAN_NATS_SERVER, &other).expect("symlink");
    let there = format!("runs {DEBIAN_NATS_SERVER} ({debian_version}) there");
    let asked = format!("this asks for {}", other.display());
    let refused = lab.fails(&["lab", "up", "--nats-server", other.to_str().expect("utf8")]);
    assert!(
        refused.contains(&there) && refused.contains(&asked),
        "{refused}"
    );
    let topology = topology_running(lab.state_root(), &other);
    let spec = lab.state_root().join("pod-failure.yaml");
    std::fs::write(
        &spec,
        format!(
            "{}topology: {}\n",
            lab.ok(&["show", "pod-failure"]),
            topology.file_name().and_then(|n| n.to_str()).expect("name")
        ),
    )
    .expect("write spec");
    for args in [
        // Only a server named: the lab's NATS binary alone is compared.
        vec![
            "run",
            "pod-failure",
            "--nats-server",
            other.to_str().expect("utf8"),
        ],
        vec![
            "run",
            "pod-failure",
            "--topology",
            topology.to_str().expect("utf8"),
        ],
        // Relative to the spec file, not to the working directory.
        vec!["run", spec.to_str().expect("utf8")],
    ] {
        let output = chaosctl_in(Path::new("/"), &lab, &args);
        let refused = stderr_of(&output);
        assert!(!output.status.success(), "{args:?} ran");
        let source_asked = if args.contains(&"--nats-server") {
            format!("--nats-server {} asked", other.display())
        } else {
            "other-topology.yaml asked".to_owned()
        };
        assert!(
            refused.contains(&there) && refused.contains(&asked) && refused.contains(&source_asked),
            "{args:?}: {refused}"
        );
    }
    let faults: Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults json");
    assert_eq!(
        faults,
        Value::Array(vec![]),
        "a refused run injects nothing"
    );
    assert_eq!(server(&lab.status(), "nats")["program"], DEBIAN_NATS_SERVER);
}

/// `chaosctl ARGS` run from `cwd` against `lab`.
fn chaosctl_in(cwd: &Path, lab: &TestLab, args: &[&str]) -> std::process::Output {
    common::chaosctl_command(lab.state_root(), &lab.name)
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run chaosctl")
}

#[test]
fn the_revert_hint_of_inject_is_a_command_that_works_as_printed() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let out = lab.ok(&[
        "inject",
        "pause",
        "--service",
        "gateway",
        "--replica",
        "1",
        "--for",
        "60s",
    ]);
    let hint = out
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no hint in {out}"));
    let words: Vec<&str> = hint.split_whitespace().collect();
    assert_eq!(words[..2], ["chaosctl", "revert"], "{hint}");
    assert!(hint.contains(&format!("--lab {}", lab.name)), "{hint}");
    // From a fresh shell: no FAULTLINE_LAB or FAULTLINE_STATE_ROOT to fall back on.
    let output = Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .args(&words[1..])
        .env_remove("FAULTLINE_LAB")
        .env_remove("FAULTLINE_STATE_ROOT")
        .env("FAULTLINE_AGENT", env!("CARGO_BIN_EXE_faultlined"))
        .output()
        .expect("run the hint");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("reverted "),
        "{hint}: {stdout}{}",
        stderr_of(&output)
    );
    assert_eq!(
        lab.ok(&["faults", "--output", "json"]).trim(),
        "[]",
        "the hint reverted the fault"
    );
}

#[test]
fn a_lab_without_nats_shows_how_to_reach_its_own_service_not_nats() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let topology = lab.state_root().join("web-only.yaml");
    std::fs::write(
        &topology,
        "zones:\n  - {name: a, nodes: [a1]}\nservices:\n  - name: web\n    command: [/usr/bin/python3, -m, http.server, '8000', --bind, '{node_ip}']\n    ready: {http: {port: 8000, path: /}}\n    ports: {http: 8000}\n",
    )
    .expect("write topology");
    let stdout = lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf8")]);
    assert!(
        !stdout.contains("/jsz"),
        "no NATS hint on a lab without NATS:\n{stdout}"
    );
    assert!(!stdout.contains(":8222"), "{stdout}");
    let address = lab.status()["nodes"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert!(
        stdout.contains(&format!("curl -s http://{address}:8000/")),
        "the hint reaches the lab's own service:\n{stdout}"
    );
    lab.ok(&["lab", "down"]);
}

/// `lab up --timeout 120s` on `topology_yaml`, which must fail: its stderr and how long it took.
/// The test's own bound on that time is 30 s, a quarter of the timeout: long enough for a slow
/// machine to build and remove a lab, far short of waiting the timeout out.
fn up_fails_fast(lab: &TestLab, file: &str, topology_yaml: &str) -> String {
    let topology = lab.state_root().join(file);
    std::fs::write(&topology, topology_yaml).expect("write topology");
    let started = std::time::Instant::now();
    let output = lab.chaosctl(&[
        "lab",
        "up",
        "--timeout",
        "120s",
        "--topology",
        topology.to_str().expect("utf8"),
    ]);
    let took = started.elapsed();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "lab up took {took:?} of its 120 s timeout to report a service that cannot run: {stderr}"
    );
    stderr
}

/// Nothing of the lab is left: no namespace, no state directory, no process of ours (the agent
/// and every service name the test's unique state root on their command lines, or run inside
/// the lab's namespaces, which are gone).
fn assert_lab_gone(lab: &TestLab) {
    assert_eq!(
        lab.namespaces(),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(
        !lab.lab_dir().exists(),
        "state left behind: {}",
        lab.lab_dir().display()
    );
    let root = lab.state_root().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&root).then_some(cmdline)
        })
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn a_service_whose_program_is_missing_fails_lab_up_at_once_and_leaves_nothing() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let stderr = up_fails_fast(
        &lab,
        "missing-program.yaml",
        "zones:\n  - {name: a, nodes: [a1]}\nservices:\n  - name: web\n    command: [/nonexistent/faultline-web, '{node_ip}']\n    ready: {http: {port: 8000, path: /}}\n    ports: {http: 8000}\n",
    );
    assert!(
        stderr.contains(
            "cannot start web/1: `/nonexistent/faultline-web`: No such file or directory"
        ) && stderr.contains("check the service's command in the topology"),
        "{stderr}"
    );
    assert!(!stderr.contains("not ready after"), "{stderr}");
    assert_lab_gone(&lab);
}

#[test]
fn a_service_that_exits_at_once_fails_lab_up_with_the_end_of_its_log_and_leaves_nothing() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    // Restarted by the default policy (`always`): a crash loop, reported after three exits.
    let stderr = up_fails_fast(
        &lab,
        "crashing.yaml",
        "zones:\n  - {name: a, nodes: [a1]}\nservices:\n  - name: web\n    command: [/bin/sh, -c, 'echo starting web; echo \"web: unknown flag --bogus\" >&2; exit 3']\n    ready: {http: {port: 8000, path: /}}\n",
    );
    assert!(
        stderr.contains(
            "web/1 (`/bin/sh`) exited with 3 before it was ready, 3 times in a row; its log ends:"
        ) && stderr.contains("web: unknown flag --bogus")
            && stderr.contains("check the service's command in the topology"),
        "{stderr}"
    );
    assert_lab_gone(&lab);

    // Left down by its policy: reported after the first exit.
    let lab = TestLab::new();
    let stderr = up_fails_fast(
        &lab,
        "once.yaml",
        "zones:\n  - {name: a, nodes: [a1]}\nservices:\n  - name: once\n    restart: never\n    command: [/bin/false]\n    ready: {tcp: 9000}\n",
    );
    assert!(
        stderr.contains(
            "once/1 (`/bin/false`) exited with 1 before it was ready, and its restart policy leaves it down; it printed nothing;"
        ),
        "{stderr}"
    );
    assert_lab_gone(&lab);
}

#[test]
fn a_run_on_a_lab_that_is_not_up_brings_up_the_topology_its_spec_names() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    // The built-in topology plus a service of our own, so the lab shows whose topology it runs.
    let topology = lab.state_root().join("mine.yaml");
    std::fs::write(
        &topology,
        format!(
            "{}  - name: marker\n    command: [/bin/sleep, \"100000\"]\n",
            faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML
        ),
    )
    .expect("write topology");
    let spec = spec_file(&lab, "pod-failure", &[]);
    let yaml = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, format!("{yaml}topology: mine.yaml\n")).expect("write spec");
    let results = lab.state_root().join("runs");
    // From another directory: `topology:` is relative to the spec file.
    let output = chaosctl_in(
        Path::new("/"),
        &lab,
        &[
            "run",
            spec.to_str().expect("utf8"),
            "--duration",
            "6s",
            "--tenants",
            "5",
            "--rate",
            "30",
            "--output-dir",
            results.to_str().expect("utf8"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        [Some(0), Some(1)].contains(&output.status.code()) && stdout.contains("results: "),
        "the run was not judged:\n{stdout}\n{}",
        stderr_of(&output)
    );
    let status = lab.status();
    assert!(
        status["topology"]
            .as_str()
            .is_some_and(|t| t.ends_with("/mine.yaml")),
        "the lab runs the spec's topology: {}",
        status["topology"]
    );
    assert!(
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["replica"] == "marker/1"),
        "{status}"
    );
}
