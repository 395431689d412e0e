//! The fault lifecycle: record first, then inject; revert, then forget; reconcile whatever is
//! ours and has no live record or an expired deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::fault::{FaultAction, Injectors};
use crate::ledger::{new_fault_id, FaultRecord, HaltMarker, Ledger};
use crate::net_partition::{PartitionRule, RULE_PRIORITY_SLOTS};
use crate::process::ProcessTarget;
use crate::{Error, Result};

/// The longest fault anybody may ask for, unless configured otherwise.
pub const DEFAULT_MAX_FAULT_DURATION: Duration = Duration::from_secs(2 * 60 * 60);

/// What to inject and for how long.
pub struct FaultRequest<'a> {
    /// Human description of the target.
    pub target: String,
    /// How long the fault holds before reconcile reverts it.
    pub duration: Duration,
    /// The cap on `duration`.
    pub max_duration: Duration,
    /// Builds the resolved action once the rule-priority slot is known.
    pub build: Box<dyn FnOnce(u32) -> FaultAction + 'a>,
}

/// Everything that is ours and that a reconcile should look at.
#[derive(Clone, Debug, Default)]
pub struct ReconcileScope {
    /// Namespaces to scan for rules in our priority range.
    pub namespaces: Vec<String>,
    /// Service processes to check for a stop that no live pause owns.
    pub processes: Vec<ProcessTarget>,
}

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Faults reverted because their deadline passed.
    pub expired: Vec<String>,
    /// Faults reverted because of a halt.
    pub halted: Vec<String>,
    /// Rules of ours found with no live record, and removed.
    pub orphan_rules: Vec<PartitionRule>,
    /// Stopped service processes with no live pause record, continued.
    pub orphan_pauses: Vec<ProcessTarget>,
    /// Cordoned nodes with no live drain record, uncordoned.
    pub orphan_cordons: Vec<String>,
    /// Held replicas with no live stop record, released.
    pub orphan_holds: Vec<String>,
    /// Faults whose revert failed; their records stay for the next reconcile.
    pub failed: Vec<String>,
}

impl ReconcileReport {
    /// Whether the reconcile changed anything.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty()
            && self.halted.is_empty()
            && self.orphan_rules.is_empty()
            && self.orphan_pauses.is_empty()
            && self.orphan_cordons.is_empty()
            && self.orphan_holds.is_empty()
            && self.failed.is_empty()
    }
}

/// Records, then injects one fault. If the inject fails, the fault is reverted and its record
/// removed before the error is returned, so a failed inject leaves nothing behind.
pub fn start_fault(
    ledger: &Ledger,
    env: &Injectors<'_>,
    request: FaultRequest<'_>,
    now_unix_ms: u64,
) -> Result<FaultRecord> {
    start_fault_guarded(ledger, env, request, now_unix_ms, |_| Ok(()))
}

/// [`start_fault`], calling `guard` with the record once it is durable and before anything is
/// injected, still under the ledger lock: the place to start whatever must end the fault at
/// its deadline should every other process die. If `guard` fails, nothing is injected, the
/// record is removed, and its error is returned.
pub fn start_fault_guarded(
    ledger: &Ledger,
    env: &Injectors<'_>,
    request: FaultRequest<'_>,
    now_unix_ms: u64,
    guard: impl FnOnce(&FaultRecord) -> Result<()>,
) -> Result<FaultRecord> {
    // From the caller's `now`, not from when the lock was taken: the agent's reconcile or a
    // load's observer can hold the ledger lock for milliseconds on a busy host, and a completion
    // time that leaves out that wait starts the fault's window before its rules are in.
    let began = std::time::Instant::now();
    if request.duration.is_zero() || request.duration > request.max_duration {
        return Err(Error::Duration {
            requested_ms: request.duration.as_millis() as u64,
            cap_ms: request.max_duration.as_millis() as u64,
        });
    }
    let lock = ledger.lock()?;
    if let Some(marker) = ledger.halted()? {
        return Err(Error::Halted {
            since: time_and_age(marker.since_unix_ms, now_unix_ms),
        });
    }
    let (records, _corrupt) = ledger.list()?;
    let slot = free_slot(&records)?;
    let action = (request.build)(slot);
    let record = FaultRecord {
        id: new_fault_id(now_unix_ms),
        target: request.target,
        created_unix_ms: now_unix_ms,
        deadline_unix_ms: if action.is_instant() {
            now_unix_ms
        } else {
            now_unix_ms + request.duration.as_millis() as u64
        },
        action,
        applied_unix_ms: None,
    };
    ledger.write(&lock, &record)?;
    if let Err(guard_error) = guard(&record) {
        ledger.audit(
            AuditEvent::Inject,
            Some(&record),
            &format!("failed: {guard_error}"),
        );
        ledger.remove(&lock, &record.id)?;
        return Err(guard_error);
    }
    if let Err(inject_error) = record.action.inject(env, record.deadline_unix_ms) {
        ledger.audit(
            AuditEvent::Inject,
            Some(&record),
            &format!("failed: {inject_error}"),
        );
        // Leave nothing half-made; if even the revert fails, the record stays for reconcile.
        if record.action.revert(env).is_ok() {
            ledger.remove(&lock, &record.id)?;
        }
        return Err(inject_error);
    }
    ledger.audit(AuditEvent::Inject, Some(&record), "ok");
    if record.action.is_instant() {
        ledger.remove(&lock, &record.id)?;
        return Ok(record);
    }
    // The time the fault is fully in effect, which is what a judge of the run needs; the
    // creation time is earlier by the netlink installs (100 ms and more on a loaded host).
    let record = FaultRecord {
        // On the caller's clock: its `now` plus what the lock wait and the installs took,
        // rounded up to the next millisecond so that the window never starts early.
        applied_unix_ms: Some(now_unix_ms + began.elapsed().as_micros().div_ceil(1000) as u64),
        ..record
    };
    if let Err(write_error) = ledger.write(&lock, &record) {
        // The first record is still durable, so a failed revert here is left to reconcile.
        if record.action.revert(env).is_ok() {
            ledger.remove(&lock, &record.id)?;
        }
        return Err(write_error);
    }
    Ok(record)
}

fn free_slot(records: &[FaultRecord]) -> Result<u32> {
    let taken: BTreeSet<u32> = records
        .iter()
        .filter_map(|record| match &record.action {
            FaultAction::Partition { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect();
    (0..RULE_PRIORITY_SLOTS)
        .find(|slot| !taken.contains(slot))
        .ok_or(Error::NoFreeSlot)
}

/// Reverts one fault by id and removes its record. An unknown id counts as reverted.
pub fn revert_fault(ledger: &Ledger, env: &Injectors<'_>, id: &str) -> Result<bool> {
    let lock = ledger.lock()?;
    let (records, _corrupt) = ledger.list()?;
    let Some(record) = records.into_iter().find(|record| record.id == id) else {
        return Ok(false);
    };
    if let Err(error) = record.action.revert(env) {
        ledger.audit(
            AuditEvent::Revert,
            Some(&record),
            &format!("failed: {error}"),
        );
        return Err(error);
    }
    ledger.remove(&lock, &record.id)?;
    ledger.audit(AuditEvent::Revert, Some(&record), "ok");
    Ok(true)
}

/// A moment as people read it: RFC 3339 in UTC and how long ago, e.g.
/// `2026-12-03T08:10:00Z, 42 s ago`.
pub fn time_and_age(unix_ms: u64, now_unix_ms: u64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(unix_ms as i64).map_or_else(
        || format!("{unix_ms} ms after 1970"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let ago = now_unix_ms.saturating_sub(unix_ms) / 1000;
    format!("{at}, {ago} s ago")
}

/// Reverts expired faults (every fault, when halted), then removes what is ours but has no live
/// record: rules in our priority range, stopped service processes, cordoned nodes. Works with a
/// missing ledger directory: then everything found is an orphan.
pub fn reconcile(
    ledger: &Ledger,
    env: &Injectors<'_>,
    scope: &ReconcileScope,
    now_unix_ms: u64,
) -> Result<ReconcileReport> {
    let lock = ledger.lock()?;
    let halted = ledger.halted()?.is_some();
    let (records, _corrupt) = ledger.list()?;
    let mut report = ReconcileReport::default();
    let mut live = Vec::new();
    for record in records {
        if !halted && !record.expired(now_unix_ms) {
            live.push(record);
            continue;
        }
        let (event, done) = if halted {
            (AuditEvent::Revert, "ok (halt)")
        } else {
            (AuditEvent::Expire, "ok")
        };
        match record.action.revert(env) {
            Ok(()) => {
                ledger.remove(&lock, &record.id)?;
                ledger.audit(event, Some(&record), done);
                if halted {
                    report.halted.push(record.id);
                } else {
                    report.expired.push(record.id);
                }
            }
            Err(error) => {
                ledger.audit(
                    event,
                    Some(&record),
                    &format!("failed: {error} (will retry)"),
                );
                // Keep it live: its objects are still in place and must not look orphaned.
                report.failed.push(record.id.clone());
                live.push(record);
            }
        }
    }

    let mut live_rules = BTreeSet::new();
    let mut live_pauses = BTreeSet::new();
    let mut live_drains = BTreeSet::new();
    let mut live_holds = BTreeSet::new();
    for record in &live {
        match &record.action {
            FaultAction::Partition { rules, .. } => live_rules.extend(rules.iter().cloned()),
            FaultAction::Pause { process } => {
                live_pauses.insert(process.pid);
            }
            FaultAction::Drain { node } => {
                live_drains.insert(node.clone());
            }
            FaultAction::Stop { replica, .. } => {
                live_holds.insert(replica.clone());
            }
            FaultAction::Kill { .. } => {}
        }
    }

    for netns in &scope.namespaces {
        let orphans: Vec<PartitionRule> = env
            .rules
            .list_ours(netns)?
            .into_iter()
            .filter(|rule| !live_rules.contains(rule))
            .collect();
        if !orphans.is_empty() {
            env.rules.delete(&orphans)?;
            report.orphan_rules.extend(orphans);
        }
        let live_slots: BTreeSet<u32> = live_rules
            .iter()
            .filter(|rule| &rule.netns == netns)
            .map(|rule| rule.priority)
            .collect();
        env.rules.tidy(netns, &live_slots)?;
    }
    for process in &scope.processes {
        if !live_pauses.contains(&process.pid)
            && env.signals.is_stopped(process)
            && env.signals.signal(process, Signal::SIGCONT)?
        {
            report.orphan_pauses.push(process.clone());
        }
    }
    for node in env.scheduler.cordoned()? {
        if !live_drains.contains(&node) {
            env.scheduler.uncordon(&node)?;
            report.orphan_cordons.push(node);
        }
    }
    for replica in env.holder.held()? {
        if !live_holds.contains(&replica) {
            env.holder.release(&replica)?;
            report.orphan_holds.push(replica);
        }
    }
    Ok(report)
}

/// Blocks new faults, then reverts every active one.
pub fn halt(
    ledger: &Ledger,
    env: &Injectors<'_>,
    scope: &ReconcileScope,
    now_unix_ms: u64,
) -> Result<ReconcileReport> {
    {
        let lock = ledger.lock()?;
        ledger.set_halt(
            &lock,
            &HaltMarker {
                since_unix_ms: now_unix_ms,
            },
        )?;
    }
    ledger.audit(AuditEvent::Halt, None, "ok");
    reconcile(ledger, env, scope, now_unix_ms)
}

/// Allows new faults again after a [`halt`].
pub fn resume(ledger: &Ledger) -> Result<()> {
    let lock = ledger.lock()?;
    ledger.clear_halt(&lock)?;
    ledger.audit(AuditEvent::Resume, None, "ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net_partition::{priority_for_slot, RecordingRuleTable, RuleTable};
    use crate::node_drain::{NodeScheduler, RecordingScheduler};
    use crate::process::RecordingSignaller;
    use crate::service_stop::{RecordingHolder, ReplicaHolder};
    use std::net::Ipv4Addr;

    struct Fixture {
        _dir: tempfile::TempDir,
        ledger: Ledger,
        rules: RecordingRuleTable,
        signals: RecordingSignaller,
        scheduler: RecordingScheduler,
        holder: RecordingHolder,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let ledger = Ledger::new(dir.path().join("ledger"));
            Self {
                _dir: dir,
                ledger,
                rules: RecordingRuleTable::default(),
                signals: RecordingSignaller::default(),
                scheduler: RecordingScheduler::default(),
                holder: RecordingHolder::default(),
            }
        }

        fn env(&self) -> Injectors<'_> {
            Injectors {
                rules: &self.rules,
                signals: &self.signals,
                scheduler: &self.scheduler,
                holder: &self.holder,
            }
        }

        fn partition(&self, seconds: u64, now: u64) -> Result<FaultRecord> {
            start_fault(
                &self.ledger,
                &self.env(),
                FaultRequest {
                    target: "a vs rest".into(),
                    duration: Duration::from_secs(seconds),
                    max_duration: DEFAULT_MAX_FAULT_DURATION,
                    build: Box::new(|slot| FaultAction::Partition {
                        slot,
                        sides: vec![vec!["a1".into()], vec!["b1".into()]],
                        rules: vec![
                            rule("ns-a1", [10, 0, 0, 2], slot),
                            rule("ns-b1", [10, 0, 0, 1], slot),
                        ],
                    }),
                },
                now,
            )
        }
    }

    fn rule(netns: &str, to: [u8; 4], slot: u32) -> PartitionRule {
        PartitionRule {
            netns: netns.into(),
            destination: Ipv4Addr::from(to),
            prefix_len: 32,
            priority: priority_for_slot(slot),
        }
    }

    fn scope() -> ReconcileScope {
        ReconcileScope {
            namespaces: vec!["ns-a1".into(), "ns-b1".into()],
            processes: vec![],
        }
    }

    #[test]
    fn record_is_durable_before_inject_and_gone_after_expiry() {
        let f = Fixture::new();
        let record = f.partition(5, 1_000).expect("inject");
        assert_eq!(record.deadline_unix_ms, 6_000);
        assert_eq!(f.rules.installed().len(), 2);
        // The kernel is handed the record's own deadline, so it can end the fault without us.
        for rule in f.rules.installed() {
            assert_eq!(f.rules.deadline_of(&rule), Some(6_000));
        }
        assert_eq!(f.ledger.list().expect("list").0, vec![record.clone()]);

        let early = reconcile(&f.ledger, &f.env(), &scope(), 5_999).expect("reconcile");
        assert!(early.is_empty(), "a live fault must stay: {early:?}");
        assert_eq!(f.rules.installed().len(), 2);

        let late = reconcile(&f.ledger, &f.env(), &scope(), 6_000).expect("reconcile");
        assert_eq!(late.expired, vec![record.id]);
        assert!(f.rules.installed().is_empty());
        assert!(f.ledger.list().expect("list").0.is_empty());
    }

    #[test]
    fn two_partitions_get_distinct_slots() {
        let f = Fixture::new();
        let first = f.partition(5, 1_000).expect("first");
        let second = f.partition(5, 1_001).expect("second");
        let slot = |r: &FaultRecord| match r.action {
            FaultAction::Partition { slot, .. } => slot,
            _ => unreachable!(),
        };
        assert_ne!(slot(&first), slot(&second));
    }

    #[test]
    fn reconcile_without_ledger_removes_our_rules_only_when_orphaned() {
        let f = Fixture::new();
        f.partition(60, 1_000).expect("inject");
        std::fs::remove_dir_all(f.ledger.dir()).expect("delete ledger");
        let report = reconcile(&f.ledger, &f.env(), &scope(), 2_000).expect("reconcile");
        assert_eq!(report.orphan_rules.len(), 2);
        assert!(f.rules.installed().is_empty());
    }

    #[test]
    fn durations_outside_the_cap_are_refused_and_touch_nothing() {
        let f = Fixture::new();
        for seconds in [0, DEFAULT_MAX_FAULT_DURATION.as_secs() + 1] {
            let error = f.partition(seconds, 1_000).expect_err("must refuse");
            assert!(matches!(error, Error::Duration { .. }), "{error}");
        }
        assert!(f.rules.installed().is_empty());
        assert!(f.ledger.list().expect("list").0.is_empty());
    }

    #[test]
    fn halt_reverts_everything_and_blocks_until_resume() {
        let f = Fixture::new();
        f.partition(60, 1_000).expect("inject");
        let report = halt(&f.ledger, &f.env(), &scope(), 2_000).expect("halt");
        assert_eq!(report.halted.len(), 1);
        assert!(f.rules.installed().is_empty());
        assert!(matches!(f.partition(60, 3_000), Err(Error::Halted { .. })));
        resume(&f.ledger).expect("resume");
        f.partition(60, 4_000).expect("allowed again");
    }

    #[test]
    fn a_shared_halt_covers_every_ledger_that_shares_it_even_one_made_after_it() {
        let mut f = Fixture::new();
        let root = tempfile::tempdir().expect("tempdir");
        let marker = root.path().join("HALTED");
        f.ledger = f.ledger.clone().with_shared_halt(&marker);
        f.partition(60, 1_000).expect("inject");
        // Another lab's ledger halts the whole state root.
        let other = Ledger::new(root.path().join("other")).with_shared_halt(&marker);
        halt(&other, &f.env(), &scope(), 2_000).expect("halt");
        assert!(marker.exists());
        assert_eq!(
            reconcile(&f.ledger, &f.env(), &scope(), 2_100)
                .expect("reconcile")
                .halted
                .len(),
            1,
            "this lab's fault is reverted by the other's halt"
        );
        assert!(matches!(f.partition(60, 3_000), Err(Error::Halted { .. })));
        // A ledger made after the halt is halted too.
        let later = Ledger::new(root.path().join("later")).with_shared_halt(&marker);
        assert!(later.halted().expect("read").is_some());
        resume(&later).expect("resume");
        assert!(!marker.exists());
        f.partition(60, 4_000).expect("allowed again everywhere");
    }

    #[test]
    fn orphan_cordon_is_uncordoned_but_a_live_drain_is_kept() {
        let f = Fixture::new();
        f.scheduler.cordon("stray").expect("cordon");
        let drain = start_fault(
            &f.ledger,
            &f.env(),
            FaultRequest {
                target: "node a1".into(),
                duration: Duration::from_secs(60),
                max_duration: DEFAULT_MAX_FAULT_DURATION,
                build: Box::new(|_| FaultAction::Drain { node: "a1".into() }),
            },
            1_000,
        )
        .expect("drain");
        assert_eq!(f.scheduler.evictions(), vec!["a1".to_owned()]);
        let report = reconcile(&f.ledger, &f.env(), &scope(), 2_000).expect("reconcile");
        assert_eq!(report.orphan_cordons, vec!["stray".to_owned()]);
        assert_eq!(f.scheduler.cordoned().expect("list"), vec!["a1".to_owned()]);
        assert!(revert_fault(&f.ledger, &f.env(), &drain.id).expect("revert"));
        assert!(!revert_fault(&f.ledger, &f.env(), &drain.id).expect("idempotent"));
        assert!(f.scheduler.cordoned().expect("list").is_empty());
    }

    #[test]
    fn stop_holds_then_kills_and_an_orphan_hold_is_released() {
        let f = Fixture::new();
        f.holder.hold("gateway/3").expect("stray hold");
        let process = ProcessTarget {
            pid: 4242,
            start_ticks: 1,
            label: "nats/2".into(),
        };
        let stop = start_fault(
            &f.ledger,
            &f.env(),
            FaultRequest {
                target: "nats/2".into(),
                duration: Duration::from_secs(60),
                max_duration: DEFAULT_MAX_FAULT_DURATION,
                build: Box::new(move |_| FaultAction::Stop {
                    replica: "nats/2".into(),
                    process,
                }),
            },
            1_000,
        )
        .expect("stop");
        assert_eq!(f.signals.sent(), vec![(4242, Signal::SIGKILL)]);
        let report = reconcile(&f.ledger, &f.env(), &scope(), 2_000).expect("reconcile");
        assert_eq!(report.orphan_holds, vec!["gateway/3".to_owned()]);
        assert_eq!(f.holder.held().expect("held"), vec!["nats/2".to_owned()]);
        revert_fault(&f.ledger, &f.env(), &stop.id).expect("revert");
        assert!(f.holder.held().expect("held").is_empty());
    }

    #[test]
    fn a_failed_inject_leaves_neither_rules_nor_record() {
        struct FailingRules(RecordingRuleTable);
        impl RuleTable for FailingRules {
            fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()> {
                self.0.add(&rules[..1], deadline_unix_ms)?;
                Err(Error::Netlink {
                    netns: rules[1].netns.clone(),
                    reason: "refused".into(),
                })
            }
            fn delete(&self, rules: &[PartitionRule]) -> Result<()> {
                self.0.delete(rules)
            }
            fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>> {
                self.0.list_ours(netns)
            }
        }
        let f = Fixture::new();
        let failing = FailingRules(RecordingRuleTable::default());
        let env = Injectors {
            rules: &failing,
            ..f.env()
        };
        let error = start_fault(
            &f.ledger,
            &env,
            FaultRequest {
                target: "x".into(),
                duration: Duration::from_secs(5),
                max_duration: DEFAULT_MAX_FAULT_DURATION,
                build: Box::new(|slot| FaultAction::Partition {
                    slot,
                    sides: vec![],
                    rules: vec![
                        rule("ns-a1", [10, 0, 0, 2], slot),
                        rule("ns-b1", [10, 0, 0, 1], slot),
                    ],
                }),
            },
            1_000,
        )
        .expect_err("inject fails");
        assert!(matches!(error, Error::Netlink { .. }));
        assert!(failing.0.installed().is_empty());
        assert!(f.ledger.list().expect("list").0.is_empty());
    }

    #[test]
    fn the_guard_sees_a_durable_record_before_the_inject_and_its_failure_injects_nothing() {
        let f = Fixture::new();
        let process = ProcessTarget {
            pid: 4242,
            start_ticks: 7,
            label: "nats/2".into(),
        };
        let pause = |process: ProcessTarget| FaultRequest {
            target: "nats/2".into(),
            duration: Duration::from_secs(30),
            max_duration: DEFAULT_MAX_FAULT_DURATION,
            build: Box::new(move |_| FaultAction::Pause { process }),
        };
        let mut seen = None;
        let record = start_fault_guarded(&f.ledger, &f.env(), pause(process.clone()), 1_000, |r| {
            // Durable already, and nothing injected yet.
            seen = Some((f.ledger.contains(&r.id), f.signals.sent().len()));
            Ok(())
        })
        .expect("pause");
        assert_eq!(seen, Some((true, 0)));
        assert_eq!(f.signals.sent(), vec![(4242, Signal::SIGSTOP)]);
        assert!(f.ledger.contains(&record.id));

        let error = start_fault_guarded(&f.ledger, &f.env(), pause(process), 2_000, |r| {
            Err(Error::DeadlineGuard {
                fault: r.id.clone(),
                reason: "no guard binary".into(),
            })
        })
        .expect_err("a guard that cannot start refuses the fault");
        assert!(matches!(error, Error::DeadlineGuard { .. }), "{error}");
        assert_eq!(
            f.signals.sent().len(),
            1,
            "nothing more was signalled: {:?}",
            f.signals.sent()
        );
        assert_eq!(f.ledger.list().expect("list").0, vec![record]);
    }

    #[test]
    fn the_record_says_when_the_injection_completed_after_every_rule_went_in() {
        // Rules that take 30 ms to install and look at the ledger while they go in.
        struct SlowRules {
            inner: RecordingRuleTable,
            ledger: Ledger,
            seen_during_install: std::sync::Mutex<Vec<Option<u64>>>,
        }
        impl RuleTable for SlowRules {
            fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()> {
                let (records, _) = self.ledger.list()?;
                self.seen_during_install
                    .lock()
                    .expect("not poisoned")
                    .extend(records.iter().map(|r| r.applied_unix_ms));
                std::thread::sleep(Duration::from_millis(30));
                self.inner.add(rules, deadline_unix_ms)
            }
            fn delete(&self, rules: &[PartitionRule]) -> Result<()> {
                self.inner.delete(rules)
            }
            fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>> {
                self.inner.list_ours(netns)
            }
        }
        let f = Fixture::new();
        let slow = SlowRules {
            inner: RecordingRuleTable::default(),
            ledger: f.ledger.clone(),
            seen_during_install: std::sync::Mutex::default(),
        };
        let env = Injectors {
            rules: &slow,
            ..f.env()
        };
        let record = start_fault(
            &f.ledger,
            &env,
            FaultRequest {
                target: "a vs rest".into(),
                duration: Duration::from_secs(5),
                max_duration: DEFAULT_MAX_FAULT_DURATION,
                build: Box::new(|slot| FaultAction::Partition {
                    slot,
                    sides: vec![vec!["a1".into()], vec!["b1".into()]],
                    rules: vec![
                        rule("ns-a1", [10, 0, 0, 2], slot),
                        rule("ns-b1", [10, 0, 0, 1], slot),
                    ],
                }),
            },
            1_000,
        )
        .expect("inject");
        // While the rules went in, the durable record had no completion time.
        let seen = slow
            .seen_during_install
            .lock()
            .expect("not poisoned")
            .clone();
        assert!(
            !seen.is_empty() && seen.iter().all(Option::is_none),
            "{seen:?}"
        );
        // After: on the caller's clock, no earlier than the installs took.
        let applied = record.applied_unix_ms.expect("applied");
        assert!(applied >= 1_030, "{applied}");
        assert_eq!(record.created_unix_ms, 1_000);
        assert_eq!(f.ledger.list().expect("list").0, vec![record]);
        assert_eq!(slow.inner.installed().len(), 2);
    }

    #[test]
    fn the_completion_time_counts_the_wait_for_the_ledger_lock() {
        // Another process (the agent's reconcile, a load's observer) holds the lock for 40 ms
        // while this fault is started: the fault cannot be in effect before the wait ends.
        let f = Fixture::new();
        let holder = f.ledger.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let hold = std::thread::spawn(move || {
            let lock = holder.lock().expect("lock");
            locked_tx.send(()).expect("send");
            std::thread::sleep(Duration::from_millis(40));
            drop(lock);
        });
        locked_rx.recv().expect("the other holder has the lock");
        let record = start_fault(
            &f.ledger,
            &f.env(),
            FaultRequest {
                target: "a vs rest".into(),
                duration: Duration::from_secs(5),
                max_duration: DEFAULT_MAX_FAULT_DURATION,
                build: Box::new(|slot| FaultAction::Partition {
                    slot,
                    sides: vec![vec!["a1".into()], vec!["b1".into()]],
                    rules: vec![rule("ns-a1", [10, 0, 0, 2], slot)],
                }),
            },
            1_000,
        )
        .expect("inject");
        hold.join().expect("holder thread");
        let applied = record.applied_unix_ms.expect("applied");
        // Less a margin for the moments between the other holder taking the lock and this call.
        assert!(
            applied >= 1_030,
            "applied at {applied}, before the lock was free"
        );
    }

    #[test]
    fn reconcile_tidies_each_namespace_sparing_live_slots_only() {
        /// Records what `tidy` was asked to spare, per namespace.
        #[derive(Default)]
        struct TidyRecorder {
            rules: RecordingRuleTable,
            spared: std::sync::Mutex<Vec<(String, BTreeSet<u32>)>>,
        }
        impl RuleTable for TidyRecorder {
            fn add(&self, rules: &[PartitionRule], deadline_unix_ms: u64) -> Result<()> {
                self.rules.add(rules, deadline_unix_ms)
            }
            fn delete(&self, rules: &[PartitionRule]) -> Result<()> {
                self.rules.delete(rules)
            }
            fn list_ours(&self, netns: &str) -> Result<Vec<PartitionRule>> {
                self.rules.list_ours(netns)
            }
            fn tidy(&self, netns: &str, live: &BTreeSet<u32>) -> Result<Vec<u32>> {
                self.spared
                    .lock()
                    .expect("poisoned")
                    .push((netns.to_owned(), live.clone()));
                Ok(Vec::new())
            }
        }
        let f = Fixture::new();
        let recorder = TidyRecorder::default();
        let env = Injectors {
            rules: &recorder,
            ..f.env()
        };
        let request = |slot_rules: fn(u32) -> Vec<PartitionRule>| FaultRequest {
            target: "a vs b".into(),
            duration: Duration::from_secs(60),
            max_duration: DEFAULT_MAX_FAULT_DURATION,
            build: Box::new(move |slot| FaultAction::Partition {
                slot,
                sides: vec![],
                rules: slot_rules(slot),
            }),
        };
        let live = start_fault(
            &f.ledger,
            &env,
            request(|slot| vec![rule("ns-a1", [10, 0, 0, 2], slot)]),
            1_000,
        )
        .expect("live partition");
        let FaultAction::Partition { slot, .. } = live.action else {
            unreachable!("a partition was injected")
        };
        reconcile(&f.ledger, &env, &scope(), 2_000).expect("reconcile");
        let spared = recorder.spared.lock().expect("poisoned").clone();
        assert_eq!(
            spared,
            vec![
                (
                    "ns-a1".to_owned(),
                    BTreeSet::from([priority_for_slot(slot)])
                ),
                ("ns-b1".to_owned(), BTreeSet::new()),
            ]
        );
        // Once it expired, nothing is spared any more.
        recorder.spared.lock().expect("poisoned").clear();
        reconcile(&f.ledger, &env, &scope(), 61_000).expect("reconcile");
        assert!(recorder
            .spared
            .lock()
            .expect("poisoned")
            .iter()
            .all(|(_, live)| live.is_empty()));
    }
}
