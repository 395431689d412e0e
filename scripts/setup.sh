#!/usr/bin/env bash
# Installs what Faultline needs on a fresh Debian machine that has Rust: nats-server, iproute2,
# util-linux (setpriv, for the non-root test), wrk (HTTP benchmark baseline), chromium (the
# daemon's web page is tested in headless Chromium) and, from PyPI, kubernetes-validate (manifest
# schemas). Idempotent.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the lab creates network namespaces): sudo $0" >&2
  exit 1
fi

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v ip >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v wrk >/dev/null || missing+=(wrk)
command -v chromium >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
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
echo "setup: $(nats-server --version), kubernetes-validate $kubernetes_validate_version, helm-python-sdk $helm_python_sdk_version, $(cargo --version)"
