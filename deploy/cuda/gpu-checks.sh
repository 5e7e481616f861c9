#!/bin/sh
# gpu-checks.sh: the checks of one GPU session, in one device call.
#
#   deploy/cuda/gpu-checks.sh            # on the GPU host, from the repo root
#
# Needs target/gpu-carry/ from `CUDA_TESTS="dit_parity vae_parity"
# deploy/cuda/build-cuda.sh` (the binary and the two parity test
# executables). Each step has its own time limit (seconds, below; scale them
# all with CHECK_TIME_SCALE=2 etc.) so that one slow or hung step cannot eat
# the device time of the rest. Everything goes to $OUT/checks.log (the
# device tool brings $OUT back; it returns 8 files at most), GPU memory
# samples to $OUT/gpu-mem.csv.
#
# Steps, most valuable first:
#   bench-tiny      bench generator, tiny, cuda:0 (kernels load, ops exist)
#   bench-full      bench generator, full (1280x704, random bf16 weights
#                   drawn on the device), cuda:0
#   profile-full    the same with --profile (where the time goes)
#   half-full       full with --half-scores (bf16 attention scores)
#   parity-dit      tests/dit_parity on cuda:0 (f32, bf16, f16 vs diffusers)
#   parity-vae      tests/vae_parity on cuda:0
#   bench-pair      full on cuda:0,cuda:0 (two device handles, two stages;
#                   the VAE stage on its own thread: measured pipelined fps)
#   tiny-pair       tiny on cuda:0,cuda:0 (the VAE worker thread on CUDA)
#   light-full      full with --decoder light (taew2_2-size light decoder)
#   light-half      full, light decoder, --half-scores (best one-GPU setup)
#   light-pair      the same pipelined on cuda:0,cuda:0 (one card, two streams)
#   light-noflash   light-half without the fused attention kernel (A/B)
#   profile-light   light-half with --profile (where the one-GPU time goes)
#   call-tiny       bench call (in-process server + webrtc-rs client: the serve
#                   path) with tiny on cuda:0,cuda:0, light decoder, pipelined
#   call-tiny-full  the same on cuda:0 with the full decoder
#   render-tiny     render 2 s of tiny (random weights) + light decoder on
#                   cuda:0: the render path on CUDA (full needs weight files)
# Another carried build (e.g. the cuDNN one): STREAMAVATAR_CARRY=target/gpu-carry-cudnn
# Pick steps: STEPS="bench-full parity-dit" deploy/cuda/gpu-checks.sh
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="${OUT:-/tmp/streamavatar-gpu}"
mkdir -p "$out"
log="$out/checks.log"
scale="${CHECK_TIME_SCALE:-1}"
steps="${STEPS:-bench-tiny bench-full profile-full half-full parity-dit parity-vae bench-pair}"

say() { echo "gpu-checks: $*" | tee -a "$log" >&2; }

env_lines=$("$here/run-on-gpu.sh" --env) || { say "run-on-gpu.sh --env failed"; exit 1; }
eval "$env_lines"
say "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1)"
"$STREAMAVATAR_BIN" --version >> "$log" 2>&1

unpack() { # carried test executable -> /tmp/<name>
    src="${STREAMAVATAR_CARRY:-$repo/target/gpu-carry}/tests/$1"
    if [ -f "$src.xz" ]; then
        { xz -dc "$src.xz" 2>/dev/null \
          || python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$src.xz"; } \
            > "/tmp/$1" && chmod +x "/tmp/$1" && echo "/tmp/$1"
    elif [ -x "$src" ]; then
        echo "$src"
    fi
}

(while :; do
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits 2>/dev/null
    sleep 0.5
done) > "$out/gpu-mem.csv" &
sampler=$!

status=0
run_step() { # name limit_s command...
    name=$1; limit=$(( $2 * scale )); shift 2
    say "== $name (limit ${limit} s): $*"
    start=$(date +%s)
    timeout -k 5 "$limit" "$@" >> "$log" 2>&1
    rc=$?
    say "== $name: rc=$rc in $(( $(date +%s) - start )) s"
    [ $rc -eq 0 ] || status=1
}

bin=$STREAMAVATAR_BIN
for s in $steps; do
    case $s in
        bench-tiny) run_step "$s" 40 "$bin" bench generator --config tiny --device cuda:0 --chunks 8 ;;
        bench-full) run_step "$s" 120 "$bin" bench generator --config full --device cuda:0 --chunks 3 ;;
        profile-full) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 1 --profile ;;
        half-full) run_step "$s" 70 "$bin" bench generator --config full --device cuda:0 --chunks 2 --half-scores ;;
        bench-pair) run_step "$s" 120 "$bin" bench generator --config full --device cuda:0,cuda:0 --chunks 3 ;;
        tiny-pair) run_step "$s" 40 "$bin" bench generator --config tiny --device cuda:0,cuda:0 --chunks 8 ;;
        light-full) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light ;;
        light-half) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light --half-scores ;;
        light-pair) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0,cuda:0 --chunks 4 --decoder light --half-scores ;;
        light-noflash) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light --half-scores --no-flash ;;
        profile-light) run_step "$s" 60 "$bin" bench generator --config full --device cuda:0 --chunks 2 --decoder light --half-scores --profile ;;
        call-tiny) run_step "$s" 60 "$bin" bench call --config tiny --device cuda:0,cuda:0 --decoder light --seconds 8 ;;
        call-tiny-full) run_step "$s" 60 "$bin" bench call --config tiny --device cuda:0 --seconds 8 ;;
        render-tiny) run_step "$s" 60 "$bin" render --config tiny --device cuda:0 --decoder light --seconds 2 --out /tmp/render-tiny ;;
        parity-dit|parity-vae)
            t=${s#parity-}_parity
            exe=$(unpack "$t")
            if [ -z "$exe" ]; then say "$s: no target/gpu-carry/tests/$t(.xz)"; status=1; continue; fi
            run_step "$s" 45 env STREAMAVATAR_TEST_DEVICE=cuda:0 "$exe" --test-threads 1 --nocapture ;;
        *) say "unknown step $s"; status=1 ;;
    esac
done

kill "$sampler" 2>/dev/null
peak=$(cut -d, -f2 "$out/gpu-mem.csv" | sort -n | tail -1)
say "peak GPU memory sampled every 0.5 s (all processes): ${peak:-?} MiB"
say "status $status"
exit $status
