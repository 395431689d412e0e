//! Every YAML document under `manifests/` (the CRDs included, whatever files they are in) is
//! checked against the official Kubernetes schemas of 1.33 to 1.37 with `kubernetes-validate`
//! (PyPI) in strict mode, which rejects fields the API does not know. No API server can run
//! here, so this is how the manifests are checked. The tests after the first show that the
//! check catches a misspelled field, a wrong type, an unknown kind and a duplicate key.

mod manifests_common;

use std::path::Path;
use std::process::Command;

use manifests_common::{apply_files, manifests_dir, parse_documents, str_at};

/// The Kubernetes releases the manifests must be valid for.
const KUBERNETES_VERSIONS: [&str; 5] = ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];

/// Makes sure `kubernetes-validate` can run, and says how to get it when it cannot.
fn require_validator() {
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "kubernetes-validate is not installed (python3 -m kubernetes_validate: {}): run scripts/setup.sh",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("python3 cannot be started ({error}): run scripts/setup.sh"),
    }
}

/// Checks one file: its YAML parses without duplicate keys, each document names its apiVersion,
/// kind and name, and `kubernetes-validate --strict` passes each document against each version
/// in [`KUBERNETES_VERSIONS`]. kubernetes-validate only warns (exit code 0) on a kind it has no
/// schema for, and would fall back to an older schema for a version it lacks, so its report is
/// read line by line: every document must be reported as passed against every version.
fn validate_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let documents = parse_documents(path, &text)?;
    if documents.is_empty() {
        return Err(format!("{}: no YAML document", path.display()));
    }
    let mut expected_passes = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let (Some(_), Some(kind), Some(name)) = (
            str_at(document, "apiVersion"),
            str_at(document, "kind"),
            str_at(document, "metadata.name"),
        ) else {
            return Err(format!(
                "{}: document {} lacks apiVersion, kind or metadata.name",
                path.display(),
                index + 1
            ));
        };
        for version in KUBERNETES_VERSIONS {
            let major_minor = version.rsplit_once('.').map_or(version, |(head, _)| head);
            expected_passes.push(format!(
                "passed for resource {}/{name} against version {major_minor}",
                kind.to_lowercase()
            ));
        }
    }

    let mut command = Command::new("python3");
    command.args(["-m", "kubernetes_validate", "--strict"]);
    for version in KUBERNETES_VERSIONS {
        command.args(["--kubernetes-version", version]);
    }
    let output = command
        .arg(path)
        .output()
        .map_err(|error| format!("python3 cannot be started ({error}): run scripts/setup.sh"))?;
    let report = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<&str> = report
        .lines()
        .filter(|line| !line.starts_with("INFO "))
        .collect();
    if !output.status.success() || !problems.is_empty() {
        return Err(format!(
            "{}: kubernetes-validate --strict ({}):\n{}\n{}",
            path.display(),
            output.status,
            problems.join("\n"),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let missing: Vec<&String> = expected_passes
        .iter()
        .filter(|pass| !report.lines().any(|line| line.ends_with(pass.as_str())))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: kubernetes-validate did not report these as passed (does the installed release know these Kubernetes versions? run scripts/setup.sh): {missing:?}\n{report}",
            path.display()
        ));
    }
    Ok(())
}

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
