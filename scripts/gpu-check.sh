#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md as one command, for a session the device tool lends a GPU.
#
#   here:   scripts/gpu-check.sh build
#           builds the release `demeter` into gpu-check/ (ignored by git), stripped to fit the
#           device tool's 64 MiB carry limit. The GPU machine's /opt/torch/.venv has torch
#           2.11.0 and transformers (device tool's KINDS.md), all pytorch_demo_step.py needs.
#   there:  scripts/gpu-check.sh run
#           (device tool: command "scripts/gpu-check.sh run", carry ["gpu-check"], timeout 540)
#           writes $OUT/gpu-check.md, within about 8 minutes: for the 150m and 1b presets in bf16,
#           Demeter's step split and tokens/s (`demeter simulate`), the paper's reference DeMo
#           step in PyTorch on the same GPU and model, and one `demeter local --clients 1` run on
#           CUDA, the spot-check bench (`spot_check`, its tolerance table with a row of
#           results computed on the GPU and recomputed on the CPU: what spot_check_tolerance
#           must allow across kinds of device), and what verifying costs a client at a
#           client's batch (`verification_cost`); each part's full log beside it in $OUT.
#   dry run on this machine's CPU (checks the script, the binary and the arguments):
#           GPU_CHECK_PRESETS=tiny GPU_CHECK_STEPS=2 OUT=/tmp/gpu-check scripts/gpu-check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
dir=gpu-check

build() {
    # shellcheck source=scripts/env.sh
    . scripts/env.sh
    cargo build --release --locked -p demeter-trainer --bin demeter
    rm -rf "$dir"
    mkdir -p "$dir"
    objcopy --strip-debug "$CARGO_TARGET_DIR/release/demeter" "$dir/demeter"
    # The spot-check and verification-cost benches in the dev profile (opt-level 1, built by
    # every CI run already).
    local name bench
    for name in spot_check verification_cost; do
        bench=$(cargo bench --locked -p demeter-trainer --bench "$name" --profile dev --no-run 2>&1 |
            sed -n "s/.*Executable .*(\(.*$name-[0-9a-f]*\)).*/\1/p" | tail -n 1)
        [[ -x $bench ]] || { echo "gpu-check: the $name bench did not build" >&2; exit 1; }
        objcopy --strip-debug "$bench" "$dir/$name"
    done
    du -sh "$dir"/*
    local total
    total=$(du -sm "$dir" | cut -f1)
    ((total < 64)) || { echo "gpu-check: $dir is ${total} MiB, over the device tool's 64 MiB carry" >&2; exit 1; }
}

# A markdown section for `title`, from the last `lines` lines of `log`.
section() {
    local title=$1 log=$2 lines=$3
    {
        echo "## $title"
        echo
        echo '```'
        tail -n "$lines" "$log"
        echo '```'
        echo
    } >> "$report"
}

# Runs `command...` with a time limit, its output to `log`; a failure is recorded, not fatal,
# so one broken row does not lose the others.
step() {
    local seconds=$1 log=$2
    shift 2
    echo "gpu-check: $* (at most ${seconds}s)" >&2
    # The GPU's memory in use, sampled every 200 ms while the command runs: its peak is the
    # memory row of the step.
    local sampler=
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 \
            > "$log.memory" 2>/dev/null &
        sampler=$!
    fi
    local rc=0
    timeout "$seconds" "$@" > "$log" 2>&1 || rc=$?
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null || true
        echo "peak GPU memory in use: $(sort -n "$log.memory" | tail -n 1) MiB" >> "$log"
    fi
    if ((rc != 0)); then
        echo "(exit status $rc$( ((rc == 124)) && echo ", timed out after ${seconds}s"))" >> "$log"
    fi
}

run() {
    out=${OUT:?OUT must name the output folder (the device tool sets it)}
    mkdir -p "$out"
    report=$out/gpu-check.md
    local presets=${GPU_CHECK_PRESETS:-150m,1b}
    local steps=${GPU_CHECK_STEPS:-6}
    local demeter=$dir/demeter
    [[ -x $demeter ]] || { echo "gpu-check: no $demeter; run 'scripts/gpu-check.sh build' here first" >&2; exit 1; }

    # The GPU machine's torch, else (a dry run here) the bootstrapped one.
    local python=/opt/torch/.venv/bin/python
    if [[ ! -x $python ]]; then
        # shellcheck source=scripts/env.sh
        . scripts/env.sh
        python=$DEMETER_PYTHON
    fi
    local torch_lib
    torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

    {
        echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo '```'
        if command -v nvidia-smi > /dev/null; then
            nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        else
            echo "no nvidia-smi: a dry run"
        fi
        "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
        echo '```'
        echo
    } > "$report"

    local scratch
    scratch=$(mktemp -d)
    IFS=, read -r -a preset_list <<< "$presets"
    for preset in "${preset_list[@]}"; do
        # Two workers of 4 x 512 tokens: the shapes of the step_time bench's large presets.
        step 150 "$out/simulate-$preset.log" "$demeter" simulate --preset "$preset" \
            --workers 2 --batch 4 --seq-len 512 --steps "$steps" --quiet
        section "demeter simulate --preset $preset (2 workers x 4 x 512, $steps steps)" \
            "$out/simulate-$preset.log" 40

        step 60 "$out/init-$preset.log" "$demeter" model init --preset "$preset" \
            --out "$scratch/$preset"
        step 150 "$out/pytorch-$preset.log" "$python" trainer-image/benches/pytorch_demo_step.py \
            "$scratch/$preset" --batch 4 --seq-len 512 --steps "$((steps * 2))"
        section "PyTorch reference DeMo step, $preset (4 x 512)" "$out/pytorch-$preset.log" 20
        rm -rf "${scratch:?}/$preset"
    done

    step 150 "$out/spot-check.log" env SPOT_CHECK_PRESETS=tiny,20m "$dir/spot_check"
    section "spot checks: tolerance (tiny, 20m; the last row of a preset is the GPU against the CPU)" \
        "$out/spot-check.log" 15
    step 150 "$out/verification-cost.log" env VERIFICATION_COST_SHAPES=20m:32x512,150m:32x512 \
        "$dir/verification_cost"
    section "what verifying costs a client (20m and 150m at a client's 32 x 512 tokens)" \
        "$out/verification-cost.log" 25

    local first=${preset_list[0]}
    step 180 "$out/local.log" "$demeter" local --clients 1 --steps "$steps" --preset "$first" \
        --seq-len 512 --global-batch 4 --dir "$scratch/local"
    cp "$scratch"/local/*.log "$out/" 2>/dev/null || true
    section "demeter local --clients 1 --preset $first ($steps steps, one client process)" \
        "$out/local.log" 30
    rm -rf "$scratch"
    echo "gpu-check: wrote $report" >&2
}

case "${1:-}" in
build) build ;;
run) run ;;
*)
    echo "usage: scripts/gpu-check.sh build|run (see the comment at its top)" >&2
    exit 2
    ;;
esac
