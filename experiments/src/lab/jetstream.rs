//! What the lab's JetStream cluster says about itself, read through the NATS monitoring port
//! from the client namespace: which server is which replica, which servers hold a stream, who
//! leads. The quorum-loss fault uses it to choose a majority of a stream's peers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::control::LabContext;
use super::probe::{ask_all, http_get, ASK_AT_ONCE};
use super::topology::Readiness;
use super::LabError;

/// The stream name that stands for the JetStream meta group.
pub const META: &str = "$meta";
/// The selector that stands for every stream.
pub const ALL_STREAMS: &str = "tenants";

/// One JetStream server of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Its `server_name`.
    pub name: String,
    /// The lab replica, e.g. `nats/2`.
    pub replica: String,
    /// The node it runs on.
    pub node: String,
}

/// Where one stream (or the meta group) lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Stream name, or [`META`].
    pub stream: String,
    /// The leader's server name, if there is one.
    pub leader: Option<String>,
    /// Every peer's server name, leader included, sorted.
    pub peers: Vec<String>,
}

impl Placement {
    /// A majority of the peers, the leader first: the smallest set whose loss stops the group.
    pub fn majority(&self) -> Vec<String> {
        let needed = self.peers.len() / 2 + 1;
        let leader = self.leader.iter().filter(|l| self.peers.contains(l));
        let others = self
            .peers
            .iter()
            .filter(|p| Some(*p) != self.leader.as_ref());
        leader.chain(others).take(needed).cloned().collect()
    }
}

impl LabContext {
    /// The service that runs JetStream (the one with a `nats_jetstream` readiness check) and
    /// its monitoring port.
    pub fn jetstream_service(&self) -> Result<(String, u16), LabError> {
        self.topology
            .services
            .iter()
            .find_map(|s| match s.ready {
                Readiness::NatsJetstream { monitor_port } => Some((s.name.clone(), monitor_port)),
                _ => None,
            })
            .ok_or_else(|| LabError::Unknown {
                lab: self.paths.name.clone(),
                what: "service",
                name: "JetStream".to_owned(),
                known: "no service has a `nats_jetstream` readiness check in this topology"
                    .to_owned(),
            })
    }

    fn monitor_json(&self, node: &str, port: u16, path: &str) -> Option<serde_json::Value> {
        let address = self.topology.node(node)?.address;
        let (status, body) = http_get(
            &self.netns_dir,
            &self.paths.netns("client"),
            address,
            port,
            path,
        )?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Every reachable JetStream server, by asking each replica's `/varz`, in the order of
    /// `services.json`.
    pub fn jetstream_servers(&self) -> Result<Vec<Server>, LabError> {
        self.jetstream_servers_asking(ASK_AT_ONCE)
    }

    /// [`Self::jetstream_servers`], asking `at_once` replicas at a time.
    pub(crate) fn jetstream_servers_asking(&self, at_once: usize) -> Result<Vec<Server>, LabError> {
        let (service, port) = self.jetstream_service()?;
        let replicas: Vec<_> = self
            .services()?
            .replicas
            .into_iter()
            .filter(|r| r.service == service && r.pid.is_some())
            .collect();
        let names = ask_all(&replicas, at_once, |replica| {
            self.monitor_json(&replica.node, port, "/varz")
                .and_then(|v| v.get("server_name")?.as_str().map(str::to_owned))
        });
        Ok(replicas
            .into_iter()
            .zip(names)
            .filter_map(|(replica, name)| {
                Some(Server {
                    name: name?,
                    replica: replica.key(),
                    node: replica.node,
                })
            })
            .collect())
    }

    /// Where `stream` lives: [`META`] for the meta group, [`ALL_STREAMS`] for every stream, or
    /// one stream's name. Asks every server and merges what they say.
    pub fn jetstream_placements(&self, stream: &str) -> Result<Vec<Placement>, LabError> {
        let servers = self.jetstream_servers()?;
        self.jetstream_placements_among(&servers, stream, ASK_AT_ONCE)
    }

    /// [`Self::jetstream_placements`] as `servers` say it, asking `at_once` of them at a time.
    /// Their answers are merged in the servers' order, as if asked one after another: the
    /// first leader reported wins.
    pub(crate) fn jetstream_placements_among(
        &self,
        servers: &[Server],
        stream: &str,
        at_once: usize,
    ) -> Result<Vec<Placement>, LabError> {
        let (_, port) = self.jetstream_service()?;
        if stream == META {
            let leader = ask_all(servers, at_once, |s| {
                self.monitor_json(&s.node, port, "/jsz")
                    .and_then(|v| meta_leader(&v))
            })
            .into_iter()
            .flatten()
            .next();
            let mut peers: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
            peers.sort();
            return Ok(vec![Placement {
                stream: META.to_owned(),
                leader,
                peers,
            }]);
        }
        let answers = ask_all(servers, at_once, |server| {
            self.monitor_json(&server.node, port, "/jsz?streams=true")
        });
        let mut merged: BTreeMap<String, Placement> = BTreeMap::new();
        for (server, jsz) in servers.iter().zip(answers) {
            let Some(jsz) = jsz else { continue };
            merge_jsz(&mut merged, &server.name, &jsz, stream);
        }
        if merged.is_empty() {
            return Err(LabError::Unknown {
                lab: self.paths.name.clone(),
                what: "stream",
                name: stream.to_owned(),
                known: "no JetStream server reports it; create the streams first (the workload does) or use `$meta`".to_owned(),
            });
        }
        Ok(merged.into_values().collect())
    }
}

/// The meta group's leader in a server's `/jsz` answer.
pub fn meta_leader(jsz: &serde_json::Value) -> Option<String> {
    jsz.get("meta_cluster")?
        .get("leader")?
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Folds what server `server_name` says in its `/jsz?streams=true` answer into `merged`: for
/// each stream (every stream for [`ALL_STREAMS`], else only `stream`), its peers (the server
/// itself, its replicas and the leader) and the first leader reported. Pure.
pub fn merge_jsz(
    merged: &mut BTreeMap<String, Placement>,
    server_name: &str,
    jsz: &serde_json::Value,
    stream: &str,
) {
    let details = jsz
        .get("account_details")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .flat_map(|account| {
            account
                .get("stream_detail")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
        });
    for detail in details {
        let Some(name) = detail.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        if stream != ALL_STREAMS && name != stream {
            continue;
        }
        let cluster = detail.get("cluster");
        let leader = cluster
            .and_then(|c| c.get("leader")?.as_str())
            .filter(|l| !l.is_empty());
        let mut peers: Vec<String> = cluster
            .and_then(|c| c.get("replicas")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.get("name")?.as_str().map(str::to_owned))
            .chain(leader.map(str::to_owned))
            .chain(std::iter::once(server_name.to_owned()))
            .collect();
        peers.sort();
        peers.dedup();
        let entry = merged.entry(name.to_owned()).or_insert_with(|| Placement {
            stream: name.to_owned(),
            leader: None,
            peers: vec![],
        });
        if entry.leader.is_none() {
            entry.leader = leader.map(str::to_owned);
        }
        entry.peers.extend(peers);
        entry.peers.sort();
        entry.peers.dedup();
    }
}

/// The peer set shared by the most placements, to attack as one group.
pub fn most_common_group(placements: &[Placement]) -> Option<&Placement> {
    let mut counts: BTreeMap<&[String], usize> = BTreeMap::new();
    for placement in placements {
        *counts.entry(placement.peers.as_slice()).or_default() += 1;
    }
    let (peers, _) = counts
        .into_iter()
        .max_by_key(|(peers, count)| (*count, peers.len()))?;
    placements.iter().find(|p| p.peers.as_slice() == peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(leader: Option<&str>, peers: &[&str]) -> Placement {
        Placement {
            stream: "s".into(),
            leader: leader.map(str::to_owned),
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn majority_takes_the_leader_first() {
        let cases = [
            (Some("n2"), vec!["n1", "n2", "n3"], vec!["n2", "n1"]),
            (None, vec!["n1", "n2", "n3"], vec!["n1", "n2"]),
            (
                Some("n3"),
                vec!["n1", "n2", "n3", "n4", "n5"],
                vec!["n3", "n1", "n2"],
            ),
            (Some("n1"), vec!["n1"], vec!["n1"]),
        ];
        for (leader, peers, expected) in cases {
            assert_eq!(
                placement(leader, &peers).majority(),
                expected,
                "{leader:?} {peers:?}"
            );
        }
    }

    #[test]
    fn most_common_group_prefers_the_group_holding_most_streams() {
        let placements = [
            placement(Some("n1"), &["n1"]),
            placement(Some("n2"), &["n2"]),
            placement(Some("n2"), &["n2"]),
        ];
        assert_eq!(
            most_common_group(&placements).expect("group").peers,
            vec!["n2".to_owned()]
        );
        assert!(most_common_group(&[]).is_none());
    }
}
