//! The Kubernetes target: the custom resources (Fault, Halt, Experiment), the per-node plan of a Fault, the runner's
//! API-level faults (drain through the Eviction API with Faultline-owned cordons, pod delete),
//! and an in-memory API server with real semantics for tests (no API server can run on our
//! test hosts).

pub mod cordon;
pub mod crd;
pub mod drain;
pub mod experiment;
pub mod memory_api;
pub mod node_plan;
pub mod pod_delete;
pub mod target;
pub mod wire_testing;
