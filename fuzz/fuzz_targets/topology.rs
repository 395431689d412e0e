//! A lab topology as `chaosctl lab up --topology FILE` reads it (parse and validate).
#![no_main]

use faultline_experiments::lab::topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Topology::parse(text, "fuzz-topology.yaml");
});
