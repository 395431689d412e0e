//! The system under test: where the NATS servers and the tenant gateways are, and how to name
//! the node an operation went through. Built from a lab, from a cluster's pods, or from plain
//! URLs for users' own services.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lab::control::LabContext;
use crate::lab::topology::{zone_client_name, Readiness, Service};

use super::clients::{ClientSite, Clients, SiteWithNodes};

use super::WorkloadError;

/// Name of the lab service that implements the HTTP tenant-records contract unless the spec
/// (`workload.services`) or `chaosctl load --service` names others.
pub const GATEWAY_SERVICE: &str = "gateway";

/// One NATS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsServer {
    /// The node it runs on (or its address when not in a lab).
    pub node: String,
    /// Client URL, e.g. `nats://10.203.1.11:4222`.
    pub url: String,
    /// Monitoring endpoint (`-m`), when known.
    pub monitor: Option<SocketAddr>,
}

/// One HTTP endpoint of the tenant-records contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// The node it runs on (or its address when not in a lab).
    pub node: String,
    /// Address.
    pub addr: SocketAddr,
}

/// Where the load goes.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// NATS servers.
    pub nats: Vec<NatsServer>,
    /// Tenant gateways.
    pub gateways: Vec<HttpEndpoint>,
    /// The lab's fault ledger, to record fault windows and show active faults.
    pub ledger_dir: Option<PathBuf>,
    /// Server address to node name.
    pub node_of_host: Arc<HashMap<String, String>>,
    lab: Option<LabContext>,
    /// The lab services whose replicas serve the HTTP contract.
    http_services: Vec<String>,
    /// Whether the endpoints come from the lab's topology (and follow its replicas when they
    /// move); false for URLs given by the user, loaded from inside a lab.
    from_topology: bool,
}

fn nats_ports(service: &Service) -> Option<(u16, Option<u16>)> {
    let monitor = match &service.ready {
        Readiness::NatsJetstream { monitor_port } => Some(*monitor_port),
        _ => service.ports.get("monitor").copied(),
    };
    let is_nats = matches!(service.ready, Readiness::NatsJetstream { .. });
    is_nats.then(|| {
        (
            service.ports.get("client").copied().unwrap_or(4222),
            monitor,
        )
    })
}

fn gateway_port(service: &Service) -> u16 {
    service
        .ports
        .get("http")
        .copied()
        .or(match &service.ready {
            Readiness::Http { port, .. } => Some(*port),
            _ => None,
        })
        .unwrap_or(8080)
}

impl Target {
    /// The target of a lab: its NATS servers (services whose readiness is
    /// `nats_jetstream`), the replicas of `http_services` (the HTTP contract's endpoints), and
    /// its fault ledger, placed where the agent last put them. A named service the topology
    /// lacks is an error that lists the ones it has.
    pub fn from_lab(ctx: &LabContext, http_services: &[String]) -> Result<Self, WorkloadError> {
        for name in http_services {
            if ctx.topology.service(name).is_none() {
                return Err(WorkloadError::Config(format!(
                    "lab {} has no service `{name}` to send the http load to; its services: {}; \
                     name the services that serve the HTTP contract with workload.services in \
                     the spec or --service on chaosctl load",
                    ctx.paths.name,
                    ctx.topology
                        .services
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let node_of_host = ctx
            .topology
            .nodes()
            .into_iter()
            .map(|n| (n.address.to_string(), n.name))
            .collect();
        let mut target = Self {
            nats: Vec::new(),
            gateways: Vec::new(),
            ledger_dir: Some(ctx.paths.ledger_dir()),
            node_of_host: Arc::new(node_of_host),
            lab: Some(ctx.clone()),
            http_services: http_services.to_vec(),
            from_topology: true,
        };
        target.refresh()?;
        Ok(target)
    }

    /// These URLs loaded from inside the lab `ctx`: the load runs in its client namespace,
    /// records its fault windows from its ledger, and names an endpoint whose address is a
    /// lab node's by that node (as the fault windows do). The endpoints stay the given ones.
    #[must_use]
    pub fn in_lab(mut self, ctx: &LabContext) -> Self {
        let node_of: HashMap<String, String> = ctx
            .topology
            .nodes()
            .into_iter()
            .map(|n| (n.address.to_string(), n.name))
            .collect();
        for server in &mut self.nats {
            let host = server.node.split(':').next().unwrap_or_default();
            if let Some(node) = node_of.get(host) {
                server.node.clone_from(node);
            }
        }
        for endpoint in &mut self.gateways {
            if let Some(node) = node_of.get(&endpoint.addr.ip().to_string()) {
                endpoint.node.clone_from(node);
            }
        }
        self.node_of_host = Arc::new(node_of);
        self.ledger_dir = Some(ctx.paths.ledger_dir());
        self.lab = Some(ctx.clone());
        self.from_topology = false;
        self
    }

    /// Whether the endpoints are the lab topology's own (not URLs given by the user).
    pub fn from_topology(&self) -> bool {
        self.from_topology
    }

    /// A target from URLs: `nats://host:port` servers and `http://host:port` gateways. The node
    /// of each is its `host:port`. Monitoring endpoints are assumed on port 8222 of each NATS
    /// host.
    pub fn from_urls(nats: &[String], gateways: &[String]) -> Result<Self, WorkloadError> {
        let mut target = Self::default();
        for url in nats {
            let hostport = url.strip_prefix("nats://").unwrap_or(url);
            let addr: SocketAddr = hostport.parse().map_err(|_| {
                WorkloadError::Config(format!("NATS URL `{url}` must be nats://IP:PORT"))
            })?;
            target.nats.push(NatsServer {
                node: addr.to_string(),
                url: format!("nats://{addr}"),
                monitor: Some(SocketAddr::new(addr.ip(), 8222)),
            });
        }
        for url in gateways {
            let hostport = url
                .strip_prefix("http://")
                .unwrap_or(url)
                .trim_end_matches('/');
            let addr: SocketAddr = hostport.parse().map_err(|_| {
                WorkloadError::Config(format!("gateway URL `{url}` must be http://IP:PORT"))
            })?;
            target.gateways.push(HttpEndpoint {
                node: addr.to_string(),
                addr,
            });
        }
        let map = target
            .nats
            .iter()
            .map(|s| {
                (
                    s.url
                        .trim_start_matches("nats://")
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                    s.node.clone(),
                )
            })
            .collect();
        target.node_of_host = Arc::new(map);
        Ok(target)
    }

    /// A target from servers found elsewhere (a cluster's pods): `node_of_host` maps each
    /// server's address (as its INFO gives it) to the node it runs on, so operations are
    /// attributed to nodes as fault windows name them.
    pub fn from_servers(
        nats: Vec<NatsServer>,
        gateways: Vec<HttpEndpoint>,
        node_of_host: HashMap<String, String>,
    ) -> Self {
        Self {
            nats,
            gateways,
            ledger_dir: None,
            node_of_host: Arc::new(node_of_host),
            lab: None,
            http_services: Vec::new(),
            from_topology: false,
        }
    }

    /// Whether the target is a lab.
    pub fn lab(&self) -> Option<&LabContext> {
        self.lab.as_ref()
    }

    /// Re-reads where the lab's replicas run now (they move when a node is drained). A no-op
    /// outside a lab.
    pub fn refresh(&mut self) -> Result<(), WorkloadError> {
        let Some(ctx) = self.lab.as_ref().filter(|_| self.from_topology) else {
            return Ok(());
        };
        let placements = ctx.services()?;
        let address = |node: &str| ctx.topology.node(node).map(|n| n.address);
        let mut nats = Vec::new();
        let mut gateways = Vec::new();
        for service in &ctx.topology.services {
            for replica in 1..=service.replicas {
                let node = placements
                    .replicas
                    .iter()
                    .find(|r| r.service == service.name && r.replica == replica)
                    .map(|r| r.node.clone())
                    .or_else(|| {
                        ctx.topology
                            .eligible_nodes(service, replica)
                            .first()
                            .cloned()
                    });
                let Some(node) = node else { continue };
                let Some(ip) = address(&node) else { continue };
                if let Some((client, monitor)) = nats_ports(service) {
                    nats.push(NatsServer {
                        url: format!("nats://{ip}:{client}"),
                        monitor: monitor.map(|m| SocketAddr::from((ip, m))),
                        node: node.clone(),
                    });
                } else if self.http_services.contains(&service.name) {
                    gateways.push(HttpEndpoint {
                        node: node.clone(),
                        addr: SocketAddr::from((ip, gateway_port(service))),
                    });
                }
            }
        }
        self.nats = nats;
        self.gateways = gateways;
        Ok(())
    }

    /// The NATS client URLs, rotated so that connection `k` prefers server `k mod n`.
    pub fn nats_urls_for(&self, k: usize) -> Vec<String> {
        let n = self.nats.len();
        (0..n).map(|i| self.nats[(k + i) % n].url.clone()).collect()
    }

    /// The NATS client URLs for connection `k` of a zone's clients: the servers on `near`
    /// (the zone's nodes) first, then the others, each group rotated by `k` so that a zone's
    /// connections spread over its servers. A zone's clients reach the rest of the cluster
    /// only when their own servers fail, as a multi-AZ application's would.
    pub fn nats_urls_near(&self, near: &[String], k: usize) -> Vec<String> {
        let (mut own, mut others): (Vec<&NatsServer>, Vec<&NatsServer>) =
            self.nats.iter().partition(|s| near.contains(&s.node));
        for group in [&mut own, &mut others] {
            if !group.is_empty() {
                let by = k % group.len();
                group.rotate_left(by);
            }
        }
        own.into_iter()
            .chain(others)
            .map(|s| s.url.clone())
            .collect()
    }

    /// The client sites of `clients`, each with its zone's nodes: none for `majority` (the
    /// load runs in the lab's client namespace), one per zone for `per-zone`, one for
    /// `zone: X`.
    ///
    /// # Errors
    /// Not a lab, an unknown zone, or a zone client namespace that cannot be entered.
    pub fn client_sites(&self, clients: &Clients) -> Result<Vec<SiteWithNodes>, WorkloadError> {
        if *clients == Clients::Majority {
            return Ok(Vec::new());
        }
        let Some(ctx) = &self.lab else {
            return Err(WorkloadError::Config(format!(
                "--clients {} needs a lab (its zones' client namespaces); with --nats or --gateway URLs the load runs where chaosctl runs",
                clients.describe()
            )));
        };
        let zones: Vec<&crate::lab::topology::Zone> = match clients {
            Clients::Zone(name) => vec![ctx.topology.zone(name).ok_or_else(|| {
                WorkloadError::Config(format!(
                    "--clients zone:{name}: lab `{}` has no zone `{name}`; its zones: {}",
                    ctx.paths.name,
                    ctx.topology
                        .zones
                        .iter()
                        .map(|z| z.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?],
            _ => ctx.topology.zones.iter().collect(),
        };
        zones
            .into_iter()
            .map(|zone| {
                let netns = ctx.paths.netns(&zone_client_name(&zone.name));
                let site = ClientSite::start(&ctx.netns_dir, &netns, &zone.name)?;
                Ok((Arc::new(site), zone.nodes.clone()))
            })
            .collect()
    }

    /// The network namespace directory and client namespace of the lab, if any.
    pub fn client_netns(&self) -> Option<(PathBuf, String)> {
        self.lab
            .as_ref()
            .map(|ctx| (ctx.netns_dir.clone(), ctx.paths.netns("client")))
    }
}

/// Orders NATS URLs so that servers in `near`'s /24 (its zone, in the lab's address plan) come
/// first, keeping the given order otherwise.
pub fn prefer_near(urls: &[String], near: Option<Ipv4Addr>) -> Vec<String> {
    let Some(near) = near else {
        return urls.to_vec();
    };
    let zone = |url: &str| -> Option<[u8; 3]> {
        let host = url.trim_start_matches("nats://").split(':').next()?;
        let ip: Ipv4Addr = host.parse().ok()?;
        let o = ip.octets();
        Some([o[0], o[1], o[2]])
    };
    let mine = {
        let o = near.octets();
        [o[0], o[1], o[2]]
    };
    let (mut close, far): (Vec<String>, Vec<String>) =
        urls.iter().cloned().partition(|u| zone(u) == Some(mine));
    close.extend(far);
    close
}

/// Moves the calling thread into the network namespace `netns_dir/name`. Threads it creates
/// afterwards (a tokio runtime's workers) are born there too; that is how a whole process
/// enters the lab's client namespace once, before it builds its runtime. Needs root.
pub fn enter_netns(netns_dir: &Path, name: &str) -> Result<(), WorkloadError> {
    let path = netns_dir.join(name);
    let file = std::fs::File::open(&path).map_err(|error| WorkloadError::Netns {
        netns: name.to_owned(),
        error,
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        WorkloadError::Netns {
            netns: name.to_owned(),
            error: std::io::Error::from(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::Topology;
    use crate::workload::WorkloadConfig;

    #[test]
    fn prefer_near_puts_the_zone_first() {
        let urls: Vec<String> = [
            "nats://10.203.1.11:4222",
            "nats://10.203.2.11:4222",
            "nats://10.203.3.11:4222",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            prefer_near(&urls, Some(Ipv4Addr::new(10, 203, 2, 12)))[0],
            urls[1]
        );
        assert_eq!(
            prefer_near(&urls, Some(Ipv4Addr::new(10, 203, 3, 11)))[0],
            urls[2]
        );
        assert_eq!(prefer_near(&urls, None), urls);
        assert_eq!(prefer_near(&urls, Some(Ipv4Addr::new(10, 9, 9, 9))), urls);
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        let t = Target::from_urls(
            &["nats://10.203.1.11:4222".into()],
            &["http://10.203.1.11:8080/".into()],
        )
        .expect("ok");
        assert_eq!(
            t.nats[0].monitor,
            Some("10.203.1.11:8222".parse().expect("addr"))
        );
        assert_eq!(
            t.gateways[0].addr,
            "10.203.1.11:8080".parse().expect("addr")
        );
        assert_eq!(
            t.node_of_host.get("10.203.1.11").map(String::as_str),
            Some("10.203.1.11:4222")
        );
        let e = Target::from_urls(&["nats://nowhere".into()], &[]).expect_err("bad");
        assert!(e.to_string().contains("nats://nowhere"), "{e}");
        assert_eq!(Target::default().nats_urls_for(3), Vec::<String>::new());
    }

    #[test]
    fn a_zones_connections_list_its_own_servers_first() {
        let server = |node: &str| NatsServer {
            node: node.to_owned(),
            url: format!("nats://{node}:4222"),
            monitor: None,
        };
        let target = Target {
            nats: ["a1", "b1", "b2", "c1"].map(server).to_vec(),
            ..Target::default()
        };
        let near = |nodes: &[&str]| nodes.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cases: [(&[&str], usize, [&str; 4]); 5] = [
            (&["a1", "a2"], 0, ["a1", "b1", "b2", "c1"]),
            (&["a1", "a2"], 1, ["a1", "b2", "c1", "b1"]),
            (&["b1", "b2"], 1, ["b2", "b1", "c1", "a1"]),
            (&["c1", "c2"], 0, ["c1", "a1", "b1", "b2"]),
            // A zone without a server of its own: every server is another zone's.
            (&["d1"], 2, ["b2", "c1", "a1", "b1"]),
        ];
        for (zone, k, expected) in cases {
            let expected: Vec<String> = expected
                .iter()
                .map(|n| format!("nats://{n}:4222"))
                .collect();
            assert_eq!(
                target.nats_urls_near(&near(zone), k),
                expected,
                "{zone:?} k={k}"
            );
        }
    }

    #[test]
    fn the_default_lab_has_nats_and_gateway_services() {
        let topology = Topology::default_lab();
        assert_eq!(
            WorkloadConfig::default().http_services,
            [GATEWAY_SERVICE],
            "the default http load goes to the built-in gateway"
        );
        let nats = topology.services.iter().filter_map(nats_ports).count();
        assert_eq!(nats, 1);
        let gateway = topology.service(GATEWAY_SERVICE).expect("gateway service");
        assert_eq!(gateway.replicas, 3);
        assert_eq!(gateway_port(gateway), 8080);
    }
}
