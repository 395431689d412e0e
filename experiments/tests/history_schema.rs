//! The history format's JSON Schema (`schemas/history.schema.json`) matches what the recorder
//! writes, version 2 fields included, and is strict enough to refuse a wrong line.

use std::path::PathBuf;

use faultline_experiments::history::{
    ClientSettings, HistoryHeader, OpKind, Operation, Outcome, Pattern, ReadItem, HISTORY_FORMAT,
    HISTORY_FORMAT_VERSION,
};

fn validator() -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/history.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema file"))
            .expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn write(reconnected: bool) -> Operation {
    Operation {
        tenant: "t001".into(),
        process: "t001/c1".into(),
        node: "a1".into(),
        reconnected,
        sent_node: reconnected.then(|| "c1".into()),
        client_zone: None,
        kind: OpKind::Write,
        pattern: Pattern::Chat,
        value: Some("t001/c1/1".into()),
        attempt: 1,
        stream: "FL_t001".into(),
        seq: Some(3),
        invoke_ns: 1,
        complete_ns: 2,
        invoke_unix_ms: 3,
        complete_unix_ms: 4,
        outcome: Outcome::Ok,
        error: None,
        read: None,
        served_tenant: None,
    }
}

#[test]
fn recorded_lines_match_the_schema_and_wrong_ones_do_not() {
    let v = validator();
    let header = HistoryHeader {
        format: HISTORY_FORMAT.into(),
        version: HISTORY_FORMAT_VERSION,
        run_id: "r".into(),
        started_at_unix_ms: 5,
        adapter: "nats".into(),
        client: Some(ClientSettings {
            ping_interval_ms: Some(2000),
            max_pings_out: Some(2),
            connect_timeout_ms: 3000,
            request_timeout_ms: 2000,
            reconnect_delay_max_ms: Some(1000),
            retries: None,
        }),
    };
    let mut read = write(false);
    read.kind = OpKind::Read;
    read.value = None;
    read.read = Some(vec![ReadItem {
        seq: 1,
        value: "t001/c1/1".into(),
    }]);
    read.served_tenant = Some("t001".into());
    // Version 3: a chat socket opened (no value).
    let mut connect = write(false);
    connect.kind = OpKind::Connect;
    connect.value = None;
    let mut initial = read.clone();
    initial.pattern = Pattern::InitialState;
    let lines = [
        serde_json::to_value(&header).unwrap(),
        serde_json::to_value(write(false)).unwrap(),
        serde_json::to_value(write(true)).unwrap(),
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&connect).unwrap(),
        serde_json::to_value(&initial).unwrap(),
    ];
    assert_eq!(lines[4]["kind"], "connect");
    for line in &lines {
        let errors: Vec<String> = v.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:#?}");
    }
    // The certain write leaves the version-2 fields out, so it also reads as version 1.
    assert!(lines[1].get("reconnected").is_none() && lines[1].get("sent_node").is_none());
    assert_eq!(lines[2]["sent_node"], "c1");

    let mut wrong = lines[2].clone();
    wrong["reconnected"] = serde_json::json!("yes");
    assert!(!v.is_valid(&wrong));
    let mut wrong = lines[1].clone();
    wrong["sent_node"] = serde_json::json!("c1");
    assert!(!v.is_valid(&wrong), "sent_node without reconnected");
    let mut wrong = lines[0].clone();
    wrong["client"]["ping_every"] = serde_json::json!(1);
    assert!(!v.is_valid(&wrong));
    let mut wrong = lines[0].clone();
    wrong["version"] = serde_json::json!(4);
    assert!(!v.is_valid(&wrong));
    let mut wrong = lines[4].clone();
    wrong["kind"] = serde_json::json!("open");
    assert!(!v.is_valid(&wrong));
    let mut wrong = lines[5].clone();
    wrong["pattern"] = serde_json::json!("initial");
    assert!(!v.is_valid(&wrong));
}
