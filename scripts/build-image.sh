#!/usr/bin/env bash
# Builds Faultline's container image offline: statically linked `faultlined` and `chaosctl`
# (glibc, crt-static, x86_64-unknown-linux-gnu) in an image FROM scratch (see Containerfile),
# written as an OCI archive. Uses Debian's buildah with the vfs storage driver, as root, and
# installs buildah with apt if it is missing. Nothing is pulled: FROM scratch needs no base image.
#
# The image reference (name and tag) is read from the one place that names it, the DaemonSet in
# manifests/faultline-agent.yaml, and its tag must equal the version of the binaries built.
#
# Usage: scripts/build-image.sh [--output FILE] [--storage-root DIR] [--image REF]
#   --output FILE        the OCI archive (default target/image/faultline.oci.tar)
#   --storage-root DIR   buildah's storage (default: buildah's own, /var/lib/containers/storage,
#                        so that `buildah push REF docker://...` works afterwards); tests pass a
#                        temporary directory
#   --image REF          tag the image REF instead of the manifests' reference
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=manifests/faultline-agent.yaml
target=x86_64-unknown-linux-gnu
output=target/image/faultline.oci.tar
storage_root=
image=

while [ "$#" -gt 0 ]; do
  case "$1" in
    --output) output=${2:?"--output needs a file"}; shift 2 ;;
    --storage-root) storage_root=${2:?"--storage-root needs a directory"}; shift 2 ;;
    --image) image=${2:?"--image needs a reference"}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: run as root (buildah's vfs storage and the image's file owners need it): sudo $0" >&2
  exit 1
fi

if [ -z "$image" ]; then
  mapfile -t refs < <(sed -n 's/^[[:space:]]*image:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*$/\1/p' "$manifest")
  if [ "${#refs[@]}" -ne 1 ]; then
    echo "build-image: expected exactly one 'image:' line in $manifest, found ${#refs[@]}; the manifests must name the image in one place" >&2
    exit 1
  fi
  image=${refs[0]}
fi
tag=${image##*:}
if [ "$tag" = "$image" ] || [[ "$tag" == */* ]]; then
  echo "build-image: image reference '$image' has no tag; give it NAME:VERSION" >&2
  exit 1
fi

if ! command -v buildah >/dev/null; then
  echo "build-image: installing buildah (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq buildah >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for candidate in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    if [ -x "$candidate/cargo" ]; then
      export PATH="$candidate:$PATH"
      break
    fi
  done
fi

# Run from `cargo test`, the environment carries the test crate's CARGO_MANIFEST_DIR,
# CARGO_PKG_* and the like; build scripts (ring's) track those, so they would make every
# dependency look changed and rebuild. Drop them: this build stands on its own.
while read -r var; do
  unset "$var"
done < <(compgen -e | grep -E '^(CARGO_(MANIFEST_|PKG_|CRATE_|BIN_|TARGET_TMPDIR$|PRIMARY_PACKAGE$)|OUT_DIR$)' || true)

# crt-static links glibc into the binaries, so they run in an image with no libc at all. The
# explicit --target keeps these flags off build scripts and proc macros, and keeps the static
# artefacts in their own directory (target/$target/release), apart from the ordinary builds.
echo "build-image: building static faultlined and chaosctl for $target (release)"
started=$(date +%s)
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin faultlined --bin chaosctl
echo "build-image: cargo build took $(($(date +%s) - started)) s"

bin_dir=target/$target/release
for binary in faultlined chaosctl; do
  # A dynamically linked ELF names its loader in a PT_INTERP program header.
  if LC_ALL=C readelf --program-headers --wide "$bin_dir/$binary" | grep -q 'INTERP'; then
    echo "build-image: $bin_dir/$binary is dynamically linked; it would not start FROM scratch" >&2
    exit 1
  fi
done

version=$("$bin_dir/faultlined" --version | awk '{print $2}')
if [ "$version" != "$tag" ]; then
  echo "build-image: the image tag '$tag' (from $manifest) differs from the binaries' version '$version'; set the tag to the workspace version" >&2
  exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# The release profile keeps line tables for backtraces on the machine that built them; in the
# image, which every node pulls, they would be three quarters of the size. Symbols stay, so
# backtraces still name functions.
for binary in faultlined chaosctl; do
  strip --strip-debug -o "$context/$binary" "$bin_dir/$binary"
done

buildah_args=(--storage-driver vfs)
if [ -n "$storage_root" ]; then
  mkdir -p "$storage_root"
  buildah_args+=(--root "$storage_root/root" --runroot "$storage_root/run")
fi

mkdir -p "$(dirname "$output")"
rm -f "$output"
# --timestamp 0 sets the creation time and every file's time to the epoch, so the same binaries
# give the same image digest.
buildah "${buildah_args[@]}" build --quiet --timestamp 0 \
  --build-arg "VERSION=$version" \
  --file Containerfile --tag "$image" "$context" >/dev/null
buildah "${buildah_args[@]}" push --quiet "$image" "oci-archive:$output:$image"

echo "build-image: $image written to $output ($(du -h "$output" | cut -f1))"
