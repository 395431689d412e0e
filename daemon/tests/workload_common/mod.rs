//! Helpers for the workload acceptance tests: running `chaosctl load`, reading what it wrote.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use faultline_experiments::history::{
    HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, HISTORY_FORMAT,
};

use crate::common::{chaosctl_command, TestLab};

/// node → its view.
pub type ReadBackViews = BTreeMap<String, TenantViews>;

/// tenant → its read-back items through one node (`None` when the read failed).
pub type TenantViews = BTreeMap<String, Option<Vec<(u64, String)>>>;

/// A history file, parsed.
pub struct History {
    pub header: HistoryHeader,
    pub ops: Vec<Operation>,
}

impl History {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read history");
        let mut lines = text.lines();
        let header: HistoryHeader =
            serde_json::from_str(lines.next().expect("header line")).expect("header");
        assert_eq!(header.format, HISTORY_FORMAT);
        let ops = lines
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect();
        Self { header, ops }
    }

    /// Operations of the load (not the read-back).
    pub fn load(&self) -> impl Iterator<Item = &Operation> {
        self.ops.iter().filter(|o| !o.pattern.is_read_back())
    }

    /// Values of `ok` writes.
    pub fn acked(&self) -> BTreeSet<String> {
        self.load()
            .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
            .filter_map(|o| o.value.clone())
            .collect()
    }

    /// node → tenant → what the read-back through that node returned (`None` when it failed).
    pub fn read_back(&self) -> ReadBackViews {
        let mut out = ReadBackViews::new();
        for o in self.ops.iter().filter(|o| o.pattern == Pattern::ReadBack) {
            let items = (o.outcome == Outcome::Ok).then(|| {
                o.read
                    .as_ref()
                    .expect("ok read has items")
                    .iter()
                    .map(|i| (i.seq, i.value.clone()))
                    .collect()
            });
            out.entry(o.node.clone())
                .or_default()
                .insert(o.tenant.clone(), items);
        }
        out
    }

    /// Load operations per whole second of intended time.
    pub fn per_second(&self) -> BTreeMap<u64, Vec<&Operation>> {
        let mut out: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
        for o in self.load() {
            out.entry(o.invoke_ns / 1_000_000_000).or_default().push(o);
        }
        out
    }
}

pub fn observations(path: &Path) -> Vec<Observation> {
    std::fs::read_to_string(path)
        .expect("read observations")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad observation {l}: {e}")))
        .collect()
}

/// Paths of one run's files in the lab's temporary state root.
pub struct Files {
    pub history: PathBuf,
    pub observations: PathBuf,
}

impl Files {
    pub fn new(lab: &TestLab, name: &str) -> Self {
        Self {
            history: lab.state_root().join(format!("{name}.jsonl")),
            observations: lab.state_root().join(format!("{name}.observations.jsonl")),
        }
    }
}

/// `chaosctl load --output json --quiet --history … ARGS`.
pub fn load_args(files: &Files, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = vec![
        "load".into(),
        "--output".into(),
        "json".into(),
        "--history".into(),
        files.history.display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all
}

/// Starts `chaosctl load` in the background.
pub fn spawn_load(lab: &TestLab, files: &Files, args: &[&str]) -> Child {
    chaosctl_command(lab.state_root(), &lab.name)
        .args(load_args(files, args))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chaosctl load")
}

/// Waits until the history holds at least one operation, i.e. the load has started.
pub fn wait_until_loading(files: &Files, timeout: Duration) {
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&files.history).map_or(0, |t| t.lines().count());
        if lines >= 2 {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "the load did not start within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the load to end; its JSON report.
pub fn finish(child: Child) -> serde_json::Value {
    let output = child.wait_with_output().expect("wait for chaosctl load");
    report(&output)
}

pub fn report(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chaosctl load failed ({}):\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON report on stdout")
}

/// The history and the summary agree: every operation the summary counted is in the file, per
/// tier and kind.
pub fn assert_summary_matches(
    history: &History,
    report: &serde_json::Value,
    tier_of: impl Fn(&str) -> String,
) {
    let summary = &report["summary"];
    let load: Vec<&Operation> = history.load().collect();
    let read_back = history.ops.len() - load.len();
    assert_eq!(summary["ops"].as_u64(), Some(load.len() as u64), "load ops");
    assert_eq!(
        summary["read_back_ops"].as_u64(),
        Some(read_back as u64),
        "read-back ops"
    );
    assert_eq!(
        summary["history_lines"].as_u64(),
        Some(history.ops.len() as u64 + 1),
        "history lines"
    );
    let count = |o: Outcome| load.iter().filter(|op| op.outcome == o).count() as u64;
    assert_eq!(summary["ok"].as_u64(), Some(count(Outcome::Ok)));
    assert_eq!(summary["fail"].as_u64(), Some(count(Outcome::Fail)));
    assert_eq!(summary["info"].as_u64(), Some(count(Outcome::Info)));
    let mut by_row: BTreeMap<(String, String), u64> = BTreeMap::new();
    for o in &load {
        let kind = match o.kind {
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::Deliver => "deliver",
            OpKind::Connect => "connect",
        };
        *by_row
            .entry((tier_of(&o.tenant), kind.to_owned()))
            .or_default() += 1;
    }
    for row in summary["rows"].as_array().expect("rows") {
        let key = (
            row["tier"].as_str().expect("tier").to_owned(),
            row["kind"].as_str().expect("kind").to_owned(),
        );
        if key.0 == "all" || key.1 == "read_back" {
            continue;
        }
        assert_eq!(by_row.remove(&key), row["ops"].as_u64(), "row {key:?}");
    }
    assert!(
        by_row.is_empty(),
        "rows missing from the summary: {by_row:?}"
    );
}

/// The default tiers for 100 tenants: t001–t070 small, t071–t095 medium, t096–t100 large.
pub fn tier_of_100(tenant: &str) -> String {
    let n: u32 = tenant
        .trim_start_matches('t')
        .parse()
        .expect("tenant number");
    match n {
        1..=70 => "small",
        71..=95 => "medium",
        _ => "large",
    }
    .to_owned()
}

/// Every `ok` write is in every node's read-back, and the nodes' views are identical.
pub fn assert_read_back_complete(history: &History, nodes: usize) {
    let read_back = history.read_back();
    assert_eq!(
        read_back.len(),
        nodes,
        "read-back nodes: {:?}",
        read_back.keys()
    );
    let acked = history.acked();
    let mut views: Option<&TenantViews> = None;
    for (node, tenants) in &read_back {
        let mut seen = BTreeSet::new();
        for (tenant, items) in tenants {
            let items = items
                .as_ref()
                .unwrap_or_else(|| panic!("read-back of {tenant} through {node} failed"));
            seen.extend(items.iter().map(|(_, v)| v.clone()));
        }
        let lost: Vec<&String> = acked.difference(&seen).take(10).collect();
        assert!(
            lost.is_empty(),
            "acknowledged writes missing from {node}'s read-back: {lost:?}"
        );
        if let Some(first) = views {
            assert_eq!(first, tenants, "{node}'s view differs");
        }
        views = Some(tenants);
    }
}
