//! The Kubernetes target: the custom resources, the per-node plan of a Fault, and an in-memory
//! API server with real semantics for tests (no API server can run on our test hosts).

pub mod crd;
pub mod memory_api;
pub mod node_plan;
