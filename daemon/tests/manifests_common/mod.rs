//! Shared by the manifest tests: the files that `kubectl apply -f manifests/` reads, in the
//! order it reads them, and their YAML documents.

#![allow(dead_code, clippy::missing_panics_doc)]

pub mod rbac;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

/// `manifests/`.
pub fn manifests_dir() -> PathBuf {
    repo_root().join("manifests")
}

/// The files in `dir` that `kubectl apply -f DIR` applies (`.yaml`, `.yml`, `.json`; not
/// recursive), in its order: kubectl walks the folder in byte order of the file names.
pub fn apply_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files
}

/// The non-empty YAML documents of one file. serde_yaml rejects duplicate keys, which PyYAML
/// (and so kubernetes-validate) silently resolves to the last one.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<serde_yaml::Value>, String> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|error| {
            format!(
                "{}: YAML document {} does not parse: {error}",
                path.display(),
                index + 1
            )
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The documents of one file, panicking with the file's name if it does not parse.
pub fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse_documents(path, &text).unwrap_or_else(|error| panic!("{error}"))
}

/// Every document under `manifests/`, in apply order, with the file it came from.
pub fn all_documents() -> Vec<(PathBuf, serde_yaml::Value)> {
    apply_files(&manifests_dir())
        .into_iter()
        .flat_map(|path| {
            documents(&path)
                .into_iter()
                .map(move |document| (path.clone(), document))
        })
        .collect()
}

/// A string field at a dotted path (`metadata.name`), if present.
pub fn str_at<'a>(value: &'a serde_yaml::Value, path: &str) -> Option<&'a str> {
    at(value, path)?.as_str()
}

/// The value at a dotted path, if present.
pub fn at<'a>(value: &'a serde_yaml::Value, path: &str) -> Option<&'a serde_yaml::Value> {
    path.split('.').try_fold(value, |node, key| node.get(key))
}

/// The one document of `kind` named `name`, panicking if there is not exactly one.
pub fn the_object(kind: &str, name: &str) -> serde_yaml::Value {
    let matches: Vec<serde_yaml::Value> = all_documents()
        .into_iter()
        .map(|(_, document)| document)
        .filter(|document| {
            str_at(document, "kind") == Some(kind)
                && str_at(document, "metadata.name") == Some(name)
        })
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "expected exactly one {kind} named {name} under manifests/, found {}",
        matches.len()
    );
    matches.into_iter().next().expect("one match")
}

/// The Kubernetes releases the manifests must be valid for.
pub const KUBERNETES_VERSIONS: [&str; 5] = ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];

/// Makes sure `kubernetes-validate` can run, and says how to get it when it cannot.
pub fn require_validator() {
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
pub fn validate_file(path: &Path) -> Result<(), String> {
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
