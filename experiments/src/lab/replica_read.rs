//! Holding every JetStream server but one down, so that a direct get through the one left is
//! answered from its own store (issue 11). NATS answers a direct get from any server of the
//! cluster that holds a subscription for it (a queue group across the routes), not
//! necessarily the one the client is connected to; with the others down, only the one left
//! can answer.
//!
//! The others are stopped (SIGKILL, held down), not paused: a paused server's routes and
//! subscriptions stay, so the server left still forwards some direct gets to it, and they are
//! never answered. A stopped server's routes close at once. Each stop is a fault in the ledger
//! with a deadline, so a crashed run still releases them; on release the supervisor restarts
//! them and they catch up from the others.

use std::time::Duration;

use faultline_injectors::ledger::FaultRecord;
use faultline_injectors::lifecycle::revert_fault;

use super::control::LabContext;
use super::LabError;

/// The other JetStream servers, held down while one is read alone. Dropping it releases them.
pub struct HeldPeers {
    ctx: LabContext,
    /// The held replicas (`nats/2`) and their ledger fault ids.
    held: Vec<(String, String)>,
}

impl LabContext {
    /// Stops and holds down every running replica of the JetStream service except the one on
    /// `keep_node`, each through the ledger for at most `hold_for`. Replicas that are not
    /// running are down already and left as they are. If one stop fails, the ones before it are
    /// released.
    pub fn hold_other_nats_servers(
        &self,
        keep_node: &str,
        hold_for: Duration,
    ) -> Result<HeldPeers, LabError> {
        let (service, _) = self.jetstream_service()?;
        let mut held = HeldPeers {
            ctx: self.clone(),
            held: Vec::new(),
        };
        let others: Vec<u32> = self
            .services()?
            .replicas
            .into_iter()
            .filter(|r| r.service == service && r.node != keep_node && r.pid.is_some())
            .map(|r| r.replica)
            .collect();
        for replica in others {
            let record: FaultRecord = self.inject_stop(&service, replica, hold_for, hold_for)?;
            held.held.push((format!("{service}/{replica}"), record.id));
        }
        Ok(held)
    }
}

impl HeldPeers {
    /// The held replicas, e.g. `nats/2`.
    pub fn replicas(&self) -> Vec<String> {
        self.held.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Releases every held replica (the supervisor restarts them); returns the reverts that
    /// failed (their ledger deadlines still apply).
    pub fn release(mut self) -> Vec<String> {
        self.release_all()
    }

    fn release_all(&mut self) -> Vec<String> {
        let ctx = &self.ctx;
        self.held
            .drain(..)
            .filter_map(|(replica, id)| {
                ctx.with_injectors(|env| revert_fault(&ctx.ledger(), env, &id))
                    .err()
                    .map(|e| format!("release {replica} (fault {id}): {e}"))
            })
            .collect()
    }
}

impl Drop for HeldPeers {
    fn drop(&mut self) {
        let _ = self.release_all();
    }
}
