//! The CRDs under `manifests/` are generated from the Rust types; this fails when they differ,
//! and rewrites them when `FAULTLINE_UPDATE_MANIFESTS=1`.

use std::path::Path;

use faultline_experiments::kubernetes::crd::{crd_manifests, Fault, Halt};
use kube::CustomResourceExt;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let update = std::env::var_os("FAULTLINE_UPDATE_MANIFESTS").is_some();
    for (file, yaml) in crd_manifests() {
        let path = dir.join(file);
        if update {
            std::fs::write(&path, &yaml).expect("write the CRD");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} differs from the Rust type in experiments/src/kubernetes/crd.rs; regenerate with \
             FAULTLINE_UPDATE_MANIFESTS=1 cargo test -p faultline-experiments --test crd_manifests",
            path.display()
        );
    }
}

#[test]
fn crds_are_cluster_scoped_with_a_status_subresource_where_agents_write() {
    let fault = serde_json::to_value(Fault::crd()).expect("json");
    assert_eq!(fault["spec"]["scope"], "Cluster");
    assert_eq!(fault["spec"]["group"], "faultline.dev");
    let version = &fault["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    // Structural: the action is a plain string enum, the sections plain objects.
    assert_eq!(schema["properties"]["action"]["type"], "string");
    assert_eq!(schema["properties"]["partition"]["type"], "object");
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(status["properties"]["nodes"]["type"], "object");
    assert!(status["properties"]["nodes"]["additionalProperties"].is_object());
    let halt = serde_json::to_value(Halt::crd()).expect("json");
    assert_eq!(halt["spec"]["scope"], "Cluster");
}
