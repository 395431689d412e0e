//! The lab topology: zones of nodes, and the services ("pods") that run on them.
//!
//! Addresses come from one private block, [`LAB_BLOCK`] (10.203.0.0/16), with one /24 per zone:
//! zone `i` (0-based, in file order) is 10.203.`i+1`.0/24 and its node `j` gets host `11+j`.
//! The client namespace, where the workload and probes run, is 10.203.0.2. All interfaces carry
//! the /16, so every namespace reaches every other over the lab bridge until a fault says no.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::LabError;

/// The lab's private address block (first two octets).
pub const LAB_BLOCK: [u8; 2] = [10, 203];
/// Prefix length of every lab interface address.
pub const LAB_PREFIX_LEN: u8 = 16;
/// Address of the client namespace.
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
/// What a zone's client namespace is called among the lab's namespaces: `c-<zone>`. The hyphen
/// keeps it apart from node names, which are letters and digits only.
pub fn zone_client_name(zone: &str) -> String {
    format!("c-{zone}")
}

/// Longest node name: node names become veth names (`v-NAME`, at most 15 bytes).
pub const MAX_NODE_NAME: usize = 12;

/// The built-in default: 3 zones × 2 nodes, a 3-node JetStream cluster with one server per
/// zone.
pub const DEFAULT_TOPOLOGY_YAML: &str = include_str!("default-topology.yaml");
/// How the built-in topology is named where a file name would be.
pub const DEFAULT_TOPOLOGY_SOURCE: &str = "<built-in default>";

/// A whole lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Zones in order; the order fixes the address plan.
    pub zones: Vec<Zone>,
    /// Services to run on the nodes.
    #[serde(default)]
    pub services: Vec<Service>,
}

/// One availability zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Zone name, e.g. `a`. Lowercase letters and digits.
    pub name: String,
    /// Node names, unique across the lab. Lowercase letters and digits, at most 12.
    pub nodes: Vec<String>,
}

/// A service: one or more replicas of a command, placed on nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Service name, e.g. `nats`.
    pub name: String,
    /// Number of replicas (numbered 1..=replicas).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Where replicas may run.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub placement: Placement,
    /// Program and arguments. A program without a path is resolved when the lab comes up
    /// (`nats-server` by the lab's choice of NATS server, any other on `PATH`) and recorded as
    /// a full path. Each argument may use the placeholders of [`PLACEHOLDERS`] (listed with
    /// their meaning in docs/topology.md).
    pub command: Vec<String>,
    /// Environment variables for each replica, on top of the agent's own; values may use the
    /// same placeholders as `command`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// How to ask a replica whether it is the primary (leader), for the role selectors
    /// (`replica: primary`, `zone: {of: primary, service: S}`). None: the service has no roles.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_yaml::with::singleton_map"
    )]
    pub role: Option<RoleProbe>,
    /// What the supervisor does when a replica exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How to tell a replica is ready.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub ready: Readiness,
    /// Named ports, for the endpoints that `lab up` prints.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

fn one() -> u32 {
    1
}

/// Where a service's replicas may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// Replica `i` lives in zone `i mod zones`, on any node of that zone.
    #[default]
    SpreadZones,
    /// Any node of this zone.
    Zone(String),
    /// Any of these nodes, in preference order.
    Nodes(Vec<String>),
    /// Any node.
    Anywhere,
}

/// What happens when a replica exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Always restart.
    #[default]
    Always,
    /// Restart unless it exited with status 0.
    OnFailure,
    /// Leave it down.
    Never,
}

/// How to tell a replica is ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Readiness {
    /// Ready as soon as it runs.
    #[default]
    Running,
    /// Ready when this TCP port accepts connections.
    Tcp(u16),
    /// Ready when `GET path` on this port answers 2xx.
    Http {
        /// Port.
        port: u16,
        /// Path, e.g. `/healthz`.
        path: String,
    },
    /// Ready when the NATS monitoring port reports a JetStream meta leader.
    NatsJetstream {
        /// Monitoring port (`-m`).
        monitor_port: u16,
    },
}

/// How to ask each replica of a service for its role. A replica is the primary when its answer,
/// trimmed and lowercased, is `primary` or `leader`; any other answer (`replica`, `follower`,
/// `secondary`, an error) means it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoleProbe {
    /// `GET path` on this port of each replica, from the client namespace; a 2xx body is the
    /// answer.
    Http {
        /// Port.
        port: u16,
        /// Path, e.g. `/role`.
        path: String,
    },
    /// This command, run once per replica in the client namespace with the placeholders
    /// expanded for that replica (e.g. `{node_ip}`); what it prints on standard output is the
    /// answer. It must exit 0 within 5 s.
    Command(Vec<String>),
    /// A NATS JetStream server: the primary is the server that leads `stream` (by default
    /// `$meta`, the meta group), as the monitoring port's `/jsz` says.
    NatsJetstream {
        /// Monitoring port (`-m`).
        monitor_port: u16,
        /// A stream name, or `$meta`.
        #[serde(default = "meta_group")]
        stream: String,
    },
}

fn meta_group() -> String {
    super::jetstream::META.to_owned()
}

/// Whether a role probe's answer says primary.
pub fn says_primary(answer: &str) -> bool {
    matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "primary" | "leader"
    )
}

/// The placeholders a service's `command`, `env` and role command may use, each with what it
/// expands to (docs/topology.md repeats this table).
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("lab", "the lab's name"),
    ("service", "this service's name"),
    ("replica", "this replica's number, from 1"),
    ("index", "this replica's index, from 0 (replica - 1)"),
    ("replicas", "how many replicas the service has"),
    ("node", "the node this replica runs on"),
    ("zone", "that node's zone"),
    ("node_ip", "that node's address"),
    ("data_dir", "this replica's data directory (kept across restarts)"),
    ("bin_dir", "the directory of Faultline's own binaries (e.g. tenant-gateway)"),
    ("topology_dir", "the directory of the topology file, absolute (for scripts shipped next to it)"),
    ("peers:SCHEME:PORT", "the other replicas of this service as SCHEME://IP:PORT, comma-separated"),
    ("peers:PORT", "the other replicas of this service as IP:PORT, comma-separated"),
    ("peer_ips", "the other replicas' addresses, comma-separated"),
    ("members:SCHEME:PORT", "every replica of this service as SERVICEn=SCHEME://IP:PORT, comma-separated (e.g. etcd's --initial-cluster)"),
    ("endpoints:SERVICE:SCHEME:PORT", "every replica of SERVICE as SCHEME://IP:PORT, comma-separated"),
    ("ip:SERVICE:REPLICA", "the address of one replica of SERVICE"),
];

/// One node with its zone and address, resolved from the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Zone name.
    pub zone: String,
    /// Address.
    pub address: Ipv4Addr,
}

/// A zone's client namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneClient {
    /// Its name among the lab's namespaces, `c-<zone>` (the namespace is `fl-<lab>-c-<zone>`).
    pub name: String,
    /// The zone.
    pub zone: String,
    /// Address.
    pub address: Ipv4Addr,
    /// The node whose fate it shares in partitions: its zone's first node. A partition that
    /// splits a zone leaves the zone's clients on that node's side.
    pub anchor: String,
}

impl Topology {
    /// The default topology.
    pub fn default_lab() -> Self {
        Self::parse(DEFAULT_TOPOLOGY_YAML, DEFAULT_TOPOLOGY_SOURCE)
            .expect("default topology is valid")
    }

    /// Parses and validates YAML; errors name the source, line and column.
    pub fn parse(yaml: &str, source: &str) -> Result<Self, LabError> {
        let topology: Topology = serde_yaml::from_str(yaml).map_err(|e| LabError::Topology {
            source_name: source.to_owned(),
            message: crate::describe_yaml_error(&e),
        })?;
        topology.validate().map_err(|message| LabError::Topology {
            source_name: source.to_owned(),
            message,
        })?;
        Ok(topology)
    }

    /// Pure validation: names, sizes, placements and placeholders.
    pub fn validate(&self) -> Result<(), String> {
        if self.zones.is_empty() {
            return Err("a lab needs at least one zone under `zones:`".into());
        }
        if self.zones.len() > 250 {
            return Err("at most 250 zones fit the address plan".into());
        }
        let mut zone_names = BTreeSet::new();
        let mut node_names = BTreeSet::new();
        for zone in &self.zones {
            check_name("zone", &zone.name, 12)?;
            if !zone_names.insert(zone.name.as_str()) {
                return Err(format!("zone `{}` is listed twice", zone.name));
            }
            if zone.nodes.is_empty() {
                return Err(format!("zone `{}` has no nodes", zone.name));
            }
            if zone.nodes.len() > 200 {
                return Err(format!("zone `{}` has more than 200 nodes", zone.name));
            }
            for node in &zone.nodes {
                check_name("node", node, MAX_NODE_NAME)?;
                if matches!(node.as_str(), "sw" | "client") {
                    return Err(format!("node name `{node}` is reserved; pick another"));
                }
                if !node_names.insert(node.as_str()) {
                    return Err(format!("node `{node}` is listed twice"));
                }
            }
        }
        let mut service_names = BTreeSet::new();
        for service in &self.services {
            check_name("service", &service.name, 32)?;
            if !service_names.insert(service.name.as_str()) {
                return Err(format!("service `{}` is listed twice", service.name));
            }
            if service.replicas == 0 || service.replicas > 100 {
                return Err(format!(
                    "service `{}`: replicas must be 1..=100",
                    service.name
                ));
            }
            if service.command.is_empty() {
                return Err(format!("service `{}` has an empty command", service.name));
            }
            match &service.placement {
                Placement::Zone(zone) if !zone_names.contains(zone.as_str()) => {
                    return Err(format!(
                        "service `{}` is placed in unknown zone `{zone}`",
                        service.name
                    ));
                }
                Placement::Nodes(nodes) => {
                    if nodes.is_empty() {
                        return Err(format!("service `{}` lists no nodes", service.name));
                    }
                    if let Some(unknown) = nodes.iter().find(|n| !node_names.contains(n.as_str())) {
                        return Err(format!(
                            "service `{}` is placed on unknown node `{unknown}`",
                            service.name
                        ));
                    }
                }
                _ => {}
            }
        }
        for service in &self.services {
            self.check_service_texts(service)
                .map_err(|e| format!("service `{}`: {e}", service.name))?;
        }
        Ok(())
    }

    /// A service's env names, and the placeholders of its command, env values and role command.
    fn check_service_texts(&self, service: &Service) -> Result<(), String> {
        let role_command = match &service.role {
            Some(RoleProbe::Command(command)) if command.is_empty() => {
                return Err("the role command is empty".into());
            }
            Some(RoleProbe::Command(command)) => command.as_slice(),
            _ => &[],
        };
        for name in service.env.keys() {
            let valid = !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "env name `{name}` is invalid; use letters, digits and `_`, not starting with a digit"
                ));
            }
        }
        let texts = service
            .command
            .iter()
            .chain(service.env.values())
            .chain(role_command);
        for text in texts {
            for placeholder in placeholders(text) {
                check_placeholder(placeholder, self)?;
            }
        }
        Ok(())
    }

    /// Expands `{topology_dir}` in every command, `env` value and role command to `dir` (the
    /// file's directory, absolute), once, when the file is read: the agent and the role probes
    /// run elsewhere, and the recorded topology then says exactly what runs.
    #[must_use]
    pub fn with_topology_dir(mut self, dir: &std::path::Path) -> Self {
        let dir = dir.display().to_string();
        let expand = |text: &mut String| *text = text.replace("{topology_dir}", &dir);
        for service in &mut self.services {
            service.command.iter_mut().for_each(expand);
            service.env.values_mut().for_each(expand);
            if let Some(RoleProbe::Command(command)) = &mut service.role {
                command.iter_mut().for_each(expand);
            }
        }
        self
    }

    /// Every node with its zone and address, in address order.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.zones
            .iter()
            .enumerate()
            .flat_map(|(zone_index, zone)| {
                zone.nodes
                    .iter()
                    .enumerate()
                    .map(move |(node_index, node)| NodeInfo {
                        name: node.clone(),
                        zone: zone.name.clone(),
                        address: Ipv4Addr::new(
                            LAB_BLOCK[0],
                            LAB_BLOCK[1],
                            (zone_index + 1) as u8,
                            (node_index + 11) as u8,
                        ),
                    })
            })
            .collect()
    }

    /// One client namespace per zone, where a `per-zone` workload's clients of that zone stand:
    /// `c-<zone>` at 10.203.`i+1`.2, inside its zone's /24 (nodes start at host 11).
    pub fn zone_clients(&self) -> Vec<ZoneClient> {
        self.zones
            .iter()
            .enumerate()
            .map(|(zone_index, zone)| ZoneClient {
                name: zone_client_name(&zone.name),
                zone: zone.name.clone(),
                address: Ipv4Addr::new(LAB_BLOCK[0], LAB_BLOCK[1], (zone_index + 1) as u8, 2),
                anchor: zone.nodes[0].clone(),
            })
            .collect()
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes().into_iter().find(|node| node.name == name)
    }

    /// A zone by name.
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|zone| zone.name == name)
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }

    /// The nodes a replica may run on, in preference order.
    pub fn eligible_nodes(&self, service: &Service, replica: u32) -> Vec<String> {
        match &service.placement {
            Placement::SpreadZones => {
                let zone = &self.zones[(replica as usize - 1) % self.zones.len()];
                zone.nodes.clone()
            }
            Placement::Zone(name) => self.zone(name).map(|z| z.nodes.clone()).unwrap_or_default(),
            Placement::Nodes(nodes) => nodes.clone(),
            Placement::Anywhere => {
                // Spread replicas: start each replica's preference list at a different node.
                let all: Vec<String> = self.nodes().into_iter().map(|n| n.name).collect();
                let offset = (replica as usize - 1) % all.len();
                all[offset..]
                    .iter()
                    .chain(&all[..offset])
                    .cloned()
                    .collect()
            }
        }
    }
}

/// Checks a zone, node, service or lab name: 1 to `max` lowercase letters or digits, starting
/// with a letter.
pub(crate) fn check_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.as_bytes()[0].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` is invalid: use 1 to {max} lowercase letters or digits, starting with a letter"
        ))
    }
}

/// The `{...}` placeholders of one argument.
pub(crate) fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(inner, _)| inner))
}

fn check_placeholder(placeholder: &str, topology: &Topology) -> Result<(), String> {
    let parts: Vec<&str> = placeholder.split(':').collect();
    let known_service = |service: &str| -> Result<(), String> {
        if topology.service(service).is_some() {
            Ok(())
        } else {
            Err(format!(
                "placeholder `{{{placeholder}}}` names unknown service `{service}`"
            ))
        }
    };
    let port = |port: &str| port.parse::<u16>().is_ok();
    match parts.as_slice() {
        ["lab" | "service" | "replica" | "index" | "replicas" | "node" | "zone" | "node_ip"
        | "data_dir" | "bin_dir" | "peer_ips" | "topology_dir"] => Ok(()),
        ["peers", p] | ["peers" | "members", _, p] if port(p) => Ok(()),
        ["endpoints", service, _scheme, p] if port(p) => known_service(service),
        ["ip", service, replica] => {
            known_service(service)?;
            let count = topology.service(service).map_or(0, |s| s.replicas);
            match replica.parse::<u32>() {
                Ok(r) if (1..=count).contains(&r) => Ok(()),
                _ => Err(format!(
                    "placeholder `{{{placeholder}}}`: service `{service}` has replicas 1 to {count}"
                )),
            }
        }
        _ => Err(format!(
            "unknown placeholder `{{{placeholder}}}`; known: {} (docs/topology.md)",
            PLACEHOLDERS
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_has_three_zones_of_two_and_nats_per_zone() {
        let topology = Topology::default_lab();
        let nodes = topology.nodes();
        assert_eq!(nodes.len(), 6);
        assert_eq!(nodes[0].address, Ipv4Addr::new(10, 203, 1, 11));
        assert_eq!(nodes[5].address, Ipv4Addr::new(10, 203, 3, 12));
        let nats = topology.service("nats").expect("nats");
        assert_eq!(nats.replicas, 3);
        let zones: Vec<_> = (1..=3).map(|r| topology.eligible_nodes(nats, r)).collect();
        assert_eq!(zones[0], vec!["a1", "a2"]);
        assert_eq!(zones[2], vec!["c1", "c2"]);
    }

    #[test]
    fn malformed_yaml_reports_line_and_column() {
        let error =
            Topology::parse("zones:\n  - name: a\n    nodes: [a1\n", "lab.yaml").expect_err("bad");
        let text = error.to_string();
        assert!(text.contains("lab.yaml") && text.contains("line"), "{text}");
        let error =
            Topology::parse("zones:\n  - name: a\n    nodez: [a1]\n", "lab.yaml").expect_err("bad");
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn validation_table() {
        let cases = [
            ("zones: []", "at least one zone"),
            ("zones: [{name: a, nodes: [x1, x1]}]", "listed twice"),
            ("zones: [{name: a, nodes: [client]}]", "reserved"),
            ("zones: [{name: A, nodes: [x1]}]", "invalid"),
            ("zones: [{name: a, nodes: [averyveryverylongname]}]", "invalid"),
            (
                "zones: [{name: a, nodes: [a1]}]\nservices: [{name: s, command: [x], placement: {zone: q}}]",
                "unknown zone `q`",
            ),
            (
                "zones: [{name: a, nodes: [a1]}]\nservices: [{name: s, command: ['{nope}']}]",
                "unknown placeholder",
            ),
            (
                "zones: [{name: a, nodes: [a1]}]\nservices: [{name: s, command: ['{endpoints:db:nats:1}']}]",
                "unknown service `db`",
            ),
            ("zones: [{name: a, nodes: [a1]}]\nservices: [{name: s, command: []}]", "empty command"),
        ];
        for (yaml, expected) in cases {
            let error = Topology::parse(yaml, "t.yaml").expect_err(yaml).to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn topology_dir_is_expanded_when_the_file_is_read() {
        let yaml = "zones:\n  - {name: a, nodes: [a1]}\nservices:\n  - name: s\n    command: [python3, \"{topology_dir}/s.py\", \"{node_ip}\"]\n    env: {HOME_DIR: \"{topology_dir}\"}\n    role: {command: [\"{topology_dir}/role\"]}\n";
        let topology = Topology::parse(yaml, "t.yaml")
            .expect("valid")
            .with_topology_dir(std::path::Path::new("/srv/lab"));
        let service = topology.service("s").expect("s");
        assert_eq!(service.command, ["python3", "/srv/lab/s.py", "{node_ip}"]);
        assert_eq!(service.env["HOME_DIR"], "/srv/lab");
        assert_eq!(
            service.role,
            Some(RoleProbe::Command(vec!["/srv/lab/role".to_owned()]))
        );
    }
}
