#!/usr/bin/env bash
# The GPU measurements of the training options (nothing here has run on a GPU yet). On a GPU
# machine, from the repo:
#
#   bash bench/gpu_bench.sh                 # every setting, most important first, JSON under $OUT
#   bash bench/gpu_bench.sh graph_packed    # only the named settings (names below)
#   CONFIG=config.yaml STEPS=6 GRAPH_STEPS=6 PACK=2 HEADS=16 RELATIONAL_STEPS=5 bash bench/gpu_bench.sh   # CPU smoke
#
# Made for a short GPU allocation (about 15 minutes, 10 per command): the settings run
# in order of importance, each one's JSON and log land under $OUT as it finishes and summary.txt
# is rewritten after each, so a command cut short keeps what it measured; run the rest by name in
# a second command. Expected on an H100/H200 (a guess, never measured): the first three about
# 8 minutes, the rest about 7 (`agreement`, thirteen short runs compared bit for bit, about 1).
#
# The device image lacks diffusers, umap-learn, pynndescent, jsonschema (+ referencing, rpds-py):
# download their wheels into .whl/ here first (`make gpu-wheels`) and carry .whl; they are
# installed into /tmp/site when present and those packages are not importable.
set -uo pipefail
cd "$(dirname "$0")/.."
# (only where they are missing: .whl/ holds Python 3.12 wheels for the device image)
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import diffusers, umap, jsonschema" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench_out}"
CONFIG="${CONFIG:-config.paper.yaml}"
STEPS="${STEPS:-60}"  # eager settings (about 16 steps/s: the timing is long enough)
# CUDA-graph and compiled settings: long enough that the one checkpoint at the end and the 3
# eager warm-up steps (cuda_graph) are a small part; compile happens in an untimed warm-up step
GRAPH_STEPS="${GRAPH_STEPS:-600}"
PACK="${PACK:-4}"
HEADS="${HEADS:-64}"  # the wide-heads settings' attention_head_dim (the paper model: 2 and 4 heads)
RELATIONAL_CONFIG="${RELATIONAL_CONFIG:-$CONFIG}"
RELATIONAL_STEPS="${RELATIONAL_STEPS:-20}"
AGREEMENT_STEPS="${AGREEMENT_STEPS:-20}"  # each of bench/agreement.py's thirteen runs
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# Preflight, in seconds: the packages import, and on a machine with an NVIDIA GPU torch sees it.
# Without this, a CUDA-less torch there would run the paper model on the CPU until every
# setting's timeout, spending the whole allocation on nothing.
python3 - <<'PY' 2>&1 | tee "$OUT/preflight.txt" || exit 1
import shutil, sys
import diffusers, jsonschema, torch, umap  # noqa: F401 (the wheels .whl/ supplies where missing)
import diffcomp.bumps.train  # noqa: F401
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
      f"CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if shutil.which("nvidia-smi") and not torch.cuda.is_available():
    sys.exit("nvidia-smi sees a GPU but torch does not: stopping before any setting runs on the CPU")
PY

summarize() {
    python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
nan = float("nan")
def num(value):
    return nan if value is None else value
rows = []
for path in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime):
    data = json.loads(path.read_text())
    if "variants" in data:  # bench/agreement.py: "=" bit-identical, else the relative difference
        cells = []
        for name, row in data["variants"].items():
            if "error" in row:
                cells.append(f"{name} failed")
                continue
            weights = row["weights"]
            relative = weights["relative_to_training"]
            cells.append(f"{name} " + ("=" if weights["bit_identical"] else f"{num(relative):.1e}"))
        cells.append("EMA foreach " + ("=" if data["ema_foreach_vs_loop"]["bit_identical"] else "differs"))
        rows.append(f"{path.stem:26s} " + ", ".join(cells))
        continue
    t, p = data.get("training", {}), data.get("packed", {})
    row = (
        f"{path.stem:26s} pipeline {num(t.get('pipeline_steps_per_s')):7.1f}  "
        f"bare {num(t.get('bare_steps_per_s')):7.1f} steps/s  "
        f"{num(t.get('images_per_s')):8.0f} images/s  {num(t.get('fraction_of_bf16_peak')):6.1%} of bf16 peak"
    )
    if p:
        row += (
            f"  | K={p['models']}: pipeline pack {p['pipeline_pack_aggregate_steps_per_s']:.1f} model-steps/s "
            f"({num(p['pipeline_pack_fraction_of_bf16_peak']):.1%} of peak)"
        )
        if "stacked_aggregate_steps_per_s" in p:
            row += (
                f", bare in turn {p['packed_aggregate_steps_per_s']:.1f}, "
                f"bare stacked {p['stacked_aggregate_steps_per_s']:.1f}"
            )
        row += f"; sampling {p['sample_seconds_per_checkpoint_per_model']:.1f} s per checkpoint"
    rows.append(row)
(out / "summary.txt").write_text("\n".join(rows) + "\n")
print(rows[-1] if rows else "no results")
PY
}

bench() {  # bench NAME STEPS ARGS...: one bench_bumps run, its JSON and log under $OUT
    local name=$1 steps=$2
    shift 2
    echo "== $name: $*"
    timeout 300 python3 bench/bench_bumps.py --config "$CONFIG" --steps "$steps" --rounds 2 \
        --training-only --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1 || echo "   failed or timed out: see $name.log"
    summarize
}

setting() {  # the settings by name, in order of importance
    case $1 in
        # eager fp32 as configured: pipeline vs bare loop, K runs in turn / stacked (bare loops),
        # the workflow's pack trainer vs its single run, and one checkpoint's sampling
        eager_packed) bench "$1" "$STEPS" --packed "$PACK" ;;
        # the whole-step CUDA graph, one run and a pack (aggregate model-steps/s)
        graph_packed) bench "$1" "$GRAPH_STEPS" --packed "$PACK" --no-bare --set cuda_graph=true ;;
        # the likeliest fastest: bf16, wider attention heads (a different model), CUDA graph, packed
        bf16_wide_heads_graph_packed)
            bench "$1" "$GRAPH_STEPS" --packed "$PACK" --no-bare --set cuda_graph=true --set precision=bf16 \
                --set model.attention_head_dim="$HEADS" ;;
        # what is and is not bit-identical to eager fp32 on this GPU: the trainer with one setting
        # changed at a time (repeat, resume, tf32, fused AdamW, channels-last, CUDA graph, bf16, pack)
        agreement)
            echo "== $1"
            timeout 300 python3 bench/agreement.py --config "$CONFIG" --steps "$AGREEMENT_STEPS" \
                --json "$OUT/$1.json" >"$OUT/$1.log" 2>&1 || echo "   failed or timed out: see $1.log"
            summarize ;;
        reduce_overhead) bench "$1" "$GRAPH_STEPS" --set compile=reduce-overhead ;;
        bf16_eager) bench "$1" "$STEPS" --set precision=bf16 ;;
        wide_heads_eager) bench "$1" "$STEPS" --set model.attention_head_dim="$HEADS" ;;
        tf32_fused) bench "$1" "$STEPS" --set tf32=true --set fused_optimizer=true ;;
        compile_default) bench "$1" "$GRAPH_STEPS" --set compile=default ;;
        # the relational paper model (42.6 TFLOP a step, bench_relational.py --flops): pipeline vs
        # bare loop, contrastive losses, text encoder, one checkpoint's sampling
        relational)
            echo "== $1"
            timeout 300 python3 bench/bench_relational.py --config "$RELATIONAL_CONFIG" --steps "$RELATIONAL_STEPS" \
                --rounds 2 --threads 4 --json "$OUT/$1.json" >"$OUT/$1.log" 2>&1 || echo "   failed or timed out: see $1.log"
            summarize ;;
        *) echo "unknown setting $1" >&2; return 2 ;;
    esac
}

ALL=(eager_packed graph_packed bf16_wide_heads_graph_packed agreement reduce_overhead bf16_eager wide_heads_eager tf32_fused compile_default relational)
for name in "${@:-${ALL[@]}}"; do
    setting "$name"
done
