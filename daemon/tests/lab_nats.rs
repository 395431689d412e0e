//! JetStream quorum loss through a real partition of a real nats-server cluster.

mod common;

use std::time::Duration;

use common::{can_run_lab, in_netns_async, TestLab};

const SERVERS: [&str; 3] = [
    "nats://10.203.1.11:4222",
    "nats://10.203.2.11:4222",
    "nats://10.203.3.11:4222",
];

fn addrs(urls: &[&str]) -> Vec<async_nats::ServerAddr> {
    urls.iter()
        .map(|u| u.parse().expect("server url"))
        .collect()
}

/// Publishes once to the R3 stream through `url`; `Ok(seq)` when acknowledged.
async fn publish_once(urls: &[&str], payload: &str) -> Result<u64, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(addrs(urls))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    let ack = js
        .publish("quorum.test", payload.to_owned().into())
        .await
        .map_err(|e| format!("publish: {e}"))?
        .await
        .map_err(|e| format!("ack: {e}"))?;
    Ok(ack.sequence)
}

fn create_r3_stream(client_ns: &str) {
    in_netns_async(client_ns, || async {
        let client = async_nats::connect(addrs(&SERVERS)).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "QUORUM".into(),
            subjects: vec!["quorum.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("create R3 stream");
    });
}

/// Publishes until one is acknowledged, for at most `attempts` tries 200 ms apart.
fn publish_eventually(client_ns: &str, attempts: u32) -> Option<u64> {
    in_netns_async(client_ns, move || async move {
        for _ in 0..attempts {
            if let Ok(seq) = publish_once(&SERVERS, "eventually").await {
                return Some(seq);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    })
}

#[test]
fn quorum_loss_fault_stops_a_majority_of_the_stream_peers_leader_first() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let client_ns = lab.netns("client");
    create_r3_stream(&client_ns);
    let before = publish_eventually(&client_ns, 50).expect("publishing works before the fault");

    let out = lab.ok(&[
        "inject",
        "quorum-loss",
        "--stream",
        "QUORUM",
        "--mode",
        "stop",
        "--for",
        "60s",
    ]);
    let header = out.lines().next().expect("summary line");
    let leader = header
        .split("(leader ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("leader");
    let chosen = header.split("of ").last().expect("chosen");
    assert!(
        chosen.starts_with(leader),
        "the leader goes first: {header}"
    );
    assert_eq!(
        chosen.matches("nats/").count(),
        2,
        "a majority of 3 is 2: {header}"
    );
    let ids: Vec<String> = out
        .split_whitespace()
        .filter(|w| w.starts_with('f') && w.ends_with(':') && w.len() > 10)
        .map(|w| w.trim_end_matches(':').to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{out}");

    std::thread::sleep(Duration::from_secs(2));
    let held = lab.status()["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter(|s| s["health"] == "held")
        .count();
    assert_eq!(held, 2, "both chosen servers stay down");
    let during: Vec<Result<u64, String>> = in_netns_async(&client_ns, || async {
        let mut results = Vec::new();
        for i in 0..3 {
            results.push(publish_once(&SERVERS, &format!("during-{i}")).await);
        }
        results
    });
    assert!(
        during.iter().all(Result::is_err),
        "no publish may succeed without quorum: {during:?}"
    );

    for id in &ids {
        lab.ok(&["revert", id]);
    }
    let after = publish_eventually(&client_ns, 150).expect("publishing works again after heal");
    assert!(after > before);
}

#[test]
fn isolating_two_of_three_nats_servers_loses_quorum_until_heal() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let client_ns = lab.netns("client");
    create_r3_stream(&client_ns);
    let before = publish_eventually(&client_ns, 50).expect("publishing works before the fault");

    let isolated = [lab.node_of("nats/1"), lab.node_of("nats/2")].join(",");
    let out = lab.ok(&[
        "inject",
        "partition",
        "--isolate",
        &isolated,
        "--for",
        "60s",
    ]);
    let fault_id = out
        .split_whitespace()
        .skip_while(|w| *w != "fault")
        .nth(1)
        .expect("id")
        .trim_end_matches(':')
        .to_owned();

    // Every publish through the remaining server fails while the partition holds.
    let during: Vec<Result<u64, String>> = in_netns_async(&client_ns, || async {
        let mut results = Vec::new();
        for i in 0..4 {
            results.push(publish_once(&["nats://10.203.3.11:4222"], &format!("during-{i}")).await);
        }
        results
    });
    assert!(
        during.iter().all(Result::is_err),
        "no publish may succeed without quorum: {during:?}"
    );

    lab.ok(&["revert", &fault_id]);
    let after = publish_eventually(&client_ns, 150).expect("publishing works again after heal");
    assert!(after > before);
}
