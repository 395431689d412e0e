//! The cluster's default `kubernetes:` section: what a spec without one gets on this cluster.
//! Catalog scenarios are written for the lab (`chaosctl --context C run az-failure`, and the
//! scheduled suites), so they carry no selectors; the cluster says once which workloads, NATS
//! pods and partition mode its experiments use, in the ConfigMap
//! [`DEFAULTS_CONFIGMAP`] of Faultline's namespace (key [`DEFAULTS_KEY`], set by the chart's
//! `clusterDefaults.kubernetes` values). `chaosctl` and the runner both read it; a spec with its
//! own section keeps it whole.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use crate::spec::{ExperimentSpec, KubernetesSpec, Target};

/// The ConfigMap that holds the defaults, in Faultline's namespace.
pub const DEFAULTS_CONFIGMAP: &str = "faultline-cluster-defaults";
/// Its key: a `kubernetes:` section as YAML.
pub const DEFAULTS_KEY: &str = "kubernetes.yaml";

/// Where the defaults were read from, for messages.
pub fn defaults_source(namespace: &str) -> String {
    format!("ConfigMap {namespace}/{DEFAULTS_CONFIGMAP} (key {DEFAULTS_KEY})")
}

/// Parses the defaults' text, as strictly as a spec's own section.
///
/// # Errors
/// The text is not a `kubernetes:` section: what is wrong, and where it came from.
pub fn parse_defaults(text: &str, source: &str) -> Result<KubernetesSpec, String> {
    serde_yaml::from_str(text).map_err(|error| {
        format!("{source}: not a valid kubernetes: section: {error}; fix it (chart value clusterDefaults.kubernetes)")
    })
}

/// Reads the defaults from `namespace`: `Ok(None)` when there is no such ConfigMap (or key).
///
/// # Errors
/// The API server did not answer, refused, or the text does not parse.
pub async fn read_defaults(
    client: &kube::Client,
    namespace: &str,
    timeout: Duration,
) -> Result<Option<KubernetesSpec>, String> {
    let source = defaults_source(namespace);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = tokio::time::timeout(timeout, api.get_opt(DEFAULTS_CONFIGMAP))
        .await
        .map_err(|_| format!("reading {source}: the API server did not answer in time"))?
        .map_err(|error| format!("reading {source}: {error}"))?;
    let Some(text) = map.and_then(|m| m.data?.remove(DEFAULTS_KEY)) else {
        return Ok(None);
    };
    parse_defaults(&text, &source).map(Some)
}

/// Gives a cluster spec without a `kubernetes:` section the cluster's `defaults`. A spec with
/// its own section, or one for the lab, is left alone. Returns whether the defaults were used.
///
/// # Errors
/// The spec needs a section and the cluster has no defaults: says exactly what to add.
pub fn apply_defaults(
    spec: &mut ExperimentSpec,
    defaults: Option<&KubernetesSpec>,
    source: &str,
) -> Result<bool, String> {
    if spec.target != Target::Kubernetes || spec.kubernetes.is_some() {
        return Ok(false);
    }
    let Some(defaults) = defaults else {
        return Err(format!(
            "`{}` has no kubernetes: section and this cluster has no defaults ({source} is missing). \
             Either add to the spec (`chaosctl show {}` prints it) a section such as\n\
             kubernetes:\n  workloads:\n    - {{name: gateway, namespace: NS, selector: {{app: gateway}}, port: 8080}}\n  \
             nats: {{namespace: NS, selector: {{app.kubernetes.io/name: nats}}, monitor_port: 8222, client_port: 4222}}\n  \
             partition_mode: nodes\n\
             or give the cluster those defaults once: the chart's clusterDefaults.kubernetes values \
             (or manifests/faultline-cluster-defaults.yaml)",
            spec.name, spec.name
        ));
    };
    spec.kubernetes = Some(defaults.clone());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::crd::PartitionMode;
    use crate::spec::catalog;

    const DEFAULTS: &str = "workloads:\n  - {name: gateway, namespace: shop, selector: {app: gateway}, port: 8081}\nnats: {namespace: nats, selector: {app: nats}}\npartition_mode: both\n";

    fn on_cluster(name: &str) -> ExperimentSpec {
        let mut spec = catalog::spec(name).expect("catalog");
        spec.target = Target::Kubernetes;
        spec
    }

    #[test]
    fn a_catalog_spec_gets_the_cluster_defaults_and_then_validates() {
        let defaults = parse_defaults(DEFAULTS, "test").expect("parses");
        assert_eq!(defaults.partition_mode, PartitionMode::Both);
        for name in ["pod-failure", "az-failure", "nats-failure"] {
            let mut spec = on_cluster(name);
            assert!(spec.validate(name).is_err(), "{name} needs a section");
            assert!(apply_defaults(&mut spec, Some(&defaults), "test").expect("applies"));
            spec.validate(name).expect("valid with the defaults");
            assert_eq!(spec.kubernetes.as_ref(), Some(&defaults));
        }
    }

    #[test]
    fn a_spec_with_its_own_section_or_for_the_lab_keeps_it() {
        let defaults = parse_defaults(DEFAULTS, "test").expect("parses");
        let mut own = on_cluster("pod-failure");
        own.kubernetes = Some(KubernetesSpec::default());
        assert!(!apply_defaults(&mut own, Some(&defaults), "test").expect("ok"));
        assert_eq!(own.kubernetes, Some(KubernetesSpec::default()));
        let mut lab = catalog::spec("pod-failure").expect("catalog");
        assert!(!apply_defaults(&mut lab, None, "test").expect("ok"));
        assert!(lab.kubernetes.is_none());
    }

    #[test]
    fn without_defaults_the_refusal_says_what_to_add() {
        let mut spec = on_cluster("az-failure");
        let error = apply_defaults(&mut spec, None, &defaults_source("faultline-system"))
            .expect_err("refused");
        for needle in [
            "`az-failure` has no kubernetes: section",
            "ConfigMap faultline-system/faultline-cluster-defaults",
            "chaosctl show az-failure",
            "workloads:",
            "nats:",
            "clusterDefaults.kubernetes",
        ] {
            assert!(error.contains(needle), "{needle:?} in {error}");
        }
    }

    #[test]
    fn defaults_with_a_typo_are_refused_naming_the_configmap() {
        let error =
            parse_defaults("partition_mod: pods\n", &defaults_source("fl")).expect_err("typo");
        assert!(
            error.contains("ConfigMap fl/faultline-cluster-defaults")
                && error.contains("partition_mod"),
            "{error}"
        );
    }
}
