//! Every YAML document under `manifests/` (the CRDs included, whatever files they are in) is
//! checked against the official Kubernetes schemas of 1.33 to 1.37 with `kubernetes-validate`
//! (PyPI) in strict mode, which rejects fields the API does not know. No API server can run
//! here, so this is how the manifests are checked. The tests after the first show that the
//! check catches a misspelled field, a wrong type, an unknown kind and a duplicate key.

mod manifests_common;

use manifests_common::{
    apply_files, manifests_dir, require_validator, validate_file, KUBERNETES_VERSIONS,
};

/// A copy of a real manifest with one edit, in a temporary file.
fn broken_copy(file: &str, from: &str, to: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let original = std::fs::read_to_string(manifests_dir().join(file)).expect("read manifest");
    assert!(
        original.contains(from),
        "{file} no longer contains {from:?}; pick another edit for this test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(file);
    std::fs::write(&path, original.replacen(from, to, 1)).expect("write broken copy");
    (dir, path)
}

#[test]
fn every_manifest_passes_strict_schema_validation_for_kubernetes_1_33_to_1_37() {
    require_validator();
    let files = apply_files(&manifests_dir());
    let names: Vec<String> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "00-namespace.yaml",
        "faultline-agent-rbac.yaml",
        "faultline-agent.yaml",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "manifests/{expected} is missing; found {names:?}"
        );
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| validate_file(path).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} manifest files fail validation:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "validated against Kubernetes {}: {}",
        KUBERNETES_VERSIONS.join(", "),
        names.join(", ")
    );
}

#[test]
fn a_misspelled_field_fails_validation() {
    require_validator();
    let (_dir, path) = broken_copy(
        "faultline-agent.yaml",
        "hostNetwork: true",
        "hostNetwrok: true",
    );
    let error = validate_file(&path).expect_err("a misspelled field must fail");
    assert!(error.contains("'hostNetwrok' was unexpected"), "{error}");
}

#[test]
fn a_wrong_type_fails_validation() {
    require_validator();
    let (_dir, path) = broken_copy(
        "faultline-agent.yaml",
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds: a minute",
    );
    let error = validate_file(&path).expect_err("a string where an integer belongs must fail");
    assert!(error.contains("terminationGracePeriodSeconds"), "{error}");
}

#[test]
fn an_unknown_kind_fails_validation_though_kubernetes_validate_only_warns() {
    require_validator();
    let (_dir, path) = broken_copy("faultline-agent.yaml", "kind: DaemonSet", "kind: DaemonSat");
    let error = validate_file(&path).expect_err("an unknown kind must fail");
    assert!(
        error.contains("Couldn't find schema for kind DaemonSat"),
        "{error}"
    );
}

#[test]
fn a_duplicate_key_fails_validation_though_pyyaml_keeps_the_last() {
    require_validator();
    let (_dir, path) = broken_copy(
        "00-namespace.yaml",
        "  name: faultline-system\n",
        "  name: faultline-system\n  name: faultline\n",
    );
    let error = validate_file(&path).expect_err("a duplicate key must fail");
    assert!(error.contains("duplicate entry"), "{error}");
}
