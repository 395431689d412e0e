//! The audit log on a real lab (issue 13, part 7): every injection, revert, expiry, halt and
//! resume is a line of `<state root>/audit.jsonl`, whichever process did it (chaosctl, or the
//! lab agent's reconcile for an expiry), and `chaosctl audit [--since D]` prints it.

mod common;

use std::time::Duration;

use common::{can_run_lab, wait_until, TestLab};
use serde_json::Value;

fn entries(lab: &TestLab, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "--output", "json"];
    args.extend_from_slice(extra);
    lab.ok(&args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON entry per line"))
        .collect()
}

#[test]
fn every_injection_revert_expiry_halt_and_resume_is_audited() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    // An entry from long ago, as an older log would hold: `--since` leaves it out.
    let path = lab.state_root().join("audit.jsonl");
    let old = r#"{"time":"2020-01-01T00:00:00.000Z","unix_ms":1577836800000,"uid":0,"pid":1,"command":"chaosctl inject kill","lab":"old","event":"inject","outcome":"ok"}"#;
    std::fs::write(&path, format!("{old}\n")).expect("seed the log");

    let partition = lab.ok(&["inject", "partition", "--zone", "a", "--for", "2s"]);
    let partition_id = fault_id(&partition);
    // Expired by the lab agent's reconcile, with no chaosctl running.
    wait_until(
        Duration::from_secs(15),
        "the agent to expire the partition",
        || {
            std::fs::read_to_string(&path).is_ok_and(|log| {
                log.contains("\"event\":\"expire\"") && log.contains(&partition_id)
            })
        },
    );
    let pause = lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "1",
        "--for",
        "60s",
    ]);
    let pause_id = fault_id(&pause);
    lab.ok(&["revert", &pause_id]);
    assert_revert_knows_ended_from_unknown(&lab, &pause_id);
    lab.ok(&["inject", "partition", "--zone", "b", "--for", "60s"]);
    lab.ok(&["halt"]);
    lab.ok(&["resume"]);

    let all = entries(&lab, &[]);
    assert_eq!(all[0]["lab"], "old", "{all:#?}");
    let recent = entries(&lab, &["--since", "1h"]);
    assert_eq!(
        recent.len(),
        all.len() - 1,
        "--since 1h leaves the old entry out"
    );
    let seen: Vec<String> = recent
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["event"].as_str().unwrap_or("?"),
                e["kind"].as_str().unwrap_or("-"),
                e["outcome"].as_str().unwrap_or("?")
            )
        })
        .collect();
    for expected in [
        "inject partition ok",
        "expire partition ok",
        "inject pause ok",
        "revert pause ok",
        "halt - ok",
        "revert partition ok (halt)",
        "resume - ok",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "`{expected}` in {seen:#?}"
        );
    }
    let injected = recent
        .iter()
        .find(|e| e["fault"] == partition_id.as_str() && e["event"] == "inject")
        .expect("the partition's injection");
    assert_eq!(injected["uid"], 0, "{injected}");
    assert_eq!(injected["lab"], lab.name.as_str(), "{injected}");
    assert!(
        injected["command"]
            .as_str()
            .is_some_and(|c| c.contains("inject partition --zone a --for 2s")),
        "{injected}"
    );
    assert_eq!(injected["target"], "zone a vs rest", "{injected}");
    assert!(
        injected["deadline_unix_ms"].as_u64().unwrap_or(0)
            > injected["unix_ms"].as_u64().unwrap_or(u64::MAX),
        "{injected}"
    );
    let expired = recent
        .iter()
        .find(|e| e["fault"] == partition_id.as_str() && e["event"] == "expire")
        .expect("the expiry");
    assert!(
        expired["command"]
            .as_str()
            .is_some_and(|c| c.contains("faultlined")),
        "the agent expired it: {expired}"
    );
    let text = lab.ok(&["audit", "--since", "1h"]);
    assert!(
        text.starts_with("TIME") && text.contains(&partition_id) && !text.contains(" old "),
        "{text}"
    );
}

/// The fault id from `inject`'s output (`fault <id>: ...`).
fn fault_id(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix("fault "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no fault id in {output}"))
        .to_owned()
}

/// Reverting an ended fault again says it already ended, as the log says; an id never seen is
/// an error (exit 2).
fn assert_revert_knows_ended_from_unknown(lab: &TestLab, pause_id: &str) {
    let again = lab.ok(&["revert", pause_id]);
    assert!(
        again.contains(&format!(
            "{pause_id} already ended in lab {}: revert ok",
            lab.name
        )),
        "{again}"
    );
    let output = lab.chaosctl(&["revert", "f-never-was"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no fault `f-never-was`") && stderr.contains("no fault is active"),
        "{stderr}"
    );
}
