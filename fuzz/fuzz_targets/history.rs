//! A history file as `chaosctl check` reads it: the streaming reader and every checker behind
//! it, on bytes that are not valid UTF-8 or JSON as much as on near-valid histories.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use faultline_experiments::checkers::{check_reader, CheckConfig, Observations};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_reader(
        Cursor::new(data),
        Path::new("fuzz-history.jsonl"),
        Observations::none(),
        &CheckConfig::default(),
    );
});
