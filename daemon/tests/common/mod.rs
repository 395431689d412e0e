//! Shared harness for the lab integration tests: real namespaces, real nats-server processes,
//! the real `chaosctl` and `faultlined` binaries. Each test gets its own lab name and state root,
//! and a guard that runs `chaosctl lab down` when it drops, on failure too.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const NETNS_DIR: &str = "/run/netns";

/// Whether this process can run lab tests (root, and a nats-server installed).
pub fn can_run_lab() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: lab tests need root");
        return false;
    }
    nats_server_under_test();
    true
}

/// The nats-server this test process's labs run, as `chaosctl lab up` chooses it
/// (`FAULTLINE_NATS_SERVER`, else the pinned current release, else PATH): its path and the
/// first line of its `--version`. Said once per test binary on stderr past the test harness's
/// capture, so every run of the lab tests shows which NATS ran. Run them against another with
/// e.g. `FAULTLINE_NATS_SERVER=/usr/sbin/nats-server cargo test -p faultline-daemon --test
/// scenarios`.
pub fn nats_server_under_test() -> &'static (String, String) {
    static CHOSEN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        use std::io::Write as _;
        let resolved = faultline_experiments::lab::servers::resolve_here(
            &faultline_experiments::lab::topology::Topology::default_lab(),
            "<built-in default>",
            std::env::var_os("FAULTLINE_NATS_SERVER").map(PathBuf::from),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let program = resolved
            .topology
            .service("nats")
            .expect("the default topology runs nats")
            .command[0]
            .clone();
        let version = version_of(&program);
        // Straight to the file descriptor: the harness captures only the print macros.
        let _ = writeln!(std::io::stderr(), "lab tests run {version} ({program})");
        (program, version)
    })
}

/// The first line `program --version` prints.
pub fn version_of(program: &str) -> String {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{program} --version: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A lab name unique to this test process and call.
pub fn unique_lab_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t{}x{n}", std::process::id() % 100_000)
}

/// One lab for one test.
pub struct TestLab {
    pub name: String,
    pub state_root: tempfile::TempDir,
}

impl TestLab {
    /// A lab that is not up yet.
    pub fn new() -> Self {
        Self {
            name: unique_lab_name(),
            state_root: tempfile::Builder::new()
                .prefix("faultline-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Brings it up with the default topology, asserting success.
    pub fn up() -> Self {
        let lab = Self::new();
        lab.ok(&["lab", "up"]);
        lab
    }

    pub fn state_root(&self) -> &Path {
        self.state_root.path()
    }

    pub fn lab_dir(&self) -> PathBuf {
        self.state_root().join("labs").join(&self.name)
    }

    /// `chaosctl ARGS` against this lab (name and state root passed through the environment).
    pub fn chaosctl(&self, args: &[&str]) -> Output {
        chaosctl_command(self.state_root(), &self.name)
            .args(args)
            .output()
            .expect("run chaosctl")
    }

    /// Like [`TestLab::chaosctl`], asserting exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.chaosctl(args);
        assert!(
            output.status.success(),
            "chaosctl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Like [`TestLab::chaosctl`], asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.chaosctl(args);
        assert!(
            !output.status.success(),
            "chaosctl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// One verdict (e.g. `split-brain`) of `chaosctl check --output json` on a history and its
    /// observations.
    pub fn check_verdict(
        &self,
        history: &Path,
        observations: &Path,
        verdict: &str,
    ) -> serde_json::Value {
        let output = self.chaosctl(&[
            "check",
            "--history",
            &history.display().to_string(),
            "--observations",
            &observations.display().to_string(),
            "--output",
            "json",
        ]);
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "check report: {e}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        report["verdicts"]
            .as_array()
            .expect("verdicts")
            .iter()
            .find(|v| v["name"] == verdict)
            .unwrap_or_else(|| panic!("no {verdict} verdict in {report}"))
            .clone()
    }

    /// `lab status --output json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["lab", "status", "--output", "json"])).expect("status json")
    }

    pub fn netns(&self, node: &str) -> String {
        format!("fl-{}-{node}", self.name)
    }

    /// Every namespace of this lab that exists now.
    pub fn namespaces(&self) -> Vec<String> {
        let prefix = format!("fl-{}-", self.name);
        let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Faultline's partition rules in every namespace of this lab, as the kernel holds them
    /// now: unexpired elements of our nf_tables sets (and any policy rule in our priority
    /// range), each shown as `<netns>: to <prefix> priority <p>`. Expired elements are not
    /// shown: the kernel no longer matches them.
    pub fn our_rules(&self) -> Vec<String> {
        let table = faultline_injectors::net_partition::NetlinkRuleTable::new(NETNS_DIR);
        let mut rules = Vec::new();
        for netns in self.namespaces() {
            for rule in faultline_injectors::net_partition::RuleTable::list_ours(&table, &netns)
                .expect("list our rules")
            {
                rules.push(format!(
                    "{netns}: to {}/{} priority {}",
                    rule.destination, rule.prefix_len, rule.priority
                ));
            }
        }
        rules
    }

    /// The agent's PID from its pid file.
    pub fn agent_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.lab_dir().join("agent.pid")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["pid"].as_i64().map(|p| p as i32)
    }

    /// The node a replica runs on, from `lab status`.
    pub fn node_of(&self, replica: &str) -> String {
        let status = self.status();
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["replica"] == replica)
            .and_then(|s| s["node"].as_str())
            .unwrap_or_else(|| panic!("replica {replica} not in status"))
            .to_owned()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let output = chaosctl_command(self.state_root(), &self.name)
            .args(["lab", "down"])
            .output();
        if let Ok(output) = output {
            if !output.status.success() {
                eprintln!(
                    "lab down for {} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// The catalog spec `name`, shortened for tests (an 8 s baseline), with `edits` applied to its
/// YAML, written into the lab's state root.
pub fn spec_file(lab: &TestLab, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut yaml = lab.ok(&["show", name]);
    yaml = yaml.replace("baseline: 15s", "baseline: 8s");
    for (from, to) in edits {
        assert!(yaml.contains(from), "{name} has no `{from}`:\n{yaml}");
        yaml = yaml.replace(from, to);
    }
    let path = lab.state_root().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write spec");
    path
}

pub fn chaosctl_command(state_root: &Path, lab: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chaosctl"));
    command
        .env("FAULTLINE_STATE_ROOT", state_root)
        .env("FAULTLINE_LAB", lab)
        .env("FAULTLINE_AGENT", env!("CARGO_BIN_EXE_faultlined"));
    command
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a TCP connection from `from_netns` to `addr` succeeds within 1 s.
pub fn tcp_reachable(from_netns: &str, addr: &str) -> bool {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    matches!(
        faultline_injectors::netns::connect_tcp_in_netns(
            Path::new(NETNS_DIR),
            from_netns,
            addr,
            Duration::from_secs(1)
        ),
        Ok(Ok(_))
    )
}

/// Runs an async closure on a current-thread runtime inside `netns` (the lab's client
/// namespace, usually), so its sockets live in that namespace.
pub fn in_netns_async<T, F, Fut>(netns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    faultline_injectors::netns::run_in_netns(Path::new(NETNS_DIR), netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .expect("enter namespace")
}
