//! What the schemas cannot check in `manifests/`: that `kubectl apply -f manifests/` applies
//! the files in a working order, that every workload names the one image, tagged with the
//! workspace version, and nothing else names it, that the DaemonSet matches what `faultlined
//! agent` expects (arguments, health port and paths, downward-API variables, host paths), and
//! that the agent's RBAC grants exactly the documented rules, each with a comment. Each checker is also shown failing on a
//! broken input.

mod manifests_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use manifests_common::{
    all_documents, apply_files, at, documents, manifests_dir, repo_root, str_at, the_object,
};
use serde_yaml::Value;

/// The workspace version: the daemon crate takes its version from the workspace.
const WORKSPACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Namespaces every cluster has.
const BUILT_IN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Kinds without a namespace that may appear in our manifests; every other kind must name its
/// namespace, or `kubectl apply` would put it in the user's current one.
const CLUSTER_SCOPED_KINDS: [&str; 7] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "Fault",
    "Halt",
];

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The manifests' files in apply order, each with its documents.
fn manifests_in_apply_order() -> Vec<(String, Vec<Value>)> {
    apply_files(&manifests_dir())
        .iter()
        .map(|path| (file_name(path), documents(path)))
        .collect()
}

/// What goes wrong when `files` are applied one after the other, as `kubectl apply -f` does.
fn apply_order_problems(files: &[(String, Vec<Value>)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut namespaces: BTreeSet<String> = BUILT_IN_NAMESPACES.map(String::from).into();
    let mut service_accounts = BTreeSet::new();
    let mut crd_groups = BTreeSet::new();
    let mut first_other_kind: Option<String> = None;
    for (file, docs) in files {
        for document in docs {
            let kind = str_at(document, "kind").unwrap_or_default();
            let name = str_at(document, "metadata.name").unwrap_or_default();
            let what = format!("{file}: {kind} {name}");
            let namespace = str_at(document, "metadata.namespace");
            match kind {
                "Namespace" | "CustomResourceDefinition" => {
                    if let Some(other) = &first_other_kind {
                        problems.push(format!(
                            "{what} is applied after {other}; namespaces and CRDs come first"
                        ));
                    }
                }
                _ => {
                    first_other_kind.get_or_insert_with(|| what.clone());
                }
            }
            match namespace {
                Some(namespace) if !namespaces.contains(namespace) => problems.push(format!(
                    "{what} is applied before its namespace {namespace} exists"
                )),
                None if !CLUSTER_SCOPED_KINDS.contains(&kind) => problems.push(format!(
                    "{what} names no namespace; kubectl would put it in the user's current one"
                )),
                _ => {}
            }
            let group = str_at(document, "apiVersion")
                .and_then(|api_version| api_version.split_once('/'))
                .map(|(group, _)| group);
            if let Some(group) = group.filter(|group| group.contains("faultline")) {
                if !crd_groups.contains(group) {
                    problems.push(format!(
                        "{what} is applied before the CRD of its group {group}"
                    ));
                }
            }
            if let Some(account) = str_at(document, "spec.template.spec.serviceAccountName") {
                let key = format!("{}/{account}", namespace.unwrap_or_default());
                if !service_accounts.contains(&key) {
                    problems.push(format!("{what} is applied before its ServiceAccount {key}"));
                }
            }
            match kind {
                "Namespace" => {
                    namespaces.insert(name.to_owned());
                }
                "ServiceAccount" => {
                    service_accounts.insert(format!("{}/{name}", namespace.unwrap_or_default()));
                }
                "CustomResourceDefinition" => {
                    if let Some(group) = str_at(document, "spec.group") {
                        crd_groups.insert(group.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn kubectl_apply_applies_namespaces_and_crds_first_and_everything_after_what_it_needs() {
    let files = manifests_in_apply_order();
    let problems = apply_order_problems(&files);
    assert!(
        problems.is_empty(),
        "`kubectl apply -f manifests/` would not work in one pass:\n{}",
        problems.join("\n")
    );
    let order: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    eprintln!("apply order: {}", order.join(", "));
}

#[test]
fn the_apply_order_check_catches_a_daemonset_applied_before_its_namespace() {
    let mut files = manifests_in_apply_order();
    let agent = files
        .iter()
        .position(|(name, _)| name == "faultline-agent.yaml")
        .expect("faultline-agent.yaml");
    let moved = files.remove(agent);
    files.insert(0, moved);
    let problems = apply_order_problems(&files);
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("before its namespace faultline-system exists")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("before its ServiceAccount")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("namespaces and CRDs come first")),
        "{problems:?}"
    );
}

/// Every value of an `image` key anywhere in `value`.
fn image_values(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                if let (Some("image"), Some(image)) = (key.as_str(), child.as_str()) {
                    found.push(image.to_owned());
                }
                image_values(child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| image_values(item, found)),
        Value::Tagged(tagged) => image_values(&tagged.value, found),
        _ => {}
    }
}

/// Every line, in files under `roots` other than Markdown, that names `repository`.
fn places_naming(repository: &str, roots: &[PathBuf]) -> Vec<String> {
    fn visit(path: &Path, repository: &str, places: &mut Vec<String>) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .expect("list directory")
                .map(|entry| entry.expect("directory entry").path())
                .collect();
            entries.sort();
            for entry in &entries {
                visit(entry, repository, places);
            }
        } else if path.extension().and_then(|ext| ext.to_str()) != Some("md") {
            let Ok(text) = std::fs::read_to_string(path) else {
                return;
            };
            for (number, line) in text.lines().enumerate() {
                if line.contains(repository) {
                    places.push(format!(
                        "{}:{}: {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    let mut places = Vec::new();
    for root in roots {
        visit(root, repository, &mut places);
    }
    places
}

/// Where the image could be named: the manifests, the chart, the scripts and the Containerfile.
fn image_roots() -> Vec<PathBuf> {
    let root = repo_root();
    ["manifests", "charts", "scripts", "Containerfile"]
        .iter()
        .map(|path| root.join(path))
        .collect()
}

/// The image references in the manifests: one per workload (the agent's DaemonSet, the
/// controller's Deployment), every one the same image.
fn image_values_in_manifests() -> Vec<String> {
    let mut images = Vec::new();
    for (_, document) in all_documents() {
        image_values(&document, &mut images);
    }
    images
}

/// The one image the manifests name, split into repository and tag.
fn the_image() -> (String, String) {
    let mut images = image_values_in_manifests();
    images.dedup();
    assert_eq!(
        images.len(),
        1,
        "every workload in the manifests runs the one faultlined image (the chart templates it from one value), found {images:?}"
    );
    let image = images.remove(0);
    let (repository, tag) = image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .unwrap_or_else(|| panic!("image {image:?} has no tag"));
    (repository.to_owned(), tag.to_owned())
}

#[test]
fn the_image_is_named_only_by_the_workloads_with_the_workspace_version_as_its_tag() {
    let (repository, tag) = the_image();
    assert_eq!(
        tag, WORKSPACE_VERSION,
        "the image tag must be the workspace version (Cargo.toml [workspace.package] version)"
    );
    // The manifests' one `image:` line, and the chart's default in values.yaml; that the
    // chart renders the same image is daemon/tests/chart_render.rs's check.
    let places = places_naming(&repository, &image_roots());
    let workloads = image_values_in_manifests().len();
    assert_eq!(
        places.len(),
        workloads + 1,
        "{repository} must be named only on the workloads' `image:` lines ({workloads}) and in \
         the chart's values.yaml, found:\n{}",
        places.join("\n")
    );
    for place in &places {
        assert!(
            (place.contains("manifests/") && place.contains("image: "))
                || place.contains("charts/faultline/values.yaml"),
            "{place}: only a workload's image line and the chart's values may name the image"
        );
    }
    for expected in [
        "manifests/faultline-agent.yaml",
        "manifests/faultline-controller.yaml",
        "charts/faultline/values.yaml",
    ] {
        assert!(
            places.iter().any(|place| place.contains(expected)),
            "{expected} must name {repository}: {places:?}"
        );
    }
}

#[test]
fn a_second_place_naming_the_image_is_caught() {
    let (repository, tag) = the_image();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        elsewhere.path().join("values.yaml"),
        format!("image: {repository}:{tag}\n"),
    )
    .expect("write");
    let mut roots = image_roots();
    roots.push(elsewhere.path().to_path_buf());
    let places = places_naming(&repository, &roots);
    assert_eq!(
        places.len(),
        image_values_in_manifests().len() + 2,
        "{places:?}"
    );
}

/// Every `app.kubernetes.io/version` label anywhere in `value`.
fn version_labels(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                if key.as_str() == Some("app.kubernetes.io/version") {
                    found.push(child.as_str().unwrap_or("(not a string)").to_owned());
                }
                version_labels(child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| version_labels(item, found)),
        _ => {}
    }
}

#[test]
fn every_version_label_is_the_workspace_version() {
    let mut labels = Vec::new();
    for (_, document) in all_documents() {
        version_labels(&document, &mut labels);
    }
    assert!(
        !labels.is_empty(),
        "the DaemonSet carries app.kubernetes.io/version"
    );
    for label in labels {
        assert_eq!(label, WORKSPACE_VERSION, "app.kubernetes.io/version label");
    }
}

fn daemonset() -> Value {
    the_object("DaemonSet", "faultline-agent")
}

fn the_container(daemonset: &Value) -> &Value {
    let containers = at(daemonset, "spec.template.spec.containers")
        .and_then(Value::as_sequence)
        .expect("containers");
    assert_eq!(containers.len(), 1, "the agent runs one container");
    &containers[0]
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_sequence)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The value that follows `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| *arg == flag)
        .and_then(|index| args.get(index + 1))
        .copied()
}

#[test]
fn the_daemonset_runs_faultlined_agent_and_probes_its_health_port() {
    let daemonset = daemonset();
    let container = the_container(&daemonset);

    let args = strings(container.get("args"));
    assert_eq!(args.first(), Some(&"agent"), "args {args:?}");
    let state_dir = flag_value(&args, "--state-dir").expect("--state-dir");
    assert_eq!(state_dir, "/var/lib/faultline");
    let health_addr = flag_value(&args, "--health-addr").expect("--health-addr");
    let health_port: i64 = health_addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("--health-addr HOST:PORT");

    // The probes reach the port --health-addr binds, on the agent's paths.
    let ports: BTreeMap<&str, i64> = container
        .get("ports")
        .and_then(Value::as_sequence)
        .expect("ports")
        .iter()
        .map(|port| {
            (
                str_at(port, "name").expect("named port"),
                at(port, "containerPort")
                    .and_then(Value::as_i64)
                    .expect("containerPort"),
            )
        })
        .collect();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(container, &format!("{probe}.httpGet")).expect(probe);
        assert_eq!(str_at(get, "path"), Some(path), "{probe} path");
        let port = match get.get("port").expect("probe port") {
            Value::String(name) => *ports.get(name.as_str()).expect("probe port is declared"),
            number => number.as_i64().expect("port number"),
        };
        assert_eq!(
            port, health_port,
            "{probe} port vs --health-addr {health_addr}"
        );
    }
}

#[test]
fn the_daemonset_gives_the_agent_its_node_privileges_and_host_paths() {
    let daemonset = daemonset();
    let pod = at(&daemonset, "spec.template.spec").expect("pod spec");
    let container = the_container(&daemonset);
    let args = strings(container.get("args"));
    let state_dir = flag_value(&args, "--state-dir").expect("--state-dir");

    // The downward API gives the agent its node and its own pod.
    let env: BTreeMap<&str, &str> = container
        .get("env")
        .and_then(Value::as_sequence)
        .expect("env")
        .iter()
        .map(|var| {
            (
                str_at(var, "name").expect("env name"),
                str_at(var, "valueFrom.fieldRef.fieldPath").expect("fieldRef"),
            )
        })
        .collect();
    let expected_env: BTreeMap<&str, &str> = [
        ("NODE_NAME", "spec.nodeName"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ]
    .into();
    assert_eq!(env, expected_env);

    // Host namespaces and privileges.
    for field in ["hostNetwork", "hostPID"] {
        assert_eq!(
            pod.get(field).and_then(Value::as_bool),
            Some(true),
            "{field}"
        );
    }
    assert_eq!(
        at(container, "securityContext.privileged").and_then(Value::as_bool),
        Some(true)
    );
    let capabilities = strings(at(container, "securityContext.capabilities.add"));
    for capability in ["NET_ADMIN", "SYS_ADMIN"] {
        assert!(
            capabilities.contains(&capability),
            "{capability} in {capabilities:?}"
        );
    }

    // Host paths: the ledger directory is the one --state-dir names, and /run/faultline.
    let mounts: BTreeMap<&str, &str> = container
        .get("volumeMounts")
        .and_then(Value::as_sequence)
        .expect("volumeMounts")
        .iter()
        .map(|mount| {
            (
                str_at(mount, "mountPath").expect("mountPath"),
                str_at(mount, "name").expect("mount name"),
            )
        })
        .collect();
    let volumes: BTreeMap<&str, (&str, &str)> = pod
        .get("volumes")
        .and_then(Value::as_sequence)
        .expect("volumes")
        .iter()
        .map(|volume| {
            (
                str_at(volume, "name").expect("volume name"),
                (
                    str_at(volume, "hostPath.path").expect("a hostPath volume"),
                    str_at(volume, "hostPath.type").expect("hostPath type"),
                ),
            )
        })
        .collect();
    for path in [state_dir, "/run/faultline"] {
        let volume = mounts
            .get(path)
            .unwrap_or_else(|| panic!("{path} is mounted"));
        assert_eq!(
            volumes.get(volume),
            Some(&(path, "DirectoryOrCreate")),
            "{path}"
        );
    }
}

#[test]
fn the_daemonset_runs_on_every_node_and_survives_pressure_and_updates() {
    let daemonset = daemonset();
    let pod = at(&daemonset, "spec.template.spec").expect("pod spec");
    let container = the_container(&daemonset);

    let tolerations = pod
        .get("tolerations")
        .and_then(Value::as_sequence)
        .expect("tolerations");
    assert!(
        tolerations.iter().any(|toleration| {
            str_at(toleration, "operator") == Some("Exists")
                && toleration.get("key").is_none()
                && toleration.get("effect").is_none()
        }),
        "a toleration with operator Exists and no key or effect tolerates every taint: {tolerations:?}"
    );
    assert_eq!(
        str_at(pod, "priorityClassName"),
        Some("system-node-critical")
    );
    for resource in [
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ] {
        assert!(
            at(container, &format!("resources.{resource}")).is_some(),
            "resources.{resource}"
        );
    }
    assert_eq!(
        str_at(&daemonset, "spec.updateStrategy.type"),
        Some("RollingUpdate")
    );
    assert!(at(
        &daemonset,
        "spec.updateStrategy.rollingUpdate.maxUnavailable"
    )
    .is_some());
    let grace = pod
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= 30,
        "a final heal and its status write need time: {grace}"
    );

    // The selector picks the pod template's labels, and none of them is the version (a
    // selector is immutable; the version changes).
    let selector = at(&daemonset, "spec.selector.matchLabels")
        .and_then(Value::as_mapping)
        .expect("matchLabels");
    let template_labels = at(&daemonset, "spec.template.metadata.labels").expect("labels");
    for (key, value) in selector {
        let key = key.as_str().expect("label key");
        assert!(key.starts_with("app.kubernetes.io/"), "{key}");
        assert_ne!(key, "app.kubernetes.io/version");
        assert_eq!(
            template_labels.get(key),
            Some(value),
            "template label {key}"
        );
    }

    // The pod runs in a namespace whose Pod Security level admits it.
    let namespace = str_at(&daemonset, "metadata.namespace").expect("namespace");
    let namespace = the_object("Namespace", namespace);
    let labels = at(&namespace, "metadata.labels").expect("namespace labels");
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .and_then(Value::as_str),
        Some("privileged")
    );
}

/// Each rule of a Role or ClusterRole, flattened to `group resource verb`.
fn grants(role: &Value) -> BTreeSet<String> {
    let mut grants = BTreeSet::new();
    for rule in role
        .get("rules")
        .and_then(Value::as_sequence)
        .expect("rules")
    {
        for group in strings(rule.get("apiGroups")) {
            for resource in strings(rule.get("resources")) {
                for verb in strings(rule.get("verbs")) {
                    let group = if group.is_empty() { "core" } else { group };
                    grants.insert(format!("{group} {resource} {verb}"));
                }
            }
        }
    }
    grants
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[test]
fn the_agent_rbac_grants_exactly_the_documented_rules() {
    let cluster_role = the_object("ClusterRole", "faultline-agent");
    assert_eq!(
        grants(&cluster_role),
        set(&[
            "core nodes get",
            "core pods list",
            "faultline.dev faults list",
            "faultline.dev faults watch",
            "faultline.dev faults patch",
            "faultline.dev faults/status patch",
            "faultline.dev halts list",
            "faultline.dev halts watch",
        ]),
        "a change here changes the RBAC table in manifests/README.md too"
    );
    let role = the_object("Role", "faultline-agent-apiserver-endpoints");
    assert_eq!(str_at(&role, "metadata.namespace"), Some("default"));
    assert_eq!(
        grants(&role),
        set(&["discovery.k8s.io endpointslices list"])
    );

    // Both are bound to the account the DaemonSet runs as, and to nothing else.
    let daemonset = daemonset();
    let account = str_at(&daemonset, "spec.template.spec.serviceAccountName").expect("account");
    let namespace = str_at(&daemonset, "metadata.namespace").expect("namespace");
    for (kind, name, role_kind, role_name) in [
        (
            "ClusterRoleBinding",
            "faultline-agent",
            "ClusterRole",
            "faultline-agent",
        ),
        (
            "RoleBinding",
            "faultline-agent-apiserver-endpoints",
            "Role",
            "faultline-agent-apiserver-endpoints",
        ),
    ] {
        let binding = the_object(kind, name);
        assert_eq!(str_at(&binding, "roleRef.kind"), Some(role_kind), "{kind}");
        assert_eq!(str_at(&binding, "roleRef.name"), Some(role_name), "{kind}");
        let subjects = binding
            .get("subjects")
            .and_then(Value::as_sequence)
            .expect("subjects");
        assert_eq!(subjects.len(), 1, "{kind} binds one subject");
        assert_eq!(str_at(&subjects[0], "kind"), Some("ServiceAccount"));
        assert_eq!(str_at(&subjects[0], "name"), Some(account));
        assert_eq!(str_at(&subjects[0], "namespace"), Some(namespace));
    }
}

/// Rules (`- apiGroups:` lines) not directly under a comment.
fn uncommented_rules(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(index, line)| {
            line.trim_start().starts_with("- apiGroups:")
                && !index
                    .checked_sub(1)
                    .is_some_and(|previous| lines[previous].trim_start().starts_with('#'))
        })
        .map(|(index, _)| index + 1)
        .collect()
}

#[test]
fn every_rbac_rule_says_why() {
    let path = manifests_dir().join("faultline-agent-rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("read RBAC");
    let lines = uncommented_rules(&text);
    assert!(
        lines.is_empty(),
        "{}: the rules at lines {lines:?} need a comment saying why the agent needs them",
        path.display()
    );
    // The check itself: drop one rule's comment and it is found.
    let without_comment = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("# Halts:"))
        .collect::<Vec<&str>>()
        .join("\n");
    assert_eq!(uncommented_rules(&without_comment).len(), 1);
}
