//! The binaries' shared code: `chaosctl` (the CLI) and `faultlined`, one module per role: the
//! node `agent`, the cluster `controller`, the Experiment runner `run`, and `serve` (the
//! unattended scheduler with its HTTP API on the lab).

pub mod agent;
pub mod chaosctl;
pub mod controller;
pub mod run;
pub mod serve;

use std::path::PathBuf;

/// Finds the `faultlined` binary: `FAULTLINE_AGENT`, else next to the running executable.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAULTLINE_AGENT") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("faultlined")))
        .unwrap_or_else(|| PathBuf::from("faultlined"))
}

/// A client from `kubeconfig`, else the in-cluster service account (or `KUBECONFIG`). With
/// `retry`, kube's default retry of 429, 503 and 504 is on; code that must see those answers
/// itself (the drain's PodDisruptionBudget 429s, with its own backoff and timeout) turns it off.
///
/// # Errors
/// Neither works; the message says to pass `--kubeconfig`.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    retry: bool,
) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster service account and no kubeconfig; pass --kubeconfig")?,
    };
    let mut config = config;
    config.default_retry = retry;
    kube::Client::try_from(config).context("building the API client")
}
