//! An experiment spec as `chaosctl run FILE` reads it: parse, then validate. Any input may be
//! refused; none may panic.
#![no_main]

use faultline_experiments::spec::ExperimentSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = ExperimentSpec::parse(text, "fuzz.yaml") {
        let _ = spec.validate("fuzz.yaml");
    }
});
