//! RBAC as the API server's authorizer reads it: a logged request's attributes, a role's rules,
//! and whether a rule allows a request.

use faultline_experiments::kubernetes::memory_api::LoggedRequest;

use super::str_at;

/// A request as the RBAC authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Reads a request's path and method as the API server does (its RequestInfo).
pub fn attributes(request: &LoggedRequest) -> Attributes {
    let (path, query) = request
        .uri
        .split_once('?')
        .unwrap_or((request.uri.as_str(), ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not a resource path: {}", request.uri),
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some((*name).to_owned())),
        [resource, name, subresource] => (
            format!("{resource}/{subresource}"),
            Some((*name).to_owned()),
        ),
        _ => panic!("not a resource path: {}", request.uri),
    };
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    let verb = match (request.method.as_str(), name.is_some()) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        (method, _) => panic!("unexpected method {method} in {}", request.uri),
    };
    Attributes {
        verb: verb.to_owned(),
        group,
        resource,
        namespace,
        name,
    }
}

fn strings(value: Option<&serde_yaml::Value>) -> Vec<String> {
    value
        .and_then(serde_yaml::Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .filter_map(serde_yaml::Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One PolicyRule, and the namespace it is limited to (a Role's) or none (a ClusterRole's).
pub struct Rule {
    pub namespace: Option<String>,
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub names: Vec<String>,
}

pub fn rules_of(role: &serde_yaml::Value) -> Vec<Rule> {
    let namespace = (str_at(role, "kind") == Some("Role")).then(|| {
        str_at(role, "metadata.namespace")
            .unwrap_or("default")
            .to_owned()
    });
    role.get("rules")
        .and_then(serde_yaml::Value::as_sequence)
        .expect("rules")
        .iter()
        .map(|rule| Rule {
            namespace: namespace.clone(),
            groups: strings(rule.get("apiGroups")),
            resources: strings(rule.get("resources")),
            verbs: strings(rule.get("verbs")),
            names: strings(rule.get("resourceNames")),
        })
        .collect()
}

/// Whether `rule` allows `request`, by RBAC's matching (`*` wildcards included).
pub fn allows(rule: &Rule, request: &Attributes) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
    rule.namespace
        .as_ref()
        .is_none_or(|namespace| request.namespace.as_ref() == Some(namespace))
        && any(&rule.groups, &request.group)
        && any(&rule.resources, &request.resource)
        && any(&rule.verbs, &request.verb)
        && (rule.names.is_empty()
            || request
                .name
                .as_ref()
                .is_some_and(|name| rule.names.contains(name)))
}
