#!/usr/bin/env bash
# Creates (or reuses) the Python environment that carries libtorch, outside the clone.
#
# tch =0.24.0 links against libtorch 2.11.0; PyPI's torch==2.11.0 wheel ships it (the CUDA 13.0
# build, which also runs on CPU), so one binary runs on CPU machines and on GPU machines alike.
# transformers, safetensors and numpy are there for the cross-checks against the PyTorch ecosystem;
# kubernetes-validate checks deploy/ against Kubernetes' own OpenAPI schemas, offline.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages the build loads (a no-op when all are there).
scripts/prerequisites.sh

cache="${DEMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demeter}"
pyenv="$cache/venv"
requirements="torch==2.11.0 transformers==5.24.0 safetensors numpy kubernetes-validate==1.37.0"
stamp="$pyenv/.demeter-requirements"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$requirements" ]]; then
    exit 0
fi

mkdir -p "$cache"
echo "bootstrap: installing $requirements into $pyenv (one time, ~3 GB download)" >&2
python3 -m venv "$pyenv" || {
    echo "bootstrap: python3 -m venv failed; on Debian install python3-venv (apt-get install python3-venv)" >&2
    exit 1
}
# shellcheck disable=SC2086
"$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
echo "$requirements" > "$stamp"
