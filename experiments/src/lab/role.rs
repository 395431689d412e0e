//! Which replica of a service is its primary (leader), asked of the replicas themselves at the
//! moment a role selector is resolved: the topology's role probe per service
//! ([`RoleProbe`]), run from the client namespace. NATS JetStream is one kind of probe (the
//! server that leads a stream or the meta group), not a special case.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::agent::render_arg;
use super::control::LabContext;
use super::jetstream::most_common_group;
use super::probe::{ask_all, http_get, ASK_AT_ONCE};
use super::topology::{says_primary, RoleProbe};
use super::LabError;

/// How long one role command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to keep asking until exactly one replica says primary (an election may be under
/// way when the selector is resolved).
const SETTLE: Duration = Duration::from_secs(10);

/// The replica chosen as a service's primary, and what every replica answered: recorded with
/// the fault so a report says whom it hit and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleChoice {
    /// Service name.
    pub service: String,
    /// The primary's replica number.
    pub replica: u32,
    /// The node it ran on when asked.
    pub node: String,
    /// That node's zone.
    pub zone: String,
    /// Each running replica's answer, by `service/replica` (errors as `error: ...`).
    pub answers: BTreeMap<String, String>,
}

/// What a role selector took from the primary: its zone, its node, or the replica itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryPlace {
    /// The primary's zone.
    Zone,
    /// The primary's node.
    Node,
    /// The primary replica.
    Replica,
}

impl RoleChoice {
    /// What was chosen and why, for people and the record, e.g. `zone of primary of etcd = b
    /// (etcd/2 on b1 said leader; etcd/1: follower, etcd/3: follower)`.
    pub fn sentence(&self, place: PrimaryPlace) -> String {
        let key = format!("{}/{}", self.service, self.replica);
        let said = self.answers.get(&key).map_or("primary", String::as_str);
        let others = self
            .answers
            .iter()
            .filter(|(replica, _)| **replica != key)
            .map(|(replica, answer)| format!("{replica}: {answer}"))
            .collect::<Vec<_>>();
        let why = if others.is_empty() {
            format!("{key} on {} said {said}", self.node)
        } else {
            format!("{key} on {} said {said}; {}", self.node, others.join(", "))
        };
        match place {
            PrimaryPlace::Zone => format!(
                "zone of primary of {} = {} ({why})",
                self.service, self.zone
            ),
            PrimaryPlace::Node => format!(
                "node of primary of {} = {} ({why})",
                self.service, self.node
            ),
            PrimaryPlace::Replica => format!(
                "primary of {} = replica {} ({why})",
                self.service, self.replica
            ),
        }
    }
}

impl LabContext {
    /// Asks every running replica of `service` for its role until exactly one says primary,
    /// up to [`ASK_AT_ONCE`] replicas at once.
    ///
    /// # Errors
    /// The service is unknown or has no role probe; no replica, or more than one, said primary
    /// within 10 s (the error lists every answer).
    pub fn primary_of(&self, service: &str) -> Result<RoleChoice, LabError> {
        self.primary_of_asking(service, ASK_AT_ONCE)
    }

    /// [`Self::primary_of`], asking `at_once` replicas at a time; 1 asks them one after
    /// another. The choice and the answers recorded do not depend on it.
    ///
    /// # Errors
    /// As [`Self::primary_of`].
    pub fn primary_of_asking(&self, service: &str, at_once: usize) -> Result<RoleChoice, LabError> {
        let unknown = |known: String| LabError::Unknown {
            lab: self.paths.name.clone(),
            what: "service",
            name: service.to_owned(),
            known,
        };
        let spec = self.topology.service(service).ok_or_else(|| {
            unknown(
                self.topology
                    .services
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        let Some(probe) = &spec.role else {
            return Err(LabError::Role {
                lab: self.paths.name.clone(),
                service: service.to_owned(),
                message: "it has no role probe; add `role:` to the service in the topology (docs/topology.md)".to_owned(),
            });
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let answers = self.ask_roles(service, probe, at_once)?;
            if let Some(choice) = self.only_primary(service, &answers) {
                return Ok(choice);
            }
            if Instant::now() >= deadline {
                let primaries = answers.iter().filter(|(_, _, a)| says_primary(a)).count();
                let listed = answers
                    .iter()
                    .map(|(r, _, a)| format!("{service}/{r}: {a}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(LabError::Role {
                    lab: self.paths.name.clone(),
                    service: service.to_owned(),
                    message: format!(
                        "{} replicas said primary after {} s of asking, not exactly one ({}); check the role probe and that the service has elected a primary",
                        primaries,
                        SETTLE.as_secs(),
                        if listed.is_empty() { "no replica runs".to_owned() } else { listed }
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The primary by `probe` (which need not be the service's own), asked once: `None` when
    /// not exactly one replica says primary. A quorum loss asks its stream's leader this way.
    ///
    /// # Errors
    /// The lab's state cannot be read.
    pub fn primary_now(
        &self,
        service: &str,
        probe: &RoleProbe,
    ) -> Result<Option<RoleChoice>, LabError> {
        let answers = self.ask_roles(service, probe, ASK_AT_ONCE)?;
        Ok(self.only_primary(service, &answers))
    }

    /// The choice when exactly one of `answers` says primary, with every replica's answer.
    fn only_primary(&self, service: &str, answers: &[(u32, String, String)]) -> Option<RoleChoice> {
        let mut primaries = answers.iter().filter(|(_, _, answer)| says_primary(answer));
        let (Some((replica, node, _)), None) = (primaries.next(), primaries.next()) else {
            return None;
        };
        Some(RoleChoice {
            service: service.to_owned(),
            replica: *replica,
            zone: self.topology.node(node).map(|n| n.zone).unwrap_or_default(),
            node: node.clone(),
            answers: answers
                .iter()
                .map(|(r, _, a)| (format!("{service}/{r}"), a.clone()))
                .collect(),
        })
    }

    /// Each running replica's answer: `(replica, node, answer)`, in replica order, asking
    /// `at_once` replicas at a time.
    fn ask_roles(
        &self,
        service: &str,
        probe: &RoleProbe,
        at_once: usize,
    ) -> Result<Vec<(u32, String, String)>, LabError> {
        let state = self.services()?;
        let mut running: Vec<_> = state
            .replicas
            .iter()
            .filter(|r| r.service == service && r.pid.is_some())
            .collect();
        running.sort_by_key(|r| r.replica);
        let jetstream_leader = match probe {
            // For `tenants` (every tenant stream), the leader of the peer group most streams
            // share: the group a quorum loss attacks.
            RoleProbe::NatsJetstream { stream, .. } => self
                .jetstream_servers_asking(at_once)
                .ok()
                .and_then(|servers| {
                    let placements = self
                        .jetstream_placements_among(&servers, stream, at_once)
                        .ok()?;
                    let leader = most_common_group(&placements)?.leader.clone()?;
                    servers.into_iter().find(|s| s.name == leader)
                }),
            _ => None,
        };
        let placements: BTreeMap<(String, u32), String> = state
            .replicas
            .iter()
            .map(|r| ((r.service.clone(), r.replica), r.node.clone()))
            .collect();
        let client = self.paths.netns("client");
        let answers = ask_all(&running, at_once, |replica| {
            let address = self
                .topology
                .node(&replica.node)
                .map(|n| n.address)
                .ok_or_else(|| LabError::Unknown {
                    lab: self.paths.name.clone(),
                    what: "node",
                    name: replica.node.clone(),
                    known: "the topology's nodes".to_owned(),
                })?;
            let answer = match probe {
                RoleProbe::Http { port, path } => {
                    match http_get(&self.netns_dir, &client, address, *port, path) {
                        Some((status, body)) if (200..300).contains(&status) => {
                            body.trim().to_owned()
                        }
                        Some((status, _)) => format!("error: GET {path} answered {status}"),
                        None => format!("error: GET {path} failed"),
                    }
                }
                RoleProbe::Command(command) => {
                    let spec = self.topology.service(service).expect("checked above");
                    let args: Vec<String> = command
                        .iter()
                        .map(|arg| {
                            render_arg(
                                arg,
                                self,
                                &self.topology,
                                spec,
                                replica.replica,
                                &replica.node,
                                &placements,
                            )
                        })
                        .collect();
                    self.run_role_command(&args, &replica.key())
                        .unwrap_or_else(|e| format!("error: {e}"))
                }
                RoleProbe::NatsJetstream { .. } => {
                    if jetstream_leader
                        .as_ref()
                        .is_some_and(|s| s.replica == replica.key())
                    {
                        "leader".to_owned()
                    } else {
                        "follower".to_owned()
                    }
                }
            };
            Ok((replica.replica, replica.node.clone(), answer))
        });
        answers.into_iter().collect()
    }

    /// Runs one role command in the client namespace; its trimmed standard output.
    fn run_role_command(&self, args: &[String], key: &str) -> Result<String, String> {
        let scratch = self.paths.dir.join("role");
        fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        // A file, not a pipe: a command that forks would keep a pipe open after it is killed.
        let out_path = scratch.join(format!("{}.out", key.replace('/', "-")));
        let out =
            fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let program = args[0].clone();
        let rest = args[1..].to_vec();
        let child = faultline_injectors::netns::run_in_netns(
            &self.netns_dir,
            &self.paths.netns("client"),
            move || {
                Command::new(&program)
                    .args(&rest)
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(out))
                    .stderr(Stdio::null())
                    .spawn()
            },
        )
        .map_err(|e| e.to_string())?;
        let mut child = child.map_err(|e| format!("cannot run {}: {e}", args[0]))?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if start.elapsed() >= COMMAND_TIMEOUT {
                // Our own child, by its PID.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still ran after {} s; killed",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        if status.success() {
            Ok(text.trim().to_owned())
        } else {
            Err(format!("exited with {status}: {}", text.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_says_what_was_chosen_and_every_answer() {
        let choice = RoleChoice {
            service: "etcd".into(),
            replica: 2,
            node: "b1".into(),
            zone: "b".into(),
            answers: [
                ("etcd/1", "follower"),
                ("etcd/2", "leader"),
                ("etcd/3", "follower"),
            ]
            .into_iter()
            .map(|(r, a)| (r.to_owned(), a.to_owned()))
            .collect(),
        };
        assert_eq!(
            choice.sentence(PrimaryPlace::Zone),
            "zone of primary of etcd = b (etcd/2 on b1 said leader; etcd/1: follower, etcd/3: follower)"
        );
        assert_eq!(
            choice.sentence(PrimaryPlace::Node),
            "node of primary of etcd = b1 (etcd/2 on b1 said leader; etcd/1: follower, etcd/3: follower)"
        );
        assert!(choice
            .sentence(PrimaryPlace::Replica)
            .starts_with("primary of etcd = replica 2 (etcd/2 on b1 said leader"));
    }
}
