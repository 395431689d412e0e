//! Network partitions: traffic from each node's namespace to the nodes it must not reach is
//! rejected, in both directions, until the fault's deadline, which the kernel enforces itself.
//!
//! A [`PartitionRule`] is one blocked destination prefix in one namespace, tagged with the
//! partition's slot priority: every priority in
//! [`RULE_PRIORITY_BASE`]`..`[`RULE_PRIORITY_BASE`]` + `[`RULE_PRIORITY_SLOTS`] is ours, and each
//! active partition owns one slot, so reconcile can tell orphans from live faults even when the
//! ledger is gone. [`NetlinkRuleTable`] makes them nf_tables set elements with a timeout (see
//! [`crate::nftables`]); earlier versions made them `prohibit` policy rules of that priority,
//! which it still finds and removes.
//!
//! The module has three layers:
//! - **Shapes** ([`isolate`], [`halves`], [`majorities_ring`], [`bridge`], [`singletons`]):
//!   pure functions from members to a [`Grudge`], with table tests.
//! - [`rules_for`]: a grudge of [`Endpoint`]s to the [`PartitionRule`]s that enforce it.
//! - [`RuleTable`]: the privileged seam, with [`NetlinkRuleTable`] for real namespaces and
//!   [`RecordingRuleTable`] for logic tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{netns, nftables, Error, Result};

/// First rule priority of Faultline's range. Below the `main` table (32766), above `local` (0).
pub const RULE_PRIORITY_BASE: u32 = 24_000;
/// Number of priorities in Faultline's range; one per concurrently active partition.
pub const RULE_PRIORITY_SLOTS: u32 = 1_000;

/// The rule priority used by the partition that owns `slot`.
pub fn priority_for_slot(slot: u32) -> u32 {
    RULE_PRIORITY_BASE + slot
}

/// Whether a rule priority lies in Faultline's range.
pub fn is_ours(priority: u32) -> bool {
    (RULE_PRIORITY_BASE..RULE_PRIORITY_BASE + RULE_PRIORITY_SLOTS).contains(&priority)
}

/// One blocked prefix: inside `netns`, traffic to `destination/prefix_len` is rejected, by the
/// partition whose slot has priority `priority`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionRule {
    /// Network namespace name (a file under the netns directory, usually `/run/netns`).
    pub netns: String,
    /// Destination prefix address.
    pub destination: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Rule priority; always inside Faultline's range.
    pub priority: u32,
}

/// The privileged seam for partition rules.
pub trait RuleTable: Send + Sync {
    /// Installs `rules` until `deadline_unix_ms`: the real table has the kernel drop them at
    /// that time whatever happens to our processes. A rule that is already present counts as
    /// installed.
    ///
    /// # Errors
    /// A namespace cannot be entered or the kernel refuses a rule.
    fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()>;
    /// Removes `rules`. A rule or namespace that is gone counts as removed.
    ///
    /// # Errors
    /// The kernel refuses a deletion for another reason than "not found".
    fn delete(&self, rules: &[PartitionRule]) -> Result<()>;
    /// Lists the rules in Faultline's priority range inside `netns`; a namespace that no longer
    /// exists has none.
    ///
    /// # Errors
    /// The namespace exists but cannot be entered or read.
    fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>>;
    /// Removes what partitions that expired or were reverted left behind in `netns` (objects
    /// that block nothing any more), except for the slots whose priority is in `live`, and
    /// returns the priorities of the slots it removed. A namespace that is gone has none.
    ///
    /// # Errors
    /// The namespace exists but cannot be entered, or the kernel refuses a deletion.
    fn tidy(&self, netns: &str, live: &BTreeSet<u32>) -> Result<Vec<u32>> {
        let _ = (netns, live);
        Ok(Vec::new())
    }
}

/// A [`RuleTable`] that only remembers, for logic tests.
#[derive(Debug, Default)]
pub struct RecordingRuleTable {
    /// Each installed rule with the deadline it was installed until.
    installed: Mutex<BTreeMap<PartitionRule, u64>>,
}

impl RecordingRuleTable {
    /// Every rule currently "installed".
    pub fn installed(&self) -> Vec<PartitionRule> {
        self.installed
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// The deadline `rule` was last installed until, if it is installed.
    pub fn deadline_of(&self, rule: &PartitionRule) -> Option<u64> {
        self.installed.lock().expect("poisoned").get(rule).copied()
    }
}

impl RuleTable for RecordingRuleTable {
    fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()> {
        let mut installed = self.installed.lock().expect("poisoned");
        for rule in rules {
            installed.insert(rule.clone(), deadline_unix_ms);
        }
        Ok(())
    }

    fn delete(&self, rules: &[PartitionRule]) -> Result<()> {
        let mut installed = self.installed.lock().expect("poisoned");
        for rule in rules {
            installed.remove(rule);
        }
        Ok(())
    }

    fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>> {
        Ok(self
            .installed
            .lock()
            .expect("poisoned")
            .keys()
            .filter(|rule| rule.netns == netns && is_ours(rule.priority))
            .cloned()
            .collect())
    }
}

/// Who cannot reach whom: each member maps to the members it must not reach.
///
/// Members that still reach everyone have no entry; an entry is never an empty set. An entry
/// `a -> b` is enforced in `a`'s namespace, so it stops what `a` sends to `b` (see
/// [`rules_for`]). Every shape in this module is symmetric (`a -> b` exactly when `b -> a`),
/// so both directions are cut.
pub type Grudge<T> = BTreeMap<T, BTreeSet<T>>;

/// A member of a partition as the rule builder needs it: where to install and what to block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Network namespace of the node.
    pub netns: String,
    /// The node's address.
    pub address: Ipv4Addr,
}

// ---------------------------------------------------------------------------------------------
// Partition shapes: pure functions from members to a grudge.
// ---------------------------------------------------------------------------------------------

/// Why a partition shape cannot be built from the members it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The group to cut off has no member.
    #[error(
        "{shape}: the group to cut off is empty; name at least one node (or a zone that has nodes)"
    )]
    EmptyGroup {
        /// The shape asked for.
        shape: &'static str,
    },
    /// A group member is not one of the members the partition spans.
    #[error("{shape}: group[{index}] is not one of the {members} targeted members; pick the group from the same member list")]
    NotAMember {
        /// The shape asked for.
        shape: &'static str,
        /// Position of the offending entry in the group, from 0.
        index: usize,
        /// How many members the partition spans.
        members: usize,
    },
    /// The same member is listed twice.
    #[error("{shape}: {list}[{index}] is listed twice; list each member once")]
    Duplicate {
        /// The shape asked for.
        shape: &'static str,
        /// Which list: `group` or `members`.
        list: &'static str,
        /// Position of the second occurrence, from 0.
        index: usize,
    },
    /// The shape needs more members than it was given.
    #[error("{shape} needs at least {needed} members but got {got}; target more nodes or choose another shape")]
    TooFewMembers {
        /// The shape asked for.
        shape: &'static str,
        /// The minimum for this shape.
        needed: usize,
        /// What was given.
        got: usize,
    },
    /// The group holds every member, so there is no other side.
    #[error("{shape}: the group holds all {members} members, so nobody is left on the other side; leave at least one member out of the group")]
    NothingLeft {
        /// The shape asked for.
        shape: &'static str,
        /// How many members the partition spans.
        members: usize,
    },
}

/// Cuts the members of `group` off from every other member of `all`, in both directions.
///
/// Used for zone-vs-rest (the group is every node of the zone) and for one-node-vs-rest.
/// Members on the same side still reach each other.
///
/// # Errors
/// `group` is empty, lists a member twice, names something not in `all`, or holds all of
/// `all`; `all` lists a member twice or has fewer than 2 members.
pub fn isolate<T: Ord + Clone>(group: &[T], all: &[T]) -> Result<Grudge<T>, ShapeError> {
    const SHAPE: &str = "isolate";
    check_members(SHAPE, all, 2)?;
    let inside = check_group(SHAPE, group, all)?;
    if inside.len() == all.len() {
        return Err(ShapeError::NothingLeft {
            shape: SHAPE,
            members: all.len(),
        });
    }
    let rest: Vec<&T> = all.iter().filter(|m| !inside.contains(m)).collect();
    let mut grudge = Grudge::new();
    sever(&mut grudge, group, rest);
    Ok(grudge)
}

/// Splits `all` into two halves, in the order given: the first `n / 2` members against the
/// other `n - n / 2` (so with an odd count the second half is the larger one, as Jepsen's
/// `bisect`). Shuffle `all` first for a random split.
///
/// # Errors
/// `all` lists a member twice or has fewer than 2 members.
pub fn halves<T: Ord + Clone>(all: &[T]) -> Result<Grudge<T>, ShapeError> {
    check_members("halves", all, 2)?;
    let (first, second) = all.split_at(all.len() / 2);
    let mut grudge = Grudge::new();
    sever(&mut grudge, first, second);
    Ok(grudge)
}

/// A ring in which every member reaches a majority, and no two members reach the same
/// majority (Jepsen's `majorities-ring`, with the ring taken in the order given; shuffle `all`
/// first for a random ring).
///
/// Each member keeps the members within ring distance `r` of it, where `r` is the smallest
/// radius whose window (`2r + 1` members) is a majority, and is cut off from the others.
/// With 4 or 5 members that cuts each member off from the one or two opposite it; with 6, from
/// the one opposite.
///
/// **Directionality.** A grudge entry `a -> b` becomes one rule in `a`'s namespace, which
/// stops what `a` *sends* to `b`; what `b` sends to `a` still arrives. Jepsen builds this
/// ring from windows that, for an even majority size, are not centred on their member, which
/// gives one-way cuts. Over TCP a one-way cut breaks the pair both ways (the replies are
/// lost), so such a member would in fact see less than a majority. This ring is therefore
/// symmetric: `a` reaches `b` exactly when `b` reaches `a`, and "every member sees a
/// majority" holds for connection-oriented traffic too.
///
/// With exactly 3 members no symmetric ring window leaves anything out, so the ring is cut
/// at one point: the first and the last member lose each other and the middle one reaches
/// both (each sees a different majority of 2 or 3). That is also what [`bridge`] gives.
///
/// # Errors
/// `all` lists a member twice or has fewer than 3 members.
pub fn majorities_ring<T: Ord + Clone>(all: &[T]) -> Result<Grudge<T>, ShapeError> {
    check_members("majorities-ring", all, 3)?;
    let n = all.len();
    let mut grudge = Grudge::new();
    if n == 3 {
        cut(&mut grudge, &all[0], &all[2]);
        return Ok(grudge);
    }
    let majority = n / 2 + 1;
    let radius = majority / 2;
    for (i, a) in all.iter().enumerate() {
        for (j, b) in all.iter().enumerate().skip(i + 1) {
            let distance = (j - i).min(n - (j - i));
            if distance > radius {
                cut(&mut grudge, a, b);
            }
        }
    }
    Ok(grudge)
}

/// Two halves that cannot reach each other, plus one bridge member that reaches both (Jepsen's
/// `bridge`). In the order given: the first `n / 2` members, then the bridge, then the rest.
/// The bridge has no entry in the grudge.
///
/// # Errors
/// `all` lists a member twice or has fewer than 3 members.
pub fn bridge<T: Ord + Clone>(all: &[T]) -> Result<Grudge<T>, ShapeError> {
    check_members("bridge", all, 3)?;
    let half = all.len() / 2;
    let mut grudge = Grudge::new();
    sever(&mut grudge, &all[..half], &all[half + 1..]);
    Ok(grudge)
}

/// Each member of `group` alone: cut off from every other member of `all`, other group
/// members included. Isolating 2 of 3 NATS peers this way leaves no side with a quorum.
///
/// # Errors
/// `group` is empty, lists a member twice or names something not in `all`; `all` lists a
/// member twice or has fewer than 2 members.
pub fn singletons<T: Ord + Clone>(group: &[T], all: &[T]) -> Result<Grudge<T>, ShapeError> {
    const SHAPE: &str = "singletons";
    check_members(SHAPE, all, 2)?;
    check_group(SHAPE, group, all)?;
    let mut grudge = Grudge::new();
    for loner in group {
        for other in all.iter().filter(|m| *m != loner) {
            cut(&mut grudge, loner, other);
        }
    }
    Ok(grudge)
}

/// Checks that `all` has no duplicates and at least `needed` members.
fn check_members<T: Ord>(shape: &'static str, all: &[T], needed: usize) -> Result<(), ShapeError> {
    let mut seen = BTreeSet::new();
    for (index, member) in all.iter().enumerate() {
        if !seen.insert(member) {
            return Err(ShapeError::Duplicate {
                shape,
                list: "members",
                index,
            });
        }
    }
    if all.len() < needed {
        return Err(ShapeError::TooFewMembers {
            shape,
            needed,
            got: all.len(),
        });
    }
    Ok(())
}

/// Checks that `group` is a non-empty subset of `all` without duplicates, and returns it as a
/// set.
fn check_group<'a, T: Ord>(
    shape: &'static str,
    group: &'a [T],
    all: &[T],
) -> Result<BTreeSet<&'a T>, ShapeError> {
    if group.is_empty() {
        return Err(ShapeError::EmptyGroup { shape });
    }
    let members: BTreeSet<&T> = all.iter().collect();
    let mut inside = BTreeSet::new();
    for (index, member) in group.iter().enumerate() {
        if !members.contains(member) {
            return Err(ShapeError::NotAMember {
                shape,
                index,
                members: all.len(),
            });
        }
        if !inside.insert(member) {
            return Err(ShapeError::Duplicate {
                shape,
                list: "group",
                index,
            });
        }
    }
    Ok(inside)
}

/// Records that `a` and `b` must not reach each other, both ways.
fn cut<T: Ord + Clone>(grudge: &mut Grudge<T>, a: &T, b: &T) {
    grudge.entry(a.clone()).or_default().insert(b.clone());
    grudge.entry(b.clone()).or_default().insert(a.clone());
}

/// Cuts every member of `left` off from every member of `right`, both ways.
fn sever<'a, T: Ord + Clone + 'a>(
    grudge: &mut Grudge<T>,
    left: impl IntoIterator<Item = &'a T>,
    right: impl IntoIterator<Item = &'a T>,
) {
    let right: Vec<&T> = right.into_iter().collect();
    for a in left {
        for b in &right {
            cut(grudge, a, b);
        }
    }
}

/// The rules that make `grudge` real: for each member and each member it must not reach, one
/// rule in the member's namespace prohibiting the other's address (`/32`) at `priority`.
///
/// Every shape in this module is symmetric, so this cuts both directions. The result is sorted
/// (by namespace, then destination) and has no duplicates, so the same grudge always gives the
/// same list.
pub fn rules_for(grudge: &Grudge<Endpoint>, priority: u32) -> Vec<PartitionRule> {
    let rules: BTreeSet<PartitionRule> = grudge
        .iter()
        .flat_map(|(member, blocked)| {
            blocked.iter().map(move |other| PartitionRule {
                netns: member.netns.clone(),
                destination: other.address,
                prefix_len: 32,
                priority,
            })
        })
        .collect();
    rules.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The real rule table: nf_tables over nfnetlink inside each node's namespace.
// ---------------------------------------------------------------------------------------------

/// The [`RuleTable`] that installs partitions the kernel ends on its own.
///
/// Each call groups its rules by namespace and works on all of them in parallel: one fresh
/// thread per namespace enters it ([`crate::netns`]), opens a netlink socket there and sends
/// that namespace's share as one atomic nf_tables batch ([`crate::nftables`]). Nothing here
/// execs `nft`, `ip` or `iptables`.
///
/// **The guarantee.** Every blocked prefix is an element of our set with a timeout equal to the
/// time left until the fault's deadline, so the kernel stops rejecting at the deadline even if
/// no Faultline process is alive then. Policy rules (`prohibit`) were the previous mechanism;
/// they cannot expire, so they are no longer installed, but [`RuleTable::list_ours`] and
/// [`RuleTable::delete`] still find and remove any left in our priority range.
///
/// Senders to a blocked destination get an ICMP "administratively prohibited" from their own
/// kernel, so a TCP connect fails at once with `EHOSTUNREACH` (a `prohibit` rule gave `EACCES`);
/// forwarded packets get the same ICMP back.
#[derive(Clone, Debug)]
pub struct NetlinkRuleTable {
    netns_dir: PathBuf,
}

impl NetlinkRuleTable {
    /// A rule table for the namespaces under `netns_dir`, normally
    /// [`crate::netns::DEFAULT_NETNS_DIR`].
    pub fn new(netns_dir: impl Into<PathBuf>) -> Self {
        Self {
            netns_dir: netns_dir.into(),
        }
    }

    /// What the kernel holds for the partition at `priority` in `netns`: each blocked prefix
    /// with the milliseconds it has left before the kernel drops it. `None` when that partition
    /// has no set there (never installed, reverted, or the namespace is gone).
    ///
    /// # Errors
    /// The namespace exists but cannot be entered or read.
    pub fn expirations(
        &self,
        netns: &str,
        priority: u32,
    ) -> Result<Option<Vec<nftables::Expiring>>> {
        match netns::run_in_netns(&self.netns_dir, netns, move || {
            nftables::expirations(priority)
        }) {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(reason)) => Err(Error::Netlink {
                netns: netns.to_owned(),
                reason,
            }),
            Err(e) if netns::is_netns_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `op` on each namespace's share of `rules`, all namespaces in parallel (one
    /// short-lived thread each), and returns the first failure once every namespace has
    /// finished.
    fn apply(&self, op: RuleOp, rules: &[PartitionRule]) -> Result<()> {
        let mut by_netns: BTreeMap<&str, Vec<PartitionRule>> = BTreeMap::new();
        for rule in rules {
            by_netns.entry(&rule.netns).or_default().push(rule.clone());
        }
        let mut first_error = None;
        let mut running = Vec::with_capacity(by_netns.len());
        for (netns, rules) in by_netns {
            let work = move || match op {
                RuleOp::Add { timeout_ms } => nftables::install(&rules, timeout_ms),
                RuleOp::Delete => {
                    nftables::remove(&rules).and_then(|()| legacy::delete_present(&rules))
                }
            };
            match netns::spawn_in_netns(&self.netns_dir, netns, work) {
                Ok(thread) => running.push((netns, thread)),
                Err(e) if op == RuleOp::Delete && netns::is_netns_gone(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for (netns, thread) in running {
            let outcome = match thread.join() {
                Ok(Ok(())) => continue,
                Ok(Err(reason)) => Error::Netlink {
                    netns: netns.to_owned(),
                    reason,
                },
                Err(e) => e,
            };
            first_error.get_or_insert(outcome);
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl RuleTable for NetlinkRuleTable {
    /// Installs `rules` with a kernel timeout of the time left until `deadline_unix_ms` (at
    /// least 1 ms); a rule that is already there counts as installed. On error the other
    /// namespaces' rules may be in place (each namespace's share is all or nothing): revert
    /// with [`RuleTable::delete`], or let them expire.
    fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()> {
        let timeout_ms = deadline_unix_ms.saturating_sub(crate::ledger::now_unix_ms());
        self.apply(
            RuleOp::Add {
                timeout_ms: timeout_ms.max(1),
            },
            rules,
        )
    }

    /// Removes `rules`: their set elements, and any `prohibit` policy rule with the same
    /// destination and priority. Whatever is gone (expired, never installed, namespace
    /// removed) counts as removed. The slot's empty set and chains stay for reuse until
    /// [`RuleTable::tidy`].
    fn delete(&self, rules: &[PartitionRule]) -> Result<()> {
        self.apply(RuleOp::Delete, rules)
    }

    /// Deletes the chains and set of every slot in `netns` that holds no unexpired element and
    /// whose priority is not in `live`.
    fn tidy(&self, netns: &str, live: &BTreeSet<u32>) -> Result<Vec<u32>> {
        let live = live.clone();
        match netns::run_in_netns(&self.netns_dir, netns, move || nftables::tidy(&live)) {
            Ok(Ok(removed)) => Ok(removed),
            Ok(Err(reason)) => Err(Error::Netlink {
                netns: netns.to_owned(),
                reason,
            }),
            Err(e) if netns::is_netns_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The unexpired elements of our sets in `netns`, plus any `prohibit` policy rule in our
    /// priority range, sorted. A policy rule in our range without a destination (we never made
    /// one) is returned as `0.0.0.0/0`; like `ip rule del`, deleting that removes one rule of
    /// its priority whatever its destination.
    fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>> {
        let name = netns.to_owned();
        let listed = netns::run_in_netns(&self.netns_dir, netns, move || {
            let mut rules = nftables::list(&name)?;
            rules.extend(legacy::list_ours(&name)?);
            rules.sort();
            rules.dedup();
            Ok::<_, String>(rules)
        });
        match listed {
            Ok(Ok(rules)) => Ok(rules),
            Ok(Err(reason)) => Err(Error::Netlink {
                netns: netns.to_owned(),
                reason,
            }),
            Err(e) if netns::is_netns_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// What [`NetlinkRuleTable::apply`] does with each namespace's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleOp {
    Add { timeout_ms: u64 },
    Delete,
}

/// `prohibit` policy rules in our priority range, as earlier versions installed them: listed
/// and removed so that an upgrade leaves none behind, never added. Runs on a thread that is
/// already inside the target namespace; errors are plain strings that the caller wraps with
/// the namespace name.
mod legacy {
    use std::net::IpAddr;

    use futures::future::join_all;
    use futures::TryStreamExt;
    use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::{Handle, IpVersion};

    use super::{is_ours, PartitionRule};

    /// Runs `work` with a netlink connection opened on this thread (so in its namespace), on
    /// a single-threaded runtime that lives only as long as the call.
    fn with_connection<T, F>(work: impl FnOnce(Handle) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, String>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("cannot start a netlink runtime: {e}"))?;
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()
                .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
            let connection = tokio::spawn(connection);
            let outcome = work(handle).await;
            connection.abort();
            outcome
        })
    }

    /// Deletes those of `rules` that exist as policy rules: one dump, then only the deletes
    /// that are needed (usually none).
    pub(super) fn delete_present(rules: &[PartitionRule]) -> Result<(), String> {
        let Some(netns) = rules.first().map(|r| r.netns.clone()) else {
            return Ok(());
        };
        with_connection(|handle| async move {
            let present = dump_ours(&handle, &netns).await?;
            let doomed: Vec<&PartitionRule> =
                rules.iter().filter(|rule| present.contains(rule)).collect();
            let requests = doomed.iter().map(|rule| {
                let handle = handle.clone();
                async move {
                    let outcome = handle.rule().del(message_for(rule)).execute().await;
                    (rule, outcome)
                }
            });
            let failures: Vec<String> = join_all(requests)
                .await
                .into_iter()
                .filter_map(|(rule, outcome)| {
                    let error = outcome.err()?;
                    if errno(&error).is_some_and(|code| [libc::ENOENT, libc::ESRCH].contains(&code))
                    {
                        return None;
                    }
                    Some(format!(
                        "deleting policy rule `{}`: {error}",
                        describe(rule)
                    ))
                })
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        })
    }

    /// Dumps the IPv4 rules and keeps ours, as rules of namespace `netns`.
    pub(super) fn list_ours(netns: &str) -> Result<Vec<PartitionRule>, String> {
        let netns = netns.to_owned();
        with_connection(|handle| async move { dump_ours(&handle, &netns).await })
    }

    async fn dump_ours(handle: &Handle, netns: &str) -> Result<Vec<PartitionRule>, String> {
        let mut dump = handle.rule().get(IpVersion::V4).execute();
        let mut ours = Vec::new();
        while let Some(message) = dump
            .try_next()
            .await
            .map_err(|e| format!("dumping IPv4 policy rules: {e}"))?
        {
            if let Some(rule) = as_ours(netns, &message) {
                ours.push(rule);
            }
        }
        ours.sort();
        Ok(ours)
    }

    /// The message that deletes `rule`: family, destination and priority, with action and
    /// table left unspecified so that they match whatever is installed.
    fn message_for(rule: &PartitionRule) -> RuleMessage {
        let mut message = RuleMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.dst_len = rule.prefix_len;
        message.header.table = 0;
        message.header.action = RuleAction::Unspec;
        message
            .attributes
            .push(RuleAttribute::Destination(rule.destination.into()));
        message
            .attributes
            .push(RuleAttribute::Priority(rule.priority));
        message
    }

    /// `message` as one of our rules, if its priority is in our range.
    fn as_ours(netns: &str, message: &RuleMessage) -> Option<PartitionRule> {
        let mut priority = None;
        let mut destination = None;
        for attribute in &message.attributes {
            match attribute {
                RuleAttribute::Priority(p) => priority = Some(*p),
                RuleAttribute::Destination(IpAddr::V4(d)) => destination = Some(*d),
                _ => {}
            }
        }
        let priority = priority.filter(|p| is_ours(*p))?;
        Some(PartitionRule {
            netns: netns.to_owned(),
            destination: destination.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            prefix_len: message.header.dst_len,
            priority,
        })
    }

    /// The positive errno of a netlink error answer, if that is what `error` is.
    fn errno(error: &rtnetlink::Error) -> Option<i32> {
        match error {
            rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
            _ => None,
        }
    }

    /// `rule` as `ip rule` would show it.
    fn describe(rule: &PartitionRule) -> String {
        format!(
            "to {}/{} prohibit priority {}",
            rule.destination, rule.prefix_len, rule.priority
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn delete_messages_match_any_action_and_table() {
            let rule = PartitionRule {
                netns: "fl-a1".into(),
                destination: [10, 203, 2, 1].into(),
                prefix_len: 32,
                priority: 24_007,
            };
            let message = message_for(&rule);
            assert_eq!(message.header.family, AddressFamily::Inet);
            assert_eq!(message.header.dst_len, 32);
            assert_eq!(message.header.table, 0);
            assert_eq!(message.header.action, RuleAction::Unspec);
            assert_eq!(as_ours("fl-a1", &message), Some(rule));
        }

        #[test]
        fn rules_outside_our_range_are_not_ours() {
            let mut message = RuleMessage::default();
            message.attributes.push(RuleAttribute::Priority(32_766));
            assert_eq!(as_ours("fl-a1", &message), None);
            let mut no_priority = RuleMessage::default();
            no_priority.header.dst_len = 32;
            assert_eq!(as_ours("fl-a1", &no_priority), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grudge from a table of `member -> blocked members`.
    fn grudge(rows: &[(u8, &[u8])]) -> Grudge<u8> {
        rows.iter()
            .map(|(member, blocked)| (*member, blocked.iter().copied().collect()))
            .collect()
    }

    fn members(n: u8) -> Vec<u8> {
        (1..=n).collect()
    }

    /// Invariants every shape's grudge has: symmetric, nobody blocks itself, no empty entries,
    /// only members of `all`.
    fn assert_well_formed(g: &Grudge<u8>, all: &[u8]) {
        for (member, blocked) in g {
            assert!(all.contains(member), "{member} is not a member: {g:?}");
            assert!(!blocked.is_empty(), "empty entry for {member}: {g:?}");
            assert!(!blocked.contains(member), "{member} blocks itself: {g:?}");
            for other in blocked {
                assert!(
                    g.get(other).is_some_and(|back| back.contains(member)),
                    "{member} blocks {other} but not the other way: {g:?}"
                );
            }
        }
    }

    #[test]
    fn isolate_cuts_the_group_from_the_rest() {
        let cases: &[(&[u8], u8, Grudge<u8>)] = &[
            (&[2], 2, grudge(&[(1, &[2]), (2, &[1])])),
            (&[1], 3, grudge(&[(1, &[2, 3]), (2, &[1]), (3, &[1])])),
            (&[1, 2], 3, grudge(&[(1, &[3]), (2, &[3]), (3, &[1, 2])])),
            (
                &[1, 2],
                6,
                grudge(&[
                    (1, &[3, 4, 5, 6]),
                    (2, &[3, 4, 5, 6]),
                    (3, &[1, 2]),
                    (4, &[1, 2]),
                    (5, &[1, 2]),
                    (6, &[1, 2]),
                ]),
            ),
            (
                &[4, 3],
                6,
                grudge(&[
                    (1, &[3, 4]),
                    (2, &[3, 4]),
                    (3, &[1, 2, 5, 6]),
                    (4, &[1, 2, 5, 6]),
                    (5, &[3, 4]),
                    (6, &[3, 4]),
                ]),
            ),
            (
                &[5],
                6,
                grudge(&[
                    (1, &[5]),
                    (2, &[5]),
                    (3, &[5]),
                    (4, &[5]),
                    (5, &[1, 2, 3, 4, 6]),
                    (6, &[5]),
                ]),
            ),
        ];
        for (group, n, expected) in cases {
            let all = members(*n);
            let got = isolate(group, &all).unwrap();
            assert_eq!(&got, expected, "isolate({group:?}, 1..={n})");
            assert_well_formed(&got, &all);
        }
    }

    #[test]
    fn halves_split_in_the_order_given() {
        let cases: &[(u8, Grudge<u8>)] = &[
            (2, grudge(&[(1, &[2]), (2, &[1])])),
            (3, grudge(&[(1, &[2, 3]), (2, &[1]), (3, &[1])])),
            (
                4,
                grudge(&[(1, &[3, 4]), (2, &[3, 4]), (3, &[1, 2]), (4, &[1, 2])]),
            ),
            (
                5,
                grudge(&[
                    (1, &[3, 4, 5]),
                    (2, &[3, 4, 5]),
                    (3, &[1, 2]),
                    (4, &[1, 2]),
                    (5, &[1, 2]),
                ]),
            ),
            (
                6,
                grudge(&[
                    (1, &[4, 5, 6]),
                    (2, &[4, 5, 6]),
                    (3, &[4, 5, 6]),
                    (4, &[1, 2, 3]),
                    (5, &[1, 2, 3]),
                    (6, &[1, 2, 3]),
                ]),
            ),
        ];
        for (n, expected) in cases {
            let all = members(*n);
            let got = halves(&all).unwrap();
            assert_eq!(&got, expected, "halves(1..={n})");
            assert_well_formed(&got, &all);
        }
        // The order given decides the sides, not the members' order.
        assert_eq!(
            halves(&[3, 1, 2, 4]).unwrap(),
            grudge(&[(1, &[2, 4]), (2, &[1, 3]), (3, &[2, 4]), (4, &[1, 3])])
        );
    }

    #[test]
    fn majorities_ring_table() {
        let cases: &[(u8, Grudge<u8>)] = &[
            (3, grudge(&[(1, &[3]), (3, &[1])])),
            (4, grudge(&[(1, &[3]), (2, &[4]), (3, &[1]), (4, &[2])])),
            (
                5,
                grudge(&[
                    (1, &[3, 4]),
                    (2, &[4, 5]),
                    (3, &[1, 5]),
                    (4, &[1, 2]),
                    (5, &[2, 3]),
                ]),
            ),
            (
                6,
                grudge(&[
                    (1, &[4]),
                    (2, &[5]),
                    (3, &[6]),
                    (4, &[1]),
                    (5, &[2]),
                    (6, &[3]),
                ]),
            ),
            (
                7,
                grudge(&[
                    (1, &[4, 5]),
                    (2, &[5, 6]),
                    (3, &[6, 7]),
                    (4, &[1, 7]),
                    (5, &[1, 2]),
                    (6, &[2, 3]),
                    (7, &[3, 4]),
                ]),
            ),
        ];
        for (n, expected) in cases {
            let got = majorities_ring(&members(*n)).unwrap();
            assert_eq!(&got, expected, "majorities_ring(1..={n})");
        }
    }

    #[test]
    fn in_a_majorities_ring_everyone_sees_a_different_majority() {
        for n in 3..=12 {
            let all = members(n);
            let g = majorities_ring(&all).unwrap();
            assert_well_formed(&g, &all);
            assert!(!g.is_empty(), "n = {n}: nothing is cut");
            let mut views = BTreeSet::new();
            for member in &all {
                let blocked = g.get(member).cloned().unwrap_or_default();
                let view: BTreeSet<u8> = all
                    .iter()
                    .copied()
                    .filter(|m| !blocked.contains(m))
                    .collect();
                assert!(
                    view.len() > all.len() / 2,
                    "n = {n}: {member} sees only {view:?}"
                );
                assert!(views.insert(view.clone()), "n = {n}: {view:?} seen twice");
            }
        }
    }

    #[test]
    fn bridge_keeps_one_member_in_touch_with_both_halves() {
        let cases: &[(u8, Grudge<u8>)] = &[
            (3, grudge(&[(1, &[3]), (3, &[1])])),
            (4, grudge(&[(1, &[4]), (2, &[4]), (4, &[1, 2])])),
            (
                5,
                grudge(&[(1, &[4, 5]), (2, &[4, 5]), (4, &[1, 2]), (5, &[1, 2])]),
            ),
            (
                6,
                grudge(&[
                    (1, &[5, 6]),
                    (2, &[5, 6]),
                    (3, &[5, 6]),
                    (5, &[1, 2, 3]),
                    (6, &[1, 2, 3]),
                ]),
            ),
        ];
        for (n, expected) in cases {
            let all = members(*n);
            let got = bridge(&all).unwrap();
            assert_eq!(&got, expected, "bridge(1..={n})");
            assert_well_formed(&got, &all);
            let the_bridge = all[all.len() / 2];
            assert!(!got.contains_key(&the_bridge));
        }
    }

    #[test]
    fn singletons_leave_each_group_member_alone() {
        let cases: &[(&[u8], u8, Grudge<u8>)] = &[
            (&[1, 2], 2, grudge(&[(1, &[2]), (2, &[1])])),
            (&[1], 3, grudge(&[(1, &[2, 3]), (2, &[1]), (3, &[1])])),
            // Two of three NATS peers alone: no side keeps a quorum.
            (
                &[1, 2],
                3,
                grudge(&[(1, &[2, 3]), (2, &[1, 3]), (3, &[1, 2])]),
            ),
            (
                &[2, 5],
                6,
                grudge(&[
                    (1, &[2, 5]),
                    (2, &[1, 3, 4, 5, 6]),
                    (3, &[2, 5]),
                    (4, &[2, 5]),
                    (5, &[1, 2, 3, 4, 6]),
                    (6, &[2, 5]),
                ]),
            ),
        ];
        for (group, n, expected) in cases {
            let all = members(*n);
            let got = singletons(group, &all).unwrap();
            assert_eq!(&got, expected, "singletons({group:?}, 1..={n})");
            assert_well_formed(&got, &all);
        }
    }

    #[test]
    fn isolate_refuses_bad_input() {
        use ShapeError as E;
        let three = members(3);
        let cases: Vec<(Result<Grudge<u8>, ShapeError>, ShapeError)> = vec![
            (isolate(&[], &three), E::EmptyGroup { shape: "isolate" }),
            (
                isolate(&[9], &three),
                E::NotAMember {
                    shape: "isolate",
                    index: 0,
                    members: 3,
                },
            ),
            (
                isolate(&[1, 1], &three),
                E::Duplicate {
                    shape: "isolate",
                    list: "group",
                    index: 1,
                },
            ),
            (
                isolate(&[1], &[1, 2, 1]),
                E::Duplicate {
                    shape: "isolate",
                    list: "members",
                    index: 2,
                },
            ),
            (
                isolate(&[3, 2, 1], &three),
                E::NothingLeft {
                    shape: "isolate",
                    members: 3,
                },
            ),
            (
                isolate(&[1], &[1]),
                E::TooFewMembers {
                    shape: "isolate",
                    needed: 2,
                    got: 1,
                },
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got, Err(expected));
        }
    }

    #[test]
    fn the_other_shapes_refuse_bad_input() {
        use ShapeError as E;
        let three = members(3);
        let cases: Vec<(Result<Grudge<u8>, ShapeError>, ShapeError)> = vec![
            (
                halves(&[]),
                E::TooFewMembers {
                    shape: "halves",
                    needed: 2,
                    got: 0,
                },
            ),
            (
                halves(&[1]),
                E::TooFewMembers {
                    shape: "halves",
                    needed: 2,
                    got: 1,
                },
            ),
            (
                majorities_ring(&[1, 2]),
                E::TooFewMembers {
                    shape: "majorities-ring",
                    needed: 3,
                    got: 2,
                },
            ),
            (
                majorities_ring(&[1, 2, 2, 3]),
                E::Duplicate {
                    shape: "majorities-ring",
                    list: "members",
                    index: 2,
                },
            ),
            (
                bridge(&[1, 2]),
                E::TooFewMembers {
                    shape: "bridge",
                    needed: 3,
                    got: 2,
                },
            ),
            (
                singletons(&[], &three),
                E::EmptyGroup {
                    shape: "singletons",
                },
            ),
            (
                singletons(&[2, 4], &three),
                E::NotAMember {
                    shape: "singletons",
                    index: 1,
                    members: 3,
                },
            ),
            (
                singletons(&[1], &[1]),
                E::TooFewMembers {
                    shape: "singletons",
                    needed: 2,
                    got: 1,
                },
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got, Err(expected));
        }
    }

    #[test]
    fn shape_errors_say_what_to_do() {
        let messages = [
            ShapeError::EmptyGroup { shape: "isolate" }.to_string(),
            ShapeError::NotAMember {
                shape: "isolate",
                index: 1,
                members: 6,
            }
            .to_string(),
            ShapeError::TooFewMembers {
                shape: "bridge",
                needed: 3,
                got: 2,
            }
            .to_string(),
            ShapeError::NothingLeft {
                shape: "isolate",
                members: 3,
            }
            .to_string(),
            ShapeError::Duplicate {
                shape: "halves",
                list: "members",
                index: 2,
            }
            .to_string(),
        ];
        assert_eq!(
            messages[2],
            "bridge needs at least 3 members but got 2; target more nodes or choose another shape"
        );
        for message in messages {
            assert!(message.contains("; "), "no advice in {message:?}");
        }
    }

    fn endpoint(netns: &str, address: [u8; 4]) -> Endpoint {
        Endpoint {
            netns: netns.into(),
            address: address.into(),
        }
    }

    fn rule(netns: &str, destination: [u8; 4], priority: u32) -> PartitionRule {
        PartitionRule {
            netns: netns.into(),
            destination: destination.into(),
            prefix_len: 32,
            priority,
        }
    }

    #[test]
    fn rules_for_blocks_both_directions_in_a_stable_order() {
        let a1 = endpoint("fl-a1", [10, 203, 1, 1]);
        let a2 = endpoint("fl-a2", [10, 203, 1, 2]);
        let b1 = endpoint("fl-b1", [10, 203, 2, 1]);
        let c1 = endpoint("fl-c1", [10, 203, 3, 1]);
        let all = [c1.clone(), b1.clone(), a2.clone(), a1.clone()];
        let g = isolate(&[a2.clone(), a1.clone()], &all).unwrap();
        let p = priority_for_slot(7);
        assert_eq!(
            rules_for(&g, p),
            vec![
                rule("fl-a1", [10, 203, 2, 1], p),
                rule("fl-a1", [10, 203, 3, 1], p),
                rule("fl-a2", [10, 203, 2, 1], p),
                rule("fl-a2", [10, 203, 3, 1], p),
                rule("fl-b1", [10, 203, 1, 1], p),
                rule("fl-b1", [10, 203, 1, 2], p),
                rule("fl-c1", [10, 203, 1, 1], p),
                rule("fl-c1", [10, 203, 1, 2], p),
            ]
        );
        // The same grudge built from a differently ordered group gives the same rules.
        let again = isolate(&[a1, a2], &all).unwrap();
        assert_eq!(rules_for(&again, p), rules_for(&g, p));
        assert!(rules_for(&Grudge::new(), p).is_empty());
    }

    #[test]
    fn the_netlink_table_works_from_async_code() {
        let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
            status.lines().any(|line| {
                line.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    == Some("0")
            })
        });
        if !is_root {
            eprintln!("skipped: setns needs root");
            return;
        }
        // Our own namespace through /proc, read only: the dump runs on its own thread and
        // runtime, so calling it inside a runtime must not panic.
        let table = NetlinkRuleTable::new("/proc/self/ns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let listed = runtime.block_on(async { table.list_ours("net") });
        assert!(listed.unwrap().iter().all(|rule| rule.netns == "net"));
        assert!(table.list_ours("no-such-namespace").unwrap().is_empty());
        table
            .delete(&[rule(
                "no-such-namespace",
                [10, 203, 1, 1],
                RULE_PRIORITY_BASE,
            )])
            .unwrap();
        let err = table
            .add(
                &[rule(
                    "no-such-namespace",
                    [10, 203, 1, 1],
                    RULE_PRIORITY_BASE,
                )],
                u64::MAX,
            )
            .unwrap_err();
        assert!(netns::is_netns_gone(&err), "{err}");
    }

    #[test]
    fn zone_vs_rest_of_three_zones_of_two_is_sixteen_rules() {
        let all: Vec<Endpoint> = (1..=3u8)
            .flat_map(|zone| {
                (1..=2u8).map(move |n| endpoint(&format!("z{zone}n{n}"), [10, 203, zone, n]))
            })
            .collect();
        let rules = rules_for(&isolate(&all[..2], &all).unwrap(), priority_for_slot(0));
        assert_eq!(rules.len(), 16);
        let namespaces: BTreeSet<&str> = rules.iter().map(|r| r.netns.as_str()).collect();
        assert_eq!(namespaces.len(), 6);
        assert!(rules.iter().all(|r| is_ours(r.priority)));
    }
}
