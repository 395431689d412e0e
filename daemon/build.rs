//! Link settings of the binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Packed relative relocations (DT_RELR): a position-independent executable's relative
    // relocations become a bitmap instead of 24 bytes each, so the loader reads about 1.5 MB less
    // of `faultlined` at every start. That is most of the node agent's margin under its 15 MB
    // idle RSS goal (BENCHMARKS.md). glibc supports DT_RELR from 2.36, lld from 15, GNU ld from
    // 2.38; other targets keep the default.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
