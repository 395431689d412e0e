//! The Kubernetes target: the custom resources (Fault, Halt, Experiment), the per-node plan of
//! a Fault, the runner's API-level faults (drain through the Eviction API with Faultline-owned
//! cordons, pod delete), the cluster as the engine's target, and for tests an in-memory API
//! server with real semantics (no API server can run on our test hosts) and the shared
//! tower-test harness.

pub mod cordon;
pub mod crd;
pub mod defaults;
pub mod drain;
pub mod experiment;
pub mod memory_api;
pub mod node_plan;
pub mod pod_delete;
pub mod run_site;
pub mod target;
pub mod wire_testing;
