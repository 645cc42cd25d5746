#!/usr/bin/env bash
# One device session's GPU measurements for issue #9, as a single command (about 9 minutes on an
# H100/H200 by design; nothing here has run on a GPU yet; each setting's JSON lands under $OUT as
# it finishes, so a cut-short session keeps the earlier ones). On the device machine, from the repo:
#
#   bash bench/gpu_bench.sh            # paper model (config.paper.yaml), JSON files under $OUT
#   CONFIG=config.yaml STEPS=20 bash bench/gpu_bench.sh   # a quick CPU smoke run of the script
#
# The device image lacks diffusers, umap-learn, pynndescent, jsonschema (+ referencing, rpds-py):
# download their wheels into .whl/ here first (see /work/.library/device/README.md) and carry
# .whl; they are installed into /tmp/site when present.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench_out}"
CONFIG="${CONFIG:-config.paper.yaml}"
STEPS="${STEPS:-100}"
# compiled settings: bench_bumps compiles in an untimed warm-up step; longer runs average out
# CUDA-graph replays and the checkpoint at the end
COMPILE_STEPS="${COMPILE_STEPS:-1000}"
PACK="${PACK:-4}"
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

bench() {  # bench NAME ARGS...: one bench_bumps run, its JSON and log under $OUT
    local name=$1
    shift
    echo "== $name: $*"
    timeout 240 python3 bench/bench_bumps.py --config "$CONFIG" --steps "${BENCH_STEPS:-$STEPS}" --rounds 2 \
        --training-only --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1 || echo "   failed or timed out: see $name.log"
}

# like with like: each setting in the pipeline and the bare loop; packing (K in turn, K stacked) eager
bench fp32_eager_packed --packed "$PACK"
bench bf16_eager --set precision=bf16
bench fp32_tf32_fused --set tf32=true --set fused_optimizer=true
BENCH_STEPS=$COMPILE_STEPS bench fp32_compile_default --set compile=default
BENCH_STEPS=$COMPILE_STEPS bench fp32_reduce_overhead --set compile=reduce-overhead
# whole-step CUDA graph (3 eager warm-up steps, then capture): in the pipeline only, its bare loop stays eager fp32
BENCH_STEPS=$COMPILE_STEPS bench fp32_cuda_graph --set cuda_graph=true
# wider attention heads (a different model: 2 and 4 heads of width 64 instead of 16 and 32 of
# width 8), eager and with the likeliest fastest combination; last, so a short session still gets the rest
bench fp32_heads64 --set model.attention_head_dim=64
BENCH_STEPS=$COMPILE_STEPS bench bf16_heads64_cuda_graph --set model.attention_head_dim=64 --set precision=bf16 --set cuda_graph=true

python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for path in sorted(out.glob("*.json")):
    data = json.loads(path.read_text())
    t, p = data.get("training", {}), data.get("packed", {})
    rows.append(
        f"{path.stem:24s} pipeline {t.get('pipeline_steps_per_s', float('nan')):7.1f}  "
        f"bare {t.get('bare_steps_per_s', float('nan')):7.1f} steps/s  "
        f"{t.get('images_per_s', float('nan')):8.0f} images/s  "
        f"{(t.get('fraction_of_bf16_peak') or float('nan')):6.1%} of bf16 peak"
        + (
            f"  | K={p['models']}: in turn {p['packed_aggregate_steps_per_s']:.1f}, "
            f"stacked {p['stacked_aggregate_steps_per_s']:.1f} model-steps/s"
            if p
            else ""
        )
    )
(out / "summary.txt").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
