//! `tenant-gateway`: the lab's reference implementation of the HTTP tenant-records contract on
//! NATS JetStream (docs/workload.md), chat socket (`GET /v1/tenants/{t}/chat`, WebSocket)
//! included. Stateless; the lab runs one replica per zone.

use faultline_experiments::stderr_line;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use faultline_experiments::workload::gateway::{serve, GatewayConfig};
use faultline_experiments::workload::CancellationToken;

/// Serves tenants' records over HTTP (and chat sessions over WebSocket) on top of NATS
/// JetStream.
#[derive(Parser)]
#[command(name = "tenant-gateway", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// NATS server URLs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    nats: Vec<String>,
    /// Name of the node this replica runs on, reported in `X-Served-By`.
    #[arg(long, default_value = "gateway")]
    node: String,
    /// Prefer NATS servers in this address's /24 (this replica's zone in the lab).
    #[arg(long)]
    prefer: Option<Ipv4Addr>,
    /// Replicas of the tenant streams it creates.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// How long to wait for a JetStream publish acknowledgement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    ack_timeout: Duration,
    /// BROKEN ON PURPOSE: answer 201 before the write is stored (a negative control for the
    /// checkers). Off by default.
    #[arg(long)]
    unsafe_ack: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            stderr_line!("tenant-gateway: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let config = GatewayConfig {
        listen: args.listen,
        nats: args.nats,
        node: args.node,
        prefer: args.prefer,
        replicas: args.replicas,
        ack_timeout: args.ack_timeout,
        unsafe_ack: args.unsafe_ack,
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        #[cfg(unix)]
        {
            let stop = shutdown.clone();
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::spawn(async move {
                    term.recv().await;
                    stop.cancel();
                });
            }
        }
        serve(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stderr_line!("tenant-gateway: error: {e}");
            ExitCode::from(2)
        }
    }
}
