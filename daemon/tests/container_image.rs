//! The container image. `scripts/build-image.sh` builds it with buildah from the Containerfile
//! into an OCI archive; this test opens the archive as a runtime would (index, manifest,
//! config, layers), unpacks the image's filesystem and runs the configured entrypoint inside
//! it with `chroot`, where nothing but the image's own files exists: a binary that needed a
//! shared library would not start. It checks that `faultlined --version` and
//! `chaosctl --version` answer with the workspace version.
//!
//! The build compiles both binaries statically in release mode, which takes minutes. It is
//! skipped, with a message, where buildah is not installed (scripts/build-image.sh installs it)
//! or when FAULTLINE_SKIP_IMAGE_BUILD is set, and needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

/// The workspace version: the daemon crate takes its version from the workspace.
const WORKSPACE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `program` with `args` inside `root` as the whole filesystem: only what the image holds
/// is there, so a dynamically linked binary fails to start (its loader is missing).
fn run_in_root(root: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .ok_or("chroot (coreutils) is not installed")?;
    // A clean environment (C locale, no PATH): the image's own configuration is what counts.
    let output = Command::new(chroot)
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .output()
        .map_err(|error| format!("cannot start chroot: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} in {} failed ({}): {}",
            root.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An OCI image layout, unpacked from an archive.
struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    fn json(&self, relative: &str) -> Value {
        let path = self.dir.join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
    }

    fn blob_path(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().expect("descriptor digest");
        let (algorithm, hex) = digest.split_once(':').expect("algorithm:hex digest");
        self.dir.join("blobs").join(algorithm).join(hex)
    }

    fn blob_json(&self, descriptor: &Value) -> Value {
        let path = self.blob_path(descriptor);
        let text = std::fs::read_to_string(&path).expect("read blob");
        serde_json::from_str(&text).expect("blob is JSON")
    }
}

/// Every regular file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_image_entrypoint_runs_faultlined_version_from_the_image_alone() {
    if std::env::var_os("FAULTLINE_SKIP_IMAGE_BUILD").is_some() {
        eprintln!("skipping: FAULTLINE_SKIP_IMAGE_BUILD is set");
        return;
    }
    if !is_root() {
        eprintln!("skipping: building the image needs root (buildah's vfs storage, chroot)");
        return;
    }
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!(
            "skipping: buildah is not installed, so the container image is not built here. \
             scripts/build-image.sh installs it (apt-get install buildah); then run \
             `cargo test -p faultline-daemon --test container_image` to build and check the image"
        );
        return;
    }

    let work = tempfile::Builder::new()
        .prefix("faultline-image-")
        .tempdir()
        .expect("tempdir");
    let archive = work.path().join("faultline.oci.tar");
    let started = Instant::now();
    run(Command::new(repo_root().join("scripts/build-image.sh"))
        .arg("--output")
        .arg(&archive)
        .arg("--storage-root")
        .arg(work.path().join("storage")));
    let archive_size = std::fs::metadata(&archive).expect("archive").len();
    eprintln!(
        "image built in {:.0} s; OCI archive {:.1} MiB",
        started.elapsed().as_secs_f64(),
        archive_size as f64 / (1024.0 * 1024.0)
    );

    let layout = OciLayout {
        dir: work.path().join("oci"),
    };
    std::fs::create_dir(&layout.dir).expect("mkdir oci");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout.dir));
    let index = layout.json("index.json");
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest = layout.blob_json(&manifests[0]);
    let config = layout.blob_json(&manifest["config"]);

    let entrypoint: Vec<&str> = config["config"]["Entrypoint"]
        .as_array()
        .expect("the image has an entrypoint")
        .iter()
        .map(|arg| arg.as_str().expect("entrypoint argument"))
        .collect();
    assert_eq!(entrypoint, ["/usr/local/bin/faultlined"]);
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"].as_str(),
        Some(WORKSPACE_VERSION)
    );

    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir rootfs");
    for layer in manifest["layers"].as_array().expect("layers") {
        run(Command::new("tar")
            .arg("-xf")
            .arg(layout.blob_path(layer))
            .arg("-C")
            .arg(&rootfs));
    }
    assert_eq!(
        files_under(&rootfs),
        ["usr/local/bin/chaosctl", "usr/local/bin/faultlined"],
        "FROM scratch: the image holds the two binaries and nothing else"
    );

    let version = run_in_root(&rootfs, entrypoint[0], &["--version"])
        .unwrap_or_else(|error| panic!("the entrypoint does not run from the image: {error}"));
    assert_eq!(version.trim(), format!("faultlined {WORKSPACE_VERSION}"));
    let version = run_in_root(&rootfs, "/usr/local/bin/chaosctl", &["--version"])
        .unwrap_or_else(|error| panic!("chaosctl does not run from the image: {error}"));
    assert_eq!(version.trim(), format!("chaosctl {WORKSPACE_VERSION}"));
}

#[test]
fn a_dynamically_linked_binary_does_not_run_from_an_image_alone() {
    if !is_root() {
        eprintln!("skipping: chroot needs root");
        return;
    }
    // `true` from the host is linked against the host's libc, which the root does not hold.
    let host_true = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("a `true` binary on the host");
    let rootfs = tempfile::tempdir().expect("tempdir");
    let bin = rootfs.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    // Copied by `cp`, not from this process: a writable descriptor here could leak into a child
    // that the other test forks meanwhile, and exec would then fail with ETXTBSY.
    run(Command::new("cp")
        .arg(host_true)
        .arg(bin.join("faultlined")));
    let error = run_in_root(rootfs.path(), "/usr/local/bin/faultlined", &["--version"])
        .expect_err("a dynamically linked binary must not start without its loader");
    // chroot reports the missing loader as the program itself not being found.
    assert!(error.contains("No such file or directory"), "{error}");
}
