//! The workload's configuration: tenants and tiers, patterns, rates, the adapter, and where the
//! history goes. [`WorkloadConfig::validate`] is pure; nothing here touches the system.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WorkloadError;

/// Which system the load goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// NATS JetStream directly: one stream per tenant.
    #[default]
    Nats,
    /// The HTTP tenant-records contract (the lab's tenant gateway, or a user's own service).
    Http,
}

impl AdapterKind {
    /// The name written in the history header.
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Nats => "nats",
            AdapterKind::Http => "http",
        }
    }
}

impl std::str::FromStr for AdapterKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nats" => Ok(AdapterKind::Nats),
            "http" => Ok(AdapterKind::Http),
            other => Err(format!("unknown adapter `{other}`; use nats or http")),
        }
    }
}

/// How the HTTP adapter's chat sessions talk to the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMode {
    /// Each message is its own HTTP request (`POST …/records`, then `GET …/records`).
    #[default]
    Http,
    /// One WebSocket per session (`GET …/chat`); each message and its reply read are frames on
    /// it, and opening it is a `connect` operation.
    Websocket,
}

impl std::str::FromStr for ChatMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(ChatMode::Http),
            "websocket" => Ok(ChatMode::Websocket),
            other => Err(format!(
                "unknown chat mode `{other}`; use http or websocket"
            )),
        }
    }
}

/// The three tenant tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Many tenants with little traffic and small records.
    Small,
    /// Fewer tenants with more traffic.
    Medium,
    /// A handful of heavy tenants with large records.
    Large,
}

impl Tier {
    /// Every tier, smallest first.
    pub const ALL: [Tier; 3] = [Tier::Small, Tier::Medium, Tier::Large];

    /// The tier's name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }

    /// Index into per-tier arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a tier's active tenants split their operations between the patterns (relative weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternMix {
    /// Chat sessions: request/reply bursts.
    pub chat: f64,
    /// Batch ingestion.
    pub batch: f64,
    /// Background jobs through a work queue.
    pub jobs: f64,
}

/// One tier's tenants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Share of all tenants in this tier (the three shares are normalised).
    pub share: f64,
    /// Relative operation rate of one active tenant of this tier.
    pub weight: f64,
    /// Smallest record payload, bytes.
    pub payload_min: usize,
    /// Largest record payload, bytes.
    pub payload_max: usize,
    /// Share of this tier's tenants that are idle tenants: long silences, then a burst.
    pub idle_fraction: f64,
    /// How active tenants split their operations between the patterns.
    pub mix: PatternMix,
    /// Job consumers (workers) per tenant that runs jobs.
    pub workers: u32,
}

impl TierConfig {
    /// The default for a tier: 70/25/5 tenants, weights 1/4/16, payloads 128–512 B, 512 B–2 KiB
    /// and 2–8 KiB.
    pub fn default_for(tier: Tier) -> Self {
        match tier {
            Tier::Small => Self {
                share: 0.70,
                weight: 1.0,
                payload_min: 128,
                payload_max: 512,
                idle_fraction: 0.3,
                mix: PatternMix {
                    chat: 0.8,
                    batch: 0.1,
                    jobs: 0.1,
                },
                workers: 1,
            },
            Tier::Medium => Self {
                share: 0.25,
                weight: 4.0,
                payload_min: 512,
                payload_max: 2048,
                idle_fraction: 0.1,
                mix: PatternMix {
                    chat: 0.5,
                    batch: 0.3,
                    jobs: 0.2,
                },
                workers: 1,
            },
            Tier::Large => Self {
                share: 0.05,
                weight: 16.0,
                payload_min: 2048,
                payload_max: 8192,
                idle_fraction: 0.0,
                mix: PatternMix {
                    chat: 0.3,
                    batch: 0.4,
                    jobs: 0.3,
                },
                workers: 2,
            },
        }
    }
}

/// The shapes of the patterns, shared by all tiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatternParams {
    /// Fewest messages in a chat session.
    pub chat_messages_min: u32,
    /// Most messages in a chat session.
    pub chat_messages_max: u32,
    /// Shortest think time between two messages of a session.
    #[serde(with = "humantime_serde")]
    pub think_min: Duration,
    /// Longest think time.
    #[serde(with = "humantime_serde")]
    pub think_max: Duration,
    /// When the reply (a read of the session's records) is due after its message.
    #[serde(with = "humantime_serde")]
    pub reply_after: Duration,
    /// Fewest documents in a batch.
    pub batch_min: u32,
    /// Most documents in a batch.
    pub batch_max: u32,
    /// Gap between two documents of a batch (they are pipelined: each is sent at its time
    /// without waiting for the previous acknowledgement).
    #[serde(with = "humantime_serde")]
    pub batch_gap: Duration,
    /// Mean silence of an idle tenant between two bursts (exponentially distributed).
    #[serde(with = "humantime_serde")]
    pub idle_silence: Duration,
    /// Fewest writes in an idle tenant's burst.
    pub burst_min: u32,
    /// Most writes in a burst.
    pub burst_max: u32,
    /// Gap between two writes of a burst.
    #[serde(with = "humantime_serde")]
    pub burst_gap: Duration,
    /// Most records one in-run read returns.
    pub read_limit: u32,
}

impl Default for PatternParams {
    fn default() -> Self {
        Self {
            chat_messages_min: 5,
            chat_messages_max: 10,
            think_min: Duration::from_millis(500),
            think_max: Duration::from_secs(3),
            reply_after: Duration::from_millis(20),
            batch_min: 10,
            batch_max: 100,
            batch_gap: Duration::from_millis(10),
            idle_silence: Duration::from_secs(60),
            burst_min: 10,
            burst_max: 30,
            burst_gap: Duration::from_millis(20),
            read_limit: 50,
        }
    }
}

/// Everything a workload run needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// The run id written in the history and observations headers; generated when `None`.
    pub run_id: Option<String>,
    /// Number of tenants.
    pub tenants: u32,
    /// Mean scheduled operations per second of the active tenants, all tenants together. Idle
    /// tenants' bursts come on top.
    pub rate: f64,
    /// How long the load runs (the schedule's length).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Seed of the schedule: the same seed gives the same schedule.
    pub seed: u64,
    /// Which system the load goes to.
    pub adapter: AdapterKind,
    /// Where the clients stand during a partition: `majority`, `per-zone` or `{zone: X}`.
    pub clients: super::clients::Clients,
    /// Replicas of each tenant's stream (NATS adapter and the lab gateway).
    pub stream_replicas: usize,
    /// With the `http` adapter on a lab: the lab services that serve the HTTP tenant-records
    /// contract; the load goes to every replica of each (default: `gateway`, the reference
    /// gateway of the built-in topology).
    pub http_services: Vec<String>,
    /// NATS connections the tenants share (tenant `i` uses connection `i mod n`). Connection `k`
    /// prefers server `k mod servers`.
    pub connections: usize,
    /// How long one NATS operation (publish acknowledgement, read) may take before it is given
    /// up as `info` (writes) or `fail` (reads).
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// How often a NATS connection pings its server when nothing else arrives. The client
    /// reconnects at the third unanswered ping, so this sets how fast a dead server is noticed.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long one HTTP request may take.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Retries of one HTTP request after a failed attempt (each retry is a new history
    /// operation with the same value and attempt + 1).
    pub http_retries: u32,
    /// With the `http` adapter: chat sessions as HTTP requests or over one WebSocket each.
    pub chat: ChatMode,
    /// Most operations in flight at once; when reached, new operations wait (their latency is
    /// still measured from their intended time).
    pub max_in_flight: usize,
    /// History file (JSON Lines).
    pub history: PathBuf,
    /// Observations file (JSON Lines).
    pub observations: PathBuf,
    /// Leader sampling period.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// After the schedule ends, how long job consumers may keep draining the work queues.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Delete and recreate the tenants' streams before the run, so the read-back sees only this
    /// run's values. The workload owns streams named `FL_<tenant>`.
    pub fresh: bool,
    /// Record fault windows from the lab's ledger (and replica restarts) as observations, and
    /// show active faults in the progress. Turn it off when the caller records its own fault
    /// windows (an engine), so each fault is recorded once.
    pub record_faults: bool,
    /// The convergence deadline, from the start of the final read-back: before reading, wait
    /// until every NATS server reports the same state for every stream (messages, bytes, first
    /// and last sequence, leader), or until this much time has passed. Zero reads at once, and
    /// still records every server's state as a `settled` observation.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// NATS on a lab: after the read-back through every server, read each server's own
    /// replica alone, with the other servers stopped and held down, so a node's read-back is
    /// that node's data (a direct get through a server may be answered by another replica).
    pub replica_read_back: bool,
    /// Per replica read alone: how long to wait for it to answer with the others down, and
    /// afterwards for the servers to be back and agree again before the next one.
    #[serde(with = "humantime_serde")]
    pub replica_wait: Duration,
    /// Small, medium and large tiers.
    pub tiers: [TierConfig; 3],
    /// Pattern shapes.
    pub patterns: PatternParams,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            run_id: None,
            tenants: 100,
            rate: 200.0,
            duration: Duration::from_secs(60),
            seed: 1,
            adapter: AdapterKind::Nats,
            clients: super::clients::Clients::Majority,
            stream_replicas: 3,
            http_services: vec![super::target::GATEWAY_SERVICE.to_owned()],
            connections: 3,
            op_timeout: Duration::from_secs(2),
            ping_interval: super::nats::DEFAULT_PING_INTERVAL,
            http_timeout: Duration::from_secs(3),
            http_retries: 3,
            chat: ChatMode::Http,
            max_in_flight: 4096,
            history: PathBuf::from("history.jsonl"),
            observations: PathBuf::from("observations.jsonl"),
            sample_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            fresh: true,
            record_faults: true,
            settle: Duration::ZERO,
            replica_read_back: true,
            replica_wait: Duration::from_secs(15),
            tiers: Tier::ALL.map(TierConfig::default_for),
            patterns: PatternParams::default(),
        }
    }
}

impl WorkloadConfig {
    /// The lab services the load goes to: the `http_services` with the `http` adapter, none
    /// with NATS (whose servers are found by their readiness).
    pub fn lab_http_services(&self) -> &[String] {
        if self.adapter == AdapterKind::Http {
            &self.http_services
        } else {
            &[]
        }
    }

    /// The tier config.
    pub fn tier(&self, tier: Tier) -> &TierConfig {
        &self.tiers[tier.index()]
    }

    /// Pure validation; the error lists every problem found.
    #[allow(clippy::too_many_lines)] // One check per field, in field order; splitting would scatter them.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let mut problems = Vec::new();
        if self.adapter == AdapterKind::Http && self.http_services.is_empty() {
            problems.push(
                "the http adapter needs at least one service to load (--service NAME)".to_owned(),
            );
        }
        if self.chat == ChatMode::Websocket && self.adapter != AdapterKind::Http {
            problems.push(
                "--chat websocket needs --adapter http (the chat socket is part of the HTTP contract)"
                    .to_owned(),
            );
        }
        if self.tenants == 0 {
            problems.push("--tenants must be at least 1".to_owned());
        }
        if self.tenants > 100_000 {
            problems.push(format!("--tenants {} is more than 100000", self.tenants));
        }
        if !self.rate.is_finite() || self.rate <= 0.0 {
            problems.push(format!(
                "--rate must be a positive number of operations per second, not {}",
                self.rate
            ));
        } else if self.rate > 1_000_000.0 {
            problems.push(format!(
                "--rate {} is more than 1000000 operations per second",
                self.rate
            ));
        }
        if self.duration.is_zero() {
            problems.push("--duration must be longer than 0".to_owned());
        }
        if let Err(problem) = self.clients.validate() {
            problems.push(format!("--clients: {problem}"));
        }
        if self.stream_replicas == 0 || self.stream_replicas > 5 {
            problems.push(format!(
                "stream replicas must be 1..=5, not {}",
                self.stream_replicas
            ));
        }
        if self.connections == 0 || self.connections > 256 {
            problems.push(format!(
                "connections must be 1..=256, not {}",
                self.connections
            ));
        }
        for (what, d) in [
            ("op timeout", self.op_timeout),
            ("ping interval", self.ping_interval),
            ("HTTP timeout", self.http_timeout),
            ("sample interval", self.sample_interval),
        ] {
            if d.is_zero() {
                problems.push(format!("{what} must be longer than 0"));
            }
        }
        if self.max_in_flight == 0 {
            problems.push("max in flight must be at least 1".to_owned());
        }
        if self.http_retries > 20 {
            problems.push(format!(
                "HTTP retries must be at most 20, not {}",
                self.http_retries
            ));
        }
        if self.history.as_os_str().is_empty() {
            problems.push("the history path is empty".to_owned());
        }
        if self.history == self.observations {
            problems.push(format!(
                "history and observations must be different files, both are {}",
                self.history.display()
            ));
        }
        let share_sum: f64 = self.tiers.iter().map(|t| t.share).sum();
        if !share_sum.is_finite() || share_sum <= 0.0 {
            problems.push("the tier shares must add up to more than 0".to_owned());
        }
        for tier in Tier::ALL {
            let t = self.tier(tier);
            let name = tier.name();
            let weights = [
                t.share,
                t.weight,
                t.idle_fraction,
                t.mix.chat,
                t.mix.batch,
                t.mix.jobs,
            ];
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                problems.push(format!(
                    "tier {name}: shares, weights and mixes must be finite and not negative"
                ));
            }
            if t.idle_fraction > 1.0 {
                problems.push(format!("tier {name}: idle fraction must be at most 1"));
            }
            if t.mix.chat + t.mix.batch + t.mix.jobs <= 0.0 && t.idle_fraction < 1.0 {
                problems.push(format!("tier {name}: the pattern mix is all zero"));
            }
            if t.payload_min > t.payload_max || t.payload_max > 512 * 1024 {
                problems.push(format!(
                    "tier {name}: payload sizes must satisfy min <= max <= 512 KiB, not {}..{}",
                    t.payload_min, t.payload_max
                ));
            }
            if t.workers > 64 {
                problems.push(format!("tier {name}: at most 64 workers per tenant"));
            }
        }
        let p = &self.patterns;
        for (what, lo, hi) in [
            ("chat messages", p.chat_messages_min, p.chat_messages_max),
            ("batch size", p.batch_min, p.batch_max),
            ("burst size", p.burst_min, p.burst_max),
        ] {
            if lo == 0 || lo > hi || hi > 100_000 {
                problems.push(format!(
                    "{what}: need 1 <= min <= max <= 100000, not {lo}..{hi}"
                ));
            }
        }
        if p.think_min > p.think_max {
            problems.push("think time: min is more than max".to_owned());
        }
        if p.idle_silence.is_zero() {
            problems.push("idle silence must be longer than 0".to_owned());
        }
        if p.read_limit == 0 {
            problems.push("read limit must be at least 1".to_owned());
        }
        // The other servers stay held down for twice this plus the reads: keep it short.
        if self.replica_read_back
            && (self.replica_wait.is_zero() || self.replica_wait > Duration::from_secs(600))
        {
            problems.push(format!(
                "--replica-wait must be between 1ms and 10m, not {}",
                humantime::format_duration(self.replica_wait)
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WorkloadError::Config(problems.join("; ")))
        }
    }
}

/// Serde for durations as humantime strings ("1s", "250ms").
pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        WorkloadConfig::default().validate().expect("valid");
    }

    #[test]
    fn bad_inputs_are_named() {
        type Change = Box<dyn Fn(&mut WorkloadConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.tenants = 0), "--tenants must be at least 1"),
            (Box::new(|c| c.rate = 0.0), "--rate must be a positive"),
            (Box::new(|c| c.rate = -3.0), "--rate must be a positive"),
            (Box::new(|c| c.rate = f64::NAN), "--rate must be a positive"),
            (Box::new(|c| c.duration = Duration::ZERO), "--duration"),
            (Box::new(|c| c.stream_replicas = 0), "stream replicas"),
            (
                Box::new(|c| c.observations = c.history.clone()),
                "different files",
            ),
            (
                Box::new(|c| c.tiers[0].payload_min = 10_000),
                "payload sizes",
            ),
            (
                Box::new(|c| c.patterns.chat_messages_min = 0),
                "chat messages",
            ),
            (
                Box::new(|c| c.chat = ChatMode::Websocket),
                "--chat websocket needs --adapter http",
            ),
        ];
        for (change, expected) in cases {
            let mut config = WorkloadConfig::default();
            change(&mut config);
            let error = config.validate().expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn yaml_round_trip_with_humantime_durations() {
        let config = WorkloadConfig::default();
        let yaml = serde_yaml::to_string(&config).expect("yaml");
        assert!(yaml.contains("duration: 1m"), "{yaml}");
        let back: WorkloadConfig = serde_yaml::from_str(&yaml).expect("parse");
        assert_eq!(back, config);
        let partial: WorkloadConfig =
            serde_yaml::from_str("tenants: 7\nduration: 30s\n").expect("partial");
        assert_eq!(partial.tenants, 7);
        assert_eq!(partial.duration, Duration::from_secs(30));
        assert!(serde_yaml::from_str::<WorkloadConfig>("tenantz: 7\n").is_err());
    }
}
