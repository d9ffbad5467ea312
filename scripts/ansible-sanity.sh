#!/usr/bin/env bash
# ansible-test sanity for the collection, on the Python in use, without containers.
# ansible-test bootstraps pip in its venvs with a script it downloads from a host this machine cannot reach;
# scripts/ansible-test-get-pip.py stands in for it (pip from ensurepip, packages from the index).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
PIP_VERSION="$("$PY" -c 'import ansible_test._internal.python_requirements as r, inspect, re; print(re.search(r"pip=.(\d+\.\d+)", inspect.getsource(r)).group(1))')"
CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [ ! -f "$CACHE" ]; then
    mkdir -p "$(dirname "$CACHE")"
    cp "$ROOT/scripts/ansible-test-get-pip.py" "$CACHE"
fi
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
cd "$ROOT/ansible_collections/nomad_gpustack/nomad"
exec "$ROOT/.venv/bin/ansible-test" sanity --python "$PYVER" --requirements "$@"
