//! The experiment layer: the lab target, the tenant workload and its history, the checkers and
//! reports, the experiment spec and the engine that runs the phases.

pub mod checkers;
pub mod history;
pub mod lab;
pub mod spec;
pub mod report;
