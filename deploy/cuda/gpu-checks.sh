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
#   full-novk       bench-full without the VAE's CUDA kernels (A/B: candle's
#                   im2col convolution and norm ops)
#   light-novk      light-half without the VAE's CUDA kernels (A/B)
#   light-nodk      light-half without the DiT's fused glue kernels (A/B)
#   light-noak      light-half without the attention glue kernels (q/k norm +
#                   RoPE + heads, few-key audio attention; A/B)
#   call-tiny       bench call (in-process server + webrtc-rs client: the serve
#                   path) with tiny on cuda:0,cuda:0, light decoder, pipelined
#   call-tiny-full  the same on cuda:0 with the full decoder
#   render-tiny     render 2 s of tiny (random weights) + light decoder on
#                   cuda:0: the render path on CUDA (full needs weight files)
#   train-probe     20 steps of every mini training stage on cuda:0 from
#                   seeded weights: the ops have CUDA kernels, s/step each
#   train-mini      train/reproduce.sh on cuda:0 (the mini recipe) until
#                   TRAIN_MINUTES (default 8) are spent, resuming from
#                   train/gpu-runs.tar when it exists; the checkpoints come
#                   back packed (f16 params + state) as $OUT/mini-runs.tar.part-*
#                   (cat them into train/gpu-runs.tar to continue there)
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
        full-novk) run_step "$s" 120 "$bin" bench generator --config full --device cuda:0 --chunks 3 --no-vae-kernels ;;
        light-novk) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light --half-scores --no-vae-kernels ;;
        light-nodk) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light --half-scores --no-dit-kernels ;;
        light-noak) run_step "$s" 90 "$bin" bench generator --config full --device cuda:0 --chunks 4 --decoder light --half-scores --no-attn-kernels ;;
        profile-light) run_step "$s" 60 "$bin" bench generator --config full --device cuda:0 --chunks 2 --decoder light --half-scores --profile ;;
        call-tiny) run_step "$s" 60 "$bin" bench call --config tiny --device cuda:0,cuda:0 --decoder light --seconds 8 ;;
        call-tiny-full) run_step "$s" 60 "$bin" bench call --config tiny --device cuda:0 --seconds 8 ;;
        render-tiny) run_step "$s" 60 "$bin" render --config tiny --device cuda:0 --decoder light --seconds 2 --out /tmp/render-tiny ;;
        train-probe)
            tp=/tmp/train-probe; rm -rf "$tp"
            for st in vae light_decoder teacher ode_init dmd gan; do
                extra=""
                case $st in
                    vae) extra="--crop 64 --batch 4 --latent-frames 2" ;;
                    light_decoder) extra="--crop 64 --batch 2 --latent-frames 2 --vae $tp/vae/params.safetensors" ;;
                    dmd|gan) extra="--latent-frames 6 --critic-updates 1" ;;
                esac
                run_step "$s-$st" 90 "$bin" train "$st" --config mini --device cuda:0 --steps 20 --save-every 0 --out "$tp/$st" $extra
            done ;;
        train-mini)
            runs=/tmp/mini-runs; mkdir -p "$runs"
            [ -f "$repo/train/gpu-runs.tar" ] && tar -xf "$repo/train/gpu-runs.tar" -C "$runs"
            deadline=$(( $(date +%s) + ${TRAIN_MINUTES:-8} * 60 ))
            run_step "$s" $(( ${TRAIN_MINUTES:-8} * 60 + 120 )) env SA="$bin" RUNS="$runs" DEVICE=cuda:0 DEADLINE=$deadline \
                bash "$repo/train/reproduce.sh"
            # Pack (f16 params + state) what the next run needs: a stage that a
            # later stage continues from is left out once the later one exists.
            rm -rf /tmp/mini-packed; mkdir -p /tmp/mini-packed
            for st in vae_images vae_video light_decoder teacher ode_init dmd gan; do
                [ -f "$runs/$st/params.safetensors" ] || continue
                case $st in
                    vae_images) [ -f "$runs/vae_video/params.safetensors" ] && continue ;;
                    ode_init) [ -f "$runs/dmd/params.safetensors" ] && continue ;;
                    dmd) [ -f "$runs/gan/params.safetensors" ] && continue ;;
                esac
                python3 "$repo/train/checkpoints/pack.py" "$runs/$st" "/tmp/mini-packed/$st" >> "$log" 2>&1
            done
            [ -d "$runs/weights" ] && cp -r "$runs/weights" /tmp/mini-packed/
            # 15 MiB parts ($OUT files are capped at 16 MiB): cat them back together.
            tar -cf - -C /tmp/mini-packed . | split -b 15M - "$out/mini-runs.tar.part-"
            say "train-mini: packed $(du -sh /tmp/mini-packed | cut -f1) into $(ls "$out" | grep -c mini-runs) part(s)" ;;
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
