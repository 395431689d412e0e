//! Issue 11, part 2, on the real lab: a zone partition injected while both cores are busy. The
//! injection then takes long enough for acknowledgements to arrive before the rules are in,
//! and a window that started at the ledger write reported them as `ack-without-quorum`. The
//! recorded window must start when the injection completed, and no acknowledgement may be
//! judged unless its whole interval lies inside the window in which the partition was
//! certainly in effect.

mod common;
mod workload_common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Operation, Outcome};
use workload_common::{finish, observations, spawn_load, wait_until_loading, Files, History};

/// Busy loops, one per core, stopped by their PIDs when dropped (on failure too).
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self(
            (0..cores)
                .map(|_| {
                    // `:` is a shell builtin: the shell itself spins, no child processes.
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("spawn a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // `Child::kill` signals exactly this PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The recorded zone partition: (injecting, start, reverting, end), ns since the run start.
fn partition_window(files: &Files, cut_node: &str) -> (u64, u64, u64, u64) {
    observations(&files.observations)
        .iter()
        .find_map(|o| match o {
            Observation::Fault {
                kind,
                start_ns,
                end_ns,
                injecting_ns,
                reverting_ns,
                affected,
                ..
            } if kind == "partition" => {
                assert!(affected.iter().any(|n| n == cut_node), "{affected:?}");
                Some((
                    injecting_ns.expect("injection begin recorded"),
                    *start_ns,
                    reverting_ns.expect("heal begin recorded"),
                    end_ns.expect("healed before the run ended"),
                ))
            }
            _ => None,
        })
        .expect("a partition fault observation")
}

#[test]
#[allow(clippy::too_many_lines)] // one lab run, then its checks in order
fn a_zone_partition_under_cpu_stress_is_judged_only_from_when_it_was_in_effect() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let cut_node = (1..=3)
        .map(|r| lab.node_of(&format!("nats/{r}")))
        .find(|n| n.starts_with('c'))
        .expect("a NATS server in zone c");
    let files = Files::new(&lab, "stress-partition");
    // One connection per server: a third of the tenants write through the cut-off server.
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--duration",
            "30s",
            "--rate",
            "150",
            "--tenants",
            "30",
            "--connections",
            "3",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(4));
    let (before_unix_ms, returned_unix_ms) = {
        let _busy = BusyLoops::start();
        std::thread::sleep(Duration::from_secs(2));
        let before = unix_ms_now();
        lab.ok(&["inject", "partition", "--zone", "c", "--for", "10s"]);
        let returned = unix_ms_now();
        // Stressed through the whole partition and its heal.
        std::thread::sleep(Duration::from_secs(12));
        (before, returned)
    };
    finish(child);
    let history = History::read(&files.history);
    let run_ns = |unix_ms: u64| {
        unix_ms
            .saturating_sub(history.header.started_at_unix_ms)
            .saturating_mul(1_000_000)
    };
    let (injecting, start, reverting, end) = partition_window(&files, &cut_node);
    eprintln!(
        "inject called at {:.3} s, began {:.3} s, in effect {:.3} s, returned {:.3} s; heal began {:.3} s, completed by {:.3} s",
        run_ns(before_unix_ms) as f64 / 1e9,
        injecting as f64 / 1e9,
        start as f64 / 1e9,
        run_ns(returned_unix_ms) as f64 / 1e9,
        reverting as f64 / 1e9,
        end as f64 / 1e9
    );
    // The window starts when the injection completed: after it began, no later than `inject`
    // returned (millisecond clocks, so a millisecond of slack).
    let ms = 1_000_000;
    assert!(injecting + ms >= run_ns(before_unix_ms), "{injecting}");
    assert!(injecting <= start, "{injecting} > {start}");
    assert!(start <= run_ns(returned_unix_ms) + ms, "{start}");
    assert!(
        start <= reverting && reverting <= end,
        "{start} {reverting} {end}"
    );
    assert!(reverting >= start + 9_000 * ms, "held about its 10 s");

    // Writes acknowledged through the cut-off server: none inside the effective window.
    let writes: Vec<&Operation> = history
        .load()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .collect();
    let inside: Vec<&&Operation> = writes
        .iter()
        .filter(|o| o.node == cut_node && !o.reconnected)
        .filter(|o| o.invoke_ns >= start && o.complete_ns <= reverting)
        .collect();
    assert!(inside.is_empty(), "{inside:?}");

    // The judge: every ack-without-quorum it reports lies wholly inside the effective window.
    let split = lab.check_verdict(&files.history, &files.observations, "split-brain");
    eprintln!("split-brain: {} {:?}", split["status"], split["notes"]);
    let quorum = split["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .find(|a| a["name"] == "ack-without-quorum")
        .cloned();
    let samples = quorum
        .as_ref()
        .and_then(|a| a["evidence"].as_array().cloned())
        .unwrap_or_default();
    for sample in &samples {
        let value = sample["value"].as_str().expect("evidence names the value");
        let op = writes
            .iter()
            .find(|o| o.value.as_deref() == Some(value))
            .unwrap_or_else(|| panic!("{value} is no acknowledged write"));
        assert!(
            op.invoke_ns >= start && op.complete_ns <= reverting,
            "ack-without-quorum rests on {op:?}, outside the effective window {start}..{reverting}"
        );
    }
    let count = quorum
        .as_ref()
        .and_then(|a| a["count"].as_u64())
        .unwrap_or(0);
    assert_eq!(count, 0, "{split:#}");
}
