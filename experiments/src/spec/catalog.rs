//! The built-in scenarios (the plan's section 6, T6.1–T6.6), each a spec runnable on the default
//! lab with one command.

use super::{ExperimentSpec, SpecError};

/// Name and YAML of every built-in scenario, in plan order.
pub const CATALOG: [(&str, &str); 6] = [
    ("pod-failure", include_str!("catalog/pod-failure.yaml")),
    ("node-failure", include_str!("catalog/node-failure.yaml")),
    ("az-failure", include_str!("catalog/az-failure.yaml")),
    ("nats-failure", include_str!("catalog/nats-failure.yaml")),
    (
        "gateway-failure",
        include_str!("catalog/gateway-failure.yaml"),
    ),
    (
        "network-partition",
        include_str!("catalog/network-partition.yaml"),
    ),
];

/// ` (did you mean `NAME`?)` for a near miss of a built-in scenario's name, else nothing.
pub fn did_you_mean(name: &str) -> String {
    let names: Vec<&str> = CATALOG.iter().map(|(n, _)| *n).collect();
    crate::closest(name, &names)
        .map_or_else(String::new, |best| format!(" (did you mean `{best}`?)"))
}

/// The YAML of a built-in scenario.
pub fn yaml(name: &str) -> Result<&'static str, SpecError> {
    CATALOG
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, yaml)| *yaml)
        .ok_or_else(|| SpecError::UnknownScenario(name.to_owned()))
}

/// A built-in scenario, parsed.
pub fn spec(name: &str) -> Result<ExperimentSpec, SpecError> {
    ExperimentSpec::parse(yaml(name)?, &format!("catalog:{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_parses_validates_and_is_named_after_itself() {
        for (name, _) in CATALOG {
            let spec = spec(name).expect(name);
            spec.validate(name).expect(name);
            assert_eq!(spec.name, name);
            assert!(
                spec.plan_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("T6.")),
                "{name}"
            );
        }
        assert!(matches!(spec("nope"), Err(SpecError::UnknownScenario(_))));
    }
}
