//! Where the load's clients stand: the `clients` setting, and the client sites (a thread in a
//! zone's client namespace) that make the sockets of the clients standing there.
//!
//! A socket belongs to the network namespace of the thread that created it, so a client site
//! is a thread that entered its namespace once and creates sockets on request; the sockets are
//! then connected and used from the workload's own runtime like any other.

use std::path::Path;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpSocket;

use super::target::enter_netns;
use super::WorkloadError;

/// Where the load's clients stand during a partition. In YAML and JSON: `majority`,
/// `per-zone` or `{zone: X}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClientsForm", into = "ClientsForm")]
pub enum Clients {
    /// One client namespace standing with the largest side of any partition.
    #[default]
    Majority,
    /// One client namespace per zone, each sharing its zone's fate and using its own zone's
    /// endpoints first; tenant `i` stands in zone `i mod zones`.
    PerZone,
    /// Every client in this zone's client namespace.
    Zone(String),
}

impl Clients {
    /// How it is written on the command line and in the history header.
    pub fn describe(&self) -> String {
        match self {
            Clients::Majority => "majority".to_owned(),
            Clients::PerZone => "per-zone".to_owned(),
            Clients::Zone(zone) => format!("zone:{zone}"),
        }
    }

    /// Pure checks: a zone name is 1 to 12 lowercase letters or digits, starting with a letter.
    ///
    /// # Errors
    /// The problem, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Clients::Zone(zone) => crate::lab::topology::check_name("clients zone", zone, 12),
            _ => Ok(()),
        }
    }
}

/// How a spec writes [`Clients`]: a word, or a map naming the zone (serde_yaml's own enum
/// form would be a `!zone` tag, which nobody writes by hand).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ClientsForm {
    Word(String),
    Zone { zone: String },
}

impl TryFrom<ClientsForm> for Clients {
    type Error = String;

    fn try_from(form: ClientsForm) -> Result<Self, Self::Error> {
        match form {
            ClientsForm::Word(word) if word == "majority" => Ok(Clients::Majority),
            ClientsForm::Word(word) if word == "per-zone" => Ok(Clients::PerZone),
            ClientsForm::Word(word) => Err(format!(
                "unknown clients setting `{word}`; use majority, per-zone or {{zone: NAME}}"
            )),
            ClientsForm::Zone { zone } => Ok(Clients::Zone(zone)),
        }
    }
}

impl From<Clients> for ClientsForm {
    fn from(clients: Clients) -> Self {
        match clients {
            Clients::Majority => ClientsForm::Word("majority".to_owned()),
            Clients::PerZone => ClientsForm::Word("per-zone".to_owned()),
            Clients::Zone(zone) => ClientsForm::Zone { zone },
        }
    }
}

impl std::str::FromStr for Clients {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let clients = match s {
            "majority" => Clients::Majority,
            "per-zone" => Clients::PerZone,
            other => match other
                .strip_prefix("zone:")
                .or_else(|| other.strip_prefix("zone="))
            {
                Some(zone) => Clients::Zone(zone.to_owned()),
                None => {
                    return Err(format!(
                        "unknown clients setting `{other}`; use majority, per-zone or zone:NAME"
                    ))
                }
            },
        };
        clients.validate()?;
        Ok(clients)
    }
}

/// A client site with its zone's nodes, whose endpoints its clients try first.
pub type SiteWithNodes = (std::sync::Arc<ClientSite>, Vec<String>);

type SocketRequest = mpsc::Sender<std::io::Result<TcpSocket>>;

/// A thread standing in one client namespace, running a single-threaded runtime there: the
/// sockets it makes on request, and every socket the tasks spawned on it create (a NATS
/// client's connection and its reconnects), belong to that namespace.
pub struct ClientSite {
    /// The zone it stands in.
    pub zone: String,
    requests: tokio::sync::mpsc::UnboundedSender<SocketRequest>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ClientSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSite")
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl ClientSite {
    /// Starts the thread, enters `netns_dir/netns` and starts the site's runtime. The thread,
    /// its runtime and every task spawned on it end when the site is dropped.
    ///
    /// # Errors
    /// The namespace cannot be entered (not root, or the lab has no such namespace: run
    /// `chaosctl lab up` again to create the zones' client namespaces), or the runtime cannot
    /// be built.
    pub fn start(netns_dir: &Path, netns: &str, zone: &str) -> Result<Self, WorkloadError> {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<SocketRequest>();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (dir, name) = (netns_dir.to_owned(), netns.to_owned());
        std::thread::Builder::new()
            .name(format!("clients-{zone}"))
            .spawn(move || {
                let runtime = enter_netns(&dir, &name).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(WorkloadError::Runtime)
                });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = entered_tx.send(Err(e));
                        return;
                    }
                };
                let _ = entered_tx.send(Ok(runtime.handle().clone()));
                // Runs until the site (the only sender) is dropped; the runtime's tasks run
                // meanwhile on this thread, in this namespace.
                runtime.block_on(async {
                    while let Some(reply) = incoming.recv().await {
                        let _ = reply.send(TcpSocket::new_v4());
                    }
                });
            })
            .map_err(WorkloadError::Runtime)?;
        let runtime = entered_rx
            .recv()
            .map_err(|_| WorkloadError::Config(format!("the client thread for {netns} died")))??;
        Ok(Self {
            zone: zone.to_owned(),
            requests,
            runtime,
        })
    }

    /// A new, unconnected IPv4 TCP socket in the site's namespace.
    ///
    /// # Errors
    /// The socket could not be made, or the site's thread is gone.
    pub fn socket(&self) -> std::io::Result<TcpSocket> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(reply)
            .map_err(|_| std::io::Error::other("the client site's thread is gone"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the client site's thread is gone"))?
    }

    /// Runs `future` on the site's runtime, in the site's namespace: every socket it, and
    /// any task it spawns, creates stands there. Await the handle from any runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_parse_table() {
        let cases = [
            ("majority", Ok(Clients::Majority)),
            ("per-zone", Ok(Clients::PerZone)),
            ("zone:b", Ok(Clients::Zone("b".to_owned()))),
            ("zone=b", Ok(Clients::Zone("b".to_owned()))),
            ("zone:", Err("invalid")),
            ("zone:B", Err("invalid")),
            ("everywhere", Err("use majority, per-zone or zone:NAME")),
        ];
        for (text, expected) in cases {
            match (text.parse::<Clients>(), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn clients_yaml_forms() {
        let parse = |yaml: &str| serde_yaml::from_str::<Clients>(yaml).map_err(|e| e.to_string());
        assert_eq!(parse("majority"), Ok(Clients::Majority));
        assert_eq!(parse("per-zone"), Ok(Clients::PerZone));
        assert_eq!(parse("{zone: a}"), Ok(Clients::Zone("a".to_owned())));
        assert!(parse("somewhere").is_err());
        // Written as it is read, so a run's spec.yaml reads back.
        for clients in [
            Clients::Majority,
            Clients::PerZone,
            Clients::Zone("b".to_owned()),
        ] {
            let yaml = serde_yaml::to_string(&clients).expect("yaml");
            assert_eq!(parse(&yaml), Ok(clients), "{yaml}");
        }
    }
}
