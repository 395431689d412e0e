//! A ledger record as the agent and every reconcile read it. A record that parses must
//! serialize back to one that parses to the same record: revert needs nothing but the record.
#![no_main]

use faultline_injectors::ledger::FaultRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = FaultRecord::from_json(data) else {
        return;
    };
    let _ = record.expired(u64::MAX);
    let _ = record.action.kind_name();
    let written = serde_json::to_vec(&record).expect("a parsed record serializes");
    let again = FaultRecord::from_json(&written).expect("a written record parses");
    assert_eq!(again, record, "the record changed through the ledger's own format");
});
