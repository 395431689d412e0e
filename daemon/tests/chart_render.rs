//! The Helm chart (`charts/faultline/`) and `manifests/` must not drift. The chart is rendered
//! offline by Helm v4's own engine (PyPI's helm-python-sdk, through `scripts/render-chart.py`;
//! no helm binary is needed) and, with its default values, must give exactly the objects of
//! `manifests/`, field for field, apart from the two labels only Helm sets. Non-default values
//! are rendered too, checked for their effect and against the official schemas.

mod manifests_common;

use std::collections::BTreeMap;
use std::process::Command;

use manifests_common::{
    all_documents, at, parse_documents, repo_root, require_validator, str_at, validate_file,
};
use serde_yaml::Value;

/// Labels that only a Helm release carries; they are left out of the comparison.
const HELM_ONLY_LABELS: [&str; 2] = ["app.kubernetes.io/managed-by", "helm.sh/chart"];

/// Renders the chart with `values` (JSON) as release `faultline` in `namespace`: the YAML text,
/// or the renderer's error (lint problems included).
fn render_text(values: &str, namespace: &str) -> Result<String, String> {
    let output = Command::new("python3")
        .arg(repo_root().join("scripts/render-chart.py"))
        .arg(repo_root().join("charts/faultline"))
        .args(["--values-json", values, "--namespace", namespace])
        .output()
        .map_err(|error| format!("python3 cannot be started ({error}): run scripts/setup.sh"))?;
    if !output.status.success() {
        return Err(format!(
            "scripts/render-chart.py failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|error| format!("render output: {error}"))
}

fn render(values: &str, namespace: &str) -> Vec<Value> {
    let text = render_text(values, namespace).unwrap_or_else(|error| panic!("{error}"));
    parse_documents(std::path::Path::new("rendered chart"), &text)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// `Kind namespace/name`, the identity of an object in a cluster.
fn identity(document: &Value) -> String {
    format!(
        "{} {}/{}",
        str_at(document, "kind").unwrap_or("?"),
        str_at(document, "metadata.namespace").unwrap_or(""),
        str_at(document, "metadata.name").unwrap_or("?")
    )
}

/// Removes the labels only Helm sets, wherever labels appear.
fn without_helm_labels(mut document: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Mapping(mapping) => {
                for (key, child) in mapping.iter_mut() {
                    if key.as_str() == Some("labels") {
                        if let Value::Mapping(labels) = child {
                            for label in HELM_ONLY_LABELS {
                                labels.remove(label);
                            }
                        }
                    }
                    strip(child);
                }
            }
            Value::Sequence(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut document);
    document
}

/// The first path at which `rendered` and `expected` differ, e.g.
/// `spec.template.spec.hostPID`.
fn first_difference(rendered: &Value, expected: &Value, path: &str) -> Option<String> {
    match (rendered, expected) {
        (Value::Mapping(ours), Value::Mapping(theirs)) => {
            let keys: std::collections::BTreeSet<String> = ours
                .keys()
                .chain(theirs.keys())
                .map(|key| {
                    key.as_str()
                        .map_or_else(|| format!("{key:?}"), str::to_owned)
                })
                .collect();
            keys.into_iter().find_map(|key| {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (ours.get(key.as_str()), theirs.get(key.as_str())) {
                    (Some(left), Some(right)) => first_difference(left, right, &here),
                    (left, right) => Some(format!("{here}: {left:?} vs {right:?}")),
                }
            })
        }
        (Value::Sequence(ours), Value::Sequence(theirs)) if ours.len() == theirs.len() => ours
            .iter()
            .zip(theirs)
            .enumerate()
            .find_map(|(index, (left, right))| {
                first_difference(left, right, &format!("{path}[{index}]"))
            }),
        _ if rendered == expected => None,
        _ => Some(format!("{path}: {rendered:?} vs {expected:?}")),
    }
}

/// Every way `chart` and `manifests` differ: objects only in one, and the first differing
/// field of each object in both.
fn drift(chart: &[Value], manifests: &[Value]) -> Vec<String> {
    let index = |documents: &[Value]| -> BTreeMap<String, Value> {
        documents
            .iter()
            .map(|document| (identity(document), without_helm_labels(document.clone())))
            .collect()
    };
    let (chart, manifests) = (index(chart), index(manifests));
    let mut problems = Vec::new();
    for (id, object) in &manifests {
        match chart.get(id) {
            None => problems.push(format!("{id} is in manifests/ but the chart lacks it")),
            Some(rendered) => {
                if let Some(difference) = first_difference(rendered, object, "") {
                    problems.push(format!("{id}: chart vs manifests differ at {difference}"));
                }
            }
        }
    }
    for id in chart.keys().filter(|id| !manifests.contains_key(*id)) {
        problems.push(format!("{id} is in the chart but not in manifests/"));
    }
    problems
}

fn manifests() -> Vec<Value> {
    all_documents()
        .into_iter()
        .map(|(_, document)| document)
        .collect()
}

fn the<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| str_at(d, "kind") == Some(kind) && str_at(d, "metadata.name") == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

#[test]
fn the_chart_renders_exactly_the_manifests_and_by_default_leaves_the_namespace_out() {
    let with_namespace = render(r#"{"namespace": {"create": true}}"#, "faultline-system");
    let problems = drift(&with_namespace, &manifests());
    assert!(
        problems.is_empty(),
        "charts/faultline and manifests/ have drifted; change both (the CRDs: copy \
         manifests/01-crd-*.yaml to charts/faultline/crds/):\n{}",
        problems.join("\n")
    );
    // By default Helm installs into a namespace that exists already (manifests/00-namespace.yaml).
    let rendered = render("{}", "faultline-system");
    let mut without_namespace = manifests();
    without_namespace.retain(|d| str_at(d, "kind") != Some("Namespace"));
    let problems = drift(&rendered, &without_namespace);
    assert!(
        problems.is_empty(),
        "charts/faultline and manifests/ have drifted; change both (the CRDs: copy \
         manifests/01-crd-*.yaml to charts/faultline/crds/):\n{}",
        problems.join("\n")
    );
    // Helm's own labels are there, so a release is recognisable as one.
    let daemonset = the(&rendered, "DaemonSet", "faultline-agent");
    let labels = at(daemonset, "metadata.labels").expect("labels");
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .and_then(Value::as_str),
        Some("Helm")
    );
    eprintln!(
        "the chart renders the {} objects of manifests/",
        with_namespace.len()
    );
}

#[test]
fn the_drift_check_catches_a_changed_field_and_a_missing_object() {
    let rendered = render("{}", "faultline-system");
    let mut changed = manifests();
    let daemonset = changed
        .iter_mut()
        .find(|d| str_at(d, "kind") == Some("DaemonSet"))
        .expect("the DaemonSet");
    daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = Value::from(2);
    changed.retain(|d| str_at(d, "kind") != Some("ResourceQuota"));
    let problems = drift(&rendered, &changed);
    assert!(
        problems.iter().any(|p| p.contains(
            "DaemonSet faultline-system/faultline-agent: chart vs manifests differ at \
             spec.updateStrategy.rollingUpdate.maxUnavailable"
        )),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains(
            "ResourceQuota faultline-system/faultline-critical-pods is in the chart but not in manifests/"
        )),
        "{problems:?}"
    );
}

#[test]
fn values_change_the_image_namespace_scheduling_and_arguments() {
    let values = r#"{
        "image": {"repository": "registry.example/faultline/faultlined", "tag": "9.9.9"},
        "imagePullSecrets": [{"name": "regcred"}],
        "agent": {
            "nodeSelector": {"pool": "chaos"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "chaos", "effect": "NoSchedule"}],
            "extraArgs": ["--max-fault-duration", "1h"],
            "healthPort": 9898
        }
    }"#;
    let rendered = render(values, "chaos");
    assert!(
        rendered
            .iter()
            .all(|d| str_at(d, "kind") != Some("Namespace")),
        "by default the chart must not render the Namespace"
    );
    let daemonset = the(&rendered, "DaemonSet", "faultline-agent");
    assert_eq!(str_at(daemonset, "metadata.namespace"), Some("chaos"));
    let pod = at(daemonset, "spec.template.spec").expect("pod spec");
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some("registry.example/faultline/faultlined:9.9.9")
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "agent",
            "--state-dir",
            "/var/lib/faultline",
            "--health-addr",
            "0.0.0.0:9898",
            "--max-fault-duration",
            "1h"
        ]
    );
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9898));
    assert_eq!(pod["nodeSelector"]["pool"].as_str(), Some("chaos"));
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("dedicated"));
    assert_eq!(pod["imagePullSecrets"][0]["name"].as_str(), Some("regcred"));
    // The bindings follow the release namespace, or the agent would have no permissions.
    let binding = the(&rendered, "ClusterRoleBinding", "faultline-agent");
    assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some("chaos"));
}

#[test]
fn the_chart_rendered_with_other_values_passes_strict_schema_validation() {
    require_validator();
    let values = r#"{"image": {"tag": "1.2.3"}, "agent": {"extraArgs": ["--tick", "2s"]}}"#;
    let text = render_text(values, "chaos").unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, text).expect("write the render");
    validate_file(&path).unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn values_of_the_wrong_shape_are_refused_by_the_values_schema_naming_the_key() {
    let error = render_text(r#"{"agent": {"resources": "lots"}}"#, "faultline-system")
        .expect_err("resources must be an object");
    assert!(error.contains("resources"), "{error}");
    let error = render_text(r#"{"agent": {"partitonMode": "pods"}}"#, "faultline-system")
        .expect_err("an unknown key must be refused");
    assert!(error.contains("partitonMode"), "{error}");
    let error = render_text(
        r#"{"agent": {"exemptCidrs": ["cluster-dns"]}}"#,
        "faultline-system",
    )
    .expect_err("an exemption must be an IPv4 address or CIDR");
    assert!(error.contains("exemptCidrs"), "{error}");
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn verbs_for(role: &Value, resource: &str) -> Vec<String> {
    role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter(|rule| {
            rule["resources"]
                .as_sequence()
                .is_some_and(|r| r.iter().any(|r| r.as_str() == Some(resource)))
        })
        .flat_map(|rule| rule["verbs"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|verb| verb.as_str().map(str::to_owned))
        .collect()
}

/// A schedule as a user would put it in the values: one nightly suite.
const SCHEDULE_FILE: &str = "time_zone: Europe/Berlin\nmissed_runs: skip\nsuites:\n  - name: nightly\n    cron: \"0 2 * * *\"\n    scenarios:\n      - scenario: pod-failure\nbackground:\n  enabled: false\n";

#[test]
fn exempt_cidrs_reach_every_agent() {
    let values = serde_json::json!({
        "agent": {"exemptCidrs": ["10.96.0.10/32", "169.254.169.254"]}
    })
    .to_string();
    let rendered = render(&values, "chaos");
    let agent = &at(
        the(&rendered, "DaemonSet", "faultline-agent"),
        "spec.template.spec",
    )
    .expect("pod spec")["containers"][0];
    let args = args_of(agent);
    let exempt: Vec<&[String]> = args
        .windows(2)
        .filter(|pair| pair[0] == "--exempt-cidr")
        .map(|pair| &pair[1..])
        .collect();
    assert_eq!(
        exempt,
        [
            &["10.96.0.10/32".to_owned()][..],
            &["169.254.169.254".to_owned()][..]
        ]
    );
}

#[test]
fn the_schedule_and_metrics_take_effect() {
    let values = serde_json::json!({
        "schedule": {"enabled": true, "file": SCHEDULE_FILE, "experimentNamespace": "chaos-runs"},
        "metrics": {"serviceMonitor": {"enabled": true, "interval": "30s", "labels": {"release": "prometheus"}}}
    })
    .to_string();
    let rendered = render(&values, "chaos");
    let deployment = the(&rendered, "Deployment", "faultline-controller");
    let pod = at(deployment, "spec.template.spec").expect("pod spec");
    let args = args_of(&pod["containers"][0]);
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(
        after("--schedule").as_deref(),
        Some("/etc/faultline/schedule/schedule.yaml")
    );
    assert_eq!(
        after("--experiment-namespace").as_deref(),
        Some("chaos-runs")
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name} mount"))
    };
    assert_eq!(
        mount("reports")["readOnly"].as_bool(),
        Some(false),
        "the schedule writes its run index on the report volume"
    );
    assert_eq!(
        mount("schedule")["mountPath"].as_str(),
        Some("/etc/faultline/schedule")
    );

    // The ConfigMap holds the file as given, and the real parser accepts it.
    let config_map = the(&rendered, "ConfigMap", "faultline-schedule");
    let text = config_map["data"]["schedule.yaml"].as_str().expect("data");
    assert_eq!(text.trim_end(), SCHEDULE_FILE.trim_end());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedule.yaml");
    std::fs::write(&file, text).expect("write");
    let schedule = faultline_experiments::schedule::load_schedule(&file)
        .unwrap_or_else(|e| panic!("the rendered schedule does not parse: {e}"));
    assert_eq!(schedule.suites[0].name, "nightly");

    // The schedule's extra permissions come with it, and only with it.
    let role = the(&rendered, "ClusterRole", "faultline-controller");
    assert_eq!(
        verbs_for(role, "experiments"),
        ["list", "create", "get", "delete"]
    );
    assert_eq!(verbs_for(role, "halts"), ["list"]);
    let default_role = render("{}", "chaos")
        .into_iter()
        .find(|d| identity(d) == "ClusterRole /faultline-controller")
        .expect("default role");
    assert_eq!(verbs_for(&default_role, "experiments"), ["list"]);
    assert!(verbs_for(&default_role, "halts").is_empty());

    let monitor = the(&rendered, "ServiceMonitor", "faultline-controller");
    assert_eq!(
        str_at(monitor, "metadata.labels.release"),
        Some("prometheus")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["interval"].as_str(),
        Some("30s")
    );

    // Without a file: the shipped schedule, and no schedule ConfigMap (the cluster defaults'
    // is always there).
    let shipped = render(r#"{"schedule": {"enabled": true}}"#, "chaos");
    let pod = at(
        the(&shipped, "Deployment", "faultline-controller"),
        "spec.template.spec",
    )
    .expect("pod spec");
    assert!(args_of(&pod["containers"][0]).contains(&"--shipped-schedule".to_owned()));
    assert!(shipped
        .iter()
        .all(|d| str_at(d, "kind") != Some("ConfigMap")
            || str_at(d, "metadata.name") == Some("faultline-cluster-defaults")));
}

#[test]
fn files_beside_the_schedule_reach_its_directory_so_a_webhook_ca_file_loads() {
    // An internal CA's certificate, as a user would paste it into the values.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
    let schedule = SCHEDULE_FILE.replace(
        "  - name: nightly\n",
        "  - name: nightly\n    webhook: {url: \"https://hooks.internal/faultline\", ca_file: internal-ca.pem}\n",
    );
    let with_files = |files: serde_json::Value| {
        serde_json::json!({"schedule": {"enabled": true, "file": schedule, "files": files}})
            .to_string()
    };

    // The ConfigMap holds the CA beside the schedule, as the pod mounts it, and the real
    // schedule loader reads it from there.
    let rendered = render(
        &with_files(serde_json::json!({"internal-ca.pem": ca_pem})),
        "chaos",
    );
    let data = &the(&rendered, "ConfigMap", "faultline-schedule")["data"];
    assert_eq!(data["internal-ca.pem"].as_str(), Some(ca_pem.as_str()));
    let mounted = tempfile::tempdir().expect("tempdir");
    for (name, text) in data.as_mapping().expect("data") {
        let name = name.as_str().expect("key");
        std::fs::write(mounted.path().join(name), text.as_str().expect("text")).expect("write");
    }
    let loaded =
        faultline_experiments::schedule::load_schedule(&mounted.path().join("schedule.yaml"))
            .unwrap_or_else(|e| panic!("the mounted schedule does not load: {e}"));
    let hook = loaded.suites[0]
        .webhook
        .as_ref()
        .expect("the suite's webhook");
    assert_eq!(
        hook.ca_file.as_deref(),
        Some(mounted.path().join("internal-ca.pem").as_path())
    );

    // Without the file the same schedule does not load: the mount is what makes it work.
    let bare = tempfile::tempdir().expect("tempdir");
    std::fs::write(bare.path().join("schedule.yaml"), &schedule).expect("write");
    let error = faultline_experiments::schedule::load_schedule(&bare.path().join("schedule.yaml"))
        .expect_err("a missing CA file must be a schedule error");
    assert!(error.to_string().contains("internal-ca.pem"), "{error}");

    // A file may not replace the schedule itself, and the values schema says so.
    let error = render_text(
        &with_files(serde_json::json!({"schedule.yaml": "suites: []"})),
        "chaos",
    )
    .expect_err("a file named schedule.yaml must be refused");
    assert!(
        error.contains("invalid propertyName 'schedule.yaml'"),
        "{error}"
    );
}

#[test]
fn the_chart_with_a_schedule_passes_strict_schema_validation() {
    require_validator();
    let values = serde_json::json!({
        "agent": {"exemptCidrs": ["10.96.0.10/32"]},
        "schedule": {"enabled": true, "file": SCHEDULE_FILE},
        "metrics": {"serviceMonitor": {"enabled": true}}
    })
    .to_string();
    // The ServiceMonitor is the Prometheus Operator's kind, outside the Kubernetes schemas.
    let documents: Vec<Value> = render(&values, "chaos")
        .into_iter()
        .filter(|d| str_at(d, "kind") != Some("ServiceMonitor"))
        .collect();
    let mut text = String::new();
    for document in &documents {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(document).expect("yaml"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, text).expect("write the render");
    validate_file(&path).unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn the_cluster_defaults_and_their_partition_mode_reach_the_configmap_the_runner_reads() {
    use faultline_experiments::kubernetes::crd::PartitionMode;
    use faultline_experiments::kubernetes::defaults::parse_defaults;
    let text_of = |rendered: &[Value]| {
        the(rendered, "ConfigMap", "faultline-cluster-defaults")["data"]["kubernetes.yaml"]
            .as_str()
            .expect("kubernetes.yaml")
            .to_owned()
    };
    // By default: nodes, and no workloads (a catalog scenario is then refused saying so).
    let defaults = parse_defaults(&text_of(&render("{}", "faultline-system")), "default")
        .expect("the default section parses as a spec's kubernetes: section");
    assert_eq!(defaults.partition_mode, PartitionMode::Nodes);
    assert!(defaults.workloads.is_empty() && defaults.nats.is_none());

    let values = serde_json::json!({"clusterDefaults": {"kubernetes": {
        "partition_mode": "pods",
        "kill_mode": "crash",
        "workloads": [{"name": "gateway", "namespace": "shop", "selector": {"app": "gateway"}, "port": 8081}],
        "nats": {"namespace": "nats", "selector": {"app.kubernetes.io/name": "nats"}}
    }}})
    .to_string();
    let rendered = render(&values, "chaos");
    let configmap = the(&rendered, "ConfigMap", "faultline-cluster-defaults");
    assert_eq!(str_at(configmap, "metadata.namespace"), Some("chaos"));
    let defaults = parse_defaults(&text_of(&rendered), "rendered").expect("parses");
    assert_eq!(defaults.partition_mode, PartitionMode::Pods);
    assert_eq!(defaults.workloads[0].port, Some(8081));
    assert_eq!(defaults.nats.expect("nats").monitor_port, 8222);
    // The runner may read that one ConfigMap, in the release namespace, and no other.
    let role = the(&rendered, "Role", "faultline-runner");
    assert_eq!(str_at(role, "metadata.namespace"), Some("chaos"));
    assert_eq!(verbs_for(role, "configmaps"), ["get"]);
    assert_eq!(
        role["rules"][0]["resourceNames"][0].as_str(),
        Some("faultline-cluster-defaults")
    );

    let error = render_text(
        r#"{"clusterDefaults": {"kubernetes": {"partition_mode": "everything"}}}"#,
        "faultline-system",
    )
    .expect_err("a partition mode the agents do not know");
    assert!(error.contains("partition_mode"), "{error}");
}
