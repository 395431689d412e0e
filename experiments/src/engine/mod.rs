//! The experiment engine: setup, baseline, inject, observe, heal, recovery watch, final
//! read-back, check, report. The final heal always runs.

pub mod execute;
pub mod load;
pub mod plan;
pub mod run;
pub mod site;
pub mod target;

use std::path::PathBuf;

use crate::lab::LabError;

/// Errors of an experiment run. Each says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
    /// The checkers or reports failed.
    #[error(transparent)]
    Check(#[from] crate::checkers::CheckError),
    /// The cluster target failed or refused: what, and what to do.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A selector matches nothing.
    #[error("{field}: {message}")]
    Selector {
        /// Lab name.
        lab: String,
        /// The field, e.g. `faults[0].selector.zone`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A fault would exceed the spec's blast radius.
    #[error("faults[{fault}] exceeds the blast radius: {message}")]
    BlastRadius {
        /// Index of the fault in the spec.
        fault: usize,
        /// What and by how much.
        message: String,
    },
    /// The results directory cannot be written.
    #[error("cannot write results to {path}: {source}; choose another --output-dir")]
    Results {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
