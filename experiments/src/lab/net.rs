//! Building and removing the lab network: one namespace per node, a switch namespace with a
//! bridge, the client namespace (clients standing with the largest side of a partition) and
//! one client namespace per zone (clients sharing their zone's fate).
//!
//! The topology is built once per `lab up` with iproute2 (`ip netns add`, `ip link add`). That
//! is set-up, not a fault: faults never exec `ip`, they speak netlink (see
//! `faultline_injectors::net_partition`). Every step tolerates "already exists", so `lab up` can
//! run again over a half-built lab.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::state::LabPaths;
use super::topology::{Topology, CLIENT_ADDRESS, LAB_PREFIX_LEN};
use super::LabError;

const BRIDGE: &str = "br0";

fn ip(args: &[&str]) -> Result<(), LabError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LabError::Network {
            command: format!("ip {}", args.join(" ")),
            stderr: format!("{e}; is iproute2 installed?"),
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success()
        || stderr.contains("File exists")
        || stderr.contains("already assigned")
    {
        Ok(())
    } else {
        Err(LabError::Network {
            command: format!("ip {}", args.join(" ")),
            stderr: stderr.trim().to_owned(),
        })
    }
}

/// Creates every namespace, link and address of the lab. Idempotent.
pub fn build(paths: &LabPaths, topology: &Topology) -> Result<(), LabError> {
    let switch = paths.netns("sw");
    ip(&["netns", "add", &switch])?;
    ip(&["-n", &switch, "link", "set", "lo", "up"])?;
    ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;
    // (namespace name, switch port, address). Ports are at most 15 bytes: `v-` plus a node name
    // of at most 12, `vc-` plus a zone name of at most 12.
    let mut members: Vec<(String, String, String)> = topology
        .nodes()
        .into_iter()
        .map(|node| {
            let port = format!("v-{}", node.name);
            (node.name, port, node.address.to_string())
        })
        .collect();
    members.push((
        "client".to_owned(),
        "v-client".to_owned(),
        CLIENT_ADDRESS.to_string(),
    ));
    members.extend(topology.zone_clients().into_iter().map(|client| {
        let port = format!("vc-{}", client.zone);
        (client.name, port, client.address.to_string())
    }));
    for (name, port, address) in members {
        let netns = paths.netns(&name);
        let cidr = format!("{address}/{LAB_PREFIX_LEN}");
        ip(&["netns", "add", &netns])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ])?;
        ip(&["-n", &switch, "link", "set", &port, "master", BRIDGE, "up"])?;
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
    }
    Ok(())
}

/// The namespaces of this lab that exist now, found by prefix in `netns_dir`.
pub fn lab_namespaces(paths: &LabPaths, netns_dir: &Path) -> Vec<String> {
    let prefix = paths.netns_prefix();
    let Ok(entries) = fs::read_dir(netns_dir) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

/// The PIDs of every process whose network namespace is the one bound at `netns_file`.
pub fn pids_in_netns(netns_file: &Path, proc_root: &Path) -> Vec<i32> {
    let Ok(meta) = fs::metadata(netns_file) else {
        return vec![];
    };
    let wanted = format!("net:[{}]", meta.ino());
    let Ok(entries) = fs::read_dir(proc_root) else {
        return vec![];
    };
    entries
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .into_string()
                .ok()?
                .parse::<i32>()
                .ok()
        })
        .filter(|pid| {
            fs::read_link(proc_root.join(pid.to_string()).join("ns/net"))
                .is_ok_and(|link| link.to_str() == Some(wanted.as_str()))
        })
        .collect()
}

/// Kills every process inside the lab's namespaces (by PID, found through their namespace) and
/// deletes the namespaces. Returns the PIDs killed and the namespaces removed.
pub fn teardown(
    paths: &LabPaths,
    netns_dir: &Path,
    proc_root: &Path,
) -> Result<(Vec<i32>, Vec<String>), LabError> {
    let namespaces = lab_namespaces(paths, netns_dir);
    let mut killed = Vec::new();
    for netns in &namespaces {
        for pid in pids_in_netns(&netns_dir.join(netns), proc_root) {
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                killed.push(pid);
            }
        }
    }
    // Give the kernel a moment to let the killed processes release their namespaces.
    for pid in &killed {
        for _ in 0..100 {
            if !proc_root.join(pid.to_string()).exists()
                || super::super::lab::agent::is_zombie(proc_root, *pid)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    for netns in &namespaces {
        ip(&["netns", "delete", netns]).or_else(|error| {
            if netns_dir.join(netns).exists() {
                Err(error)
            } else {
                Ok(())
            }
        })?;
    }
    Ok((killed, namespaces))
}
