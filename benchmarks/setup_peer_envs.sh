#!/usr/bin/env bash
# Create the benchmark-only virtual environments of the peer libraries under benchmarks/.envs/:
#
#   benchmarks/.envs/snntorch/      torch==2.13.0 + numpy + snntorch
#   benchmarks/.envs/spikingjelly/  torch==2.13.0 + numpy + spikingjelly (--no-deps, so that it keeps
#                                   torch 2.13.0) + the few packages it really imports
#
# Plain venvs (no --system-site-packages), so nothing of the main environment leaks into them and the
# peers run on exactly the same torch release as hm2bp. Safe to re-run: an env whose import check passes is
# left as it is (FORCE=1 rebuilds it). Usage:
#
#   bash benchmarks/setup_peer_envs.sh            # both
#   bash benchmarks/setup_peer_envs.sh snntorch   # one of them
#
# PYTHON (default python3) picks the interpreter; TORCH_VERSION (default 2.13.0) the torch release.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ENVS="$HERE/.envs"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
SNNTORCH_VERSION="${SNNTORCH_VERSION:-}"          # empty = newest on the index
SPIKINGJELLY_VERSION="${SPIKINGJELLY_VERSION:-}"  # empty = newest on the index
# spikingjelly's own requirements pin old releases of several packages (and, through them, could move
# torch); what `spikingjelly.activation_based.{neuron,layer,functional,surrogate}` actually imports is
# torch, numpy and loguru (found by importing it in a bare venv: spikingjelly 2.0.0's logger needs loguru,
# nothing else on the training path).
SPIKINGJELLY_DEPS=(${SPIKINGJELLY_DEPS:-loguru})

# Keep the envs out of git without touching .gitignore (which is not the benchmark's file).
GIT_DIR="$(git -C "$ROOT" rev-parse --git-common-dir 2>/dev/null || true)"
if [[ -n "$GIT_DIR" ]]; then
    [[ "$GIT_DIR" = /* ]] || GIT_DIR="$ROOT/$GIT_DIR"
    mkdir -p "$GIT_DIR/info"
    touch "$GIT_DIR/info/exclude"
    for pat in "benchmarks/.envs/" "benchmarks/results/quick.*"; do
        grep -qxF "$pat" "$GIT_DIR/info/exclude" || echo "$pat" >> "$GIT_DIR/info/exclude"
    done
fi

pin() {  # pin NAME VERSION -> "NAME" or "NAME==VERSION"
    if [[ -n "$2" ]]; then echo "$1==$2"; else echo "$1"; fi
}

check_import() {  # check_import ENV MODULE...
    local py="$ENVS/$1/bin/python"
    shift
    [[ -x "$py" ]] || return 1
    "$py" - "$TORCH_VERSION" "$@" <<'EOF' >/dev/null 2>&1
import importlib, sys
import torch
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
for m in sys.argv[2:]:
    importlib.import_module(m)
EOF
}

make_venv() {  # make_venv NAME
    local dir="$ENVS/$1"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    # The CPU build of torch: the index's manylinux wheel of 2.13.0 is the CPU one here.
    "$dir/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" numpy
}

setup_snntorch() {
    local mods=(snntorch snntorch.surrogate)
    if [[ "${FORCE:-0}" != 1 ]] && check_import snntorch "${mods[@]}"; then
        echo "snntorch env: ok (FORCE=1 to rebuild)"; return
    fi
    echo "snntorch env: creating $ENVS/snntorch"
    make_venv snntorch
    # snntorch's dependencies (torch, numpy, ...) are already satisfied; the pin keeps torch where it is.
    "$ENVS/snntorch/bin/python" -m pip install --quiet "$(pin snntorch "$SNNTORCH_VERSION")" "torch==$TORCH_VERSION"
    check_import snntorch "${mods[@]}" || { echo "snntorch env: import check failed" >&2; exit 1; }
    echo "snntorch env: ok"
}

setup_spikingjelly() {
    local mods=(spikingjelly.activation_based.neuron spikingjelly.activation_based.layer
                spikingjelly.activation_based.functional spikingjelly.activation_based.surrogate)
    if [[ "${FORCE:-0}" != 1 ]] && check_import spikingjelly "${mods[@]}"; then
        echo "spikingjelly env: ok (FORCE=1 to rebuild)"; return
    fi
    echo "spikingjelly env: creating $ENVS/spikingjelly"
    make_venv spikingjelly
    local py="$ENVS/spikingjelly/bin/python"
    "$py" -m pip install --quiet --no-deps "$(pin spikingjelly "$SPIKINGJELLY_VERSION")"
    if ((${#SPIKINGJELLY_DEPS[@]})); then
        "$py" -m pip install --quiet "${SPIKINGJELLY_DEPS[@]}" "torch==$TORCH_VERSION"
    fi
    check_import spikingjelly "${mods[@]}" || {
        echo "spikingjelly env: import check failed; the missing module:" >&2
        "$py" -c "import spikingjelly.activation_based.neuron, spikingjelly.activation_based.layer" >&2 || true
        exit 1
    }
    echo "spikingjelly env: ok"
}

mkdir -p "$ENVS"
targets=("$@")
((${#targets[@]})) || targets=(snntorch spikingjelly)
for t in "${targets[@]}"; do
    case "$t" in
        snntorch) setup_snntorch ;;
        spikingjelly) setup_spikingjelly ;;
        *) echo "unknown env $t (snntorch | spikingjelly)" >&2; exit 2 ;;
    esac
done
