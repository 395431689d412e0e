//! An observations file as `chaosctl check --observations` reads it; whatever is read is then
//! used to judge a small valid history, so the fault windows and stream states reach the
//! checkers.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use faultline_experiments::checkers::{check_reader, read_observations_from, CheckConfig};
use libfuzzer_sys::fuzz_target;

const HISTORY: &str = concat!(
    r#"{"format":"faultline-history","version":3,"run_id":"fuzz","started_at_unix_ms":0,"adapter":"nats"}"#,
    "\n",
    r#"{"tenant":"t1","process":"p","node":"a1","kind":"write","pattern":"chat","value":"t1/p/0","stream":"s1","seq":1,"invoke_ns":1000000,"complete_ns":2000000,"invoke_unix_ms":0,"complete_unix_ms":0,"outcome":"ok"}"#,
    "\n"
);

fuzz_target!(|data: &[u8]| {
    let config = CheckConfig::default();
    if let Ok(observations) =
        read_observations_from(Cursor::new(data), Path::new("fuzz-observations.jsonl"), &config)
    {
        let _ = check_reader(
            Cursor::new(HISTORY.as_bytes()),
            Path::new("fuzz-history.jsonl"),
            observations,
            &config,
        );
    }
});
