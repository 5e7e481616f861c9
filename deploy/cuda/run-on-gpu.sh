#!/bin/sh
# run-on-gpu.sh: run the CUDA build of streamavatar on a GPU host that has no
# Rust toolchain and no network (the binary was built elsewhere by
# deploy/cuda/build-cuda.sh and carried here). See docs/GPU.md.
#
#   deploy/cuda/run-on-gpu.sh                 # checks + the default benches
#   deploy/cuda/run-on-gpu.sh -- ARGS...      # checks, then `streamavatar ARGS...`
#   deploy/cuda/run-on-gpu.sh --env           # print the exports and stop
#
# What it does:
#   1. finds the binary: $STREAMAVATAR_BIN, else $STREAMAVATAR_CARRY (default
#      target/gpu-carry)/streamavatar
#      (or streamavatar.xz / .zst / .gz there, unpacked to /tmp);
#   2. finds every CUDA library the binary links (libcudart.so.13,
#      libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13):
#      in $STREAMAVATAR_CUDA_LIBS (colon-separated folders), else in the
#      nvidia/* wheels of the host's PyTorch (python3's site-packages), else in
#      /usr/local/cuda; libcuda.so.1 is the driver's own and must not be
#      carried. Puts those folders first on LD_LIBRARY_PATH;
#   3. checks that `ldd` resolves everything, prints the GPUs and the driver;
#   4. runs the given command, or the default checklist (each step logged to
#      $OUT/<step>.log when $OUT is set, else /tmp/streamavatar-gpu/).
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
logdir="${OUT:-/tmp/streamavatar-gpu}"
mkdir -p "$logdir"

say() { echo "run-on-gpu: $*" >&2; }
die() { say "$*"; exit 1; }

# ---- 1. the binary ----------------------------------------------------------------
carry="${STREAMAVATAR_CARRY:-$repo/target/gpu-carry}"
bin="${STREAMAVATAR_BIN:-}"
if [ -z "$bin" ]; then
    if [ -x "$carry/streamavatar" ]; then
        bin="$carry/streamavatar"
    elif [ -f "$carry/streamavatar.xz" ]; then
        # python3's lzma where xz-utils is missing
        { xz -dc "$carry/streamavatar.xz" 2>/dev/null \
          || python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$carry/streamavatar.xz"; } \
            > /tmp/streamavatar && bin=/tmp/streamavatar
    elif [ -f "$carry/streamavatar.zst" ]; then
        zstd -dqc "$carry/streamavatar.zst" > /tmp/streamavatar && bin=/tmp/streamavatar
    elif [ -f "$carry/streamavatar.gz" ]; then
        gzip -dc "$carry/streamavatar.gz" > /tmp/streamavatar && bin=/tmp/streamavatar
    else
        die "no binary: set STREAMAVATAR_BIN or carry target/gpu-carry/ (built by deploy/cuda/build-cuda.sh)"
    fi
    chmod +x "$bin"
fi
[ -x "$bin" ] || die "$bin is not executable"

# ---- 2. CUDA libraries ----------------------------------------------------------
needed=$(readelf -d "$bin" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' \
    | grep -E '^lib(cudart|cublas|cublasLt|curand|nvrtc|cudnn)\.so' || true)
[ -n "$needed" ] || say "note: $bin links no CUDA library (built without --features cuda?)"

search="${STREAMAVATAR_CUDA_LIBS:-}"
if [ -z "$search" ]; then
    # PyTorch's CUDA wheels: site-packages/nvidia/cu13/lib (CUDA 13 layout) or
    # site-packages/nvidia/<component>/lib (CUDA 12 layout).
    for py in python3 /opt/torch/.venv/bin/python3; do
        command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
        site=$("$py" -c 'import nvidia, os; print(" ".join(os.path.realpath(p) for p in nvidia.__path__))' 2>/dev/null) || continue
        for s in $site; do
            for d in "$s"/cu13/lib "$s"/*/lib; do
                [ -d "$d" ] || continue
                case ":$search:" in *":$d:"*) ;; *) search="$search${search:+:}$d" ;; esac
            done
        done
        [ -n "$search" ] && break
    done
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && search="$search${search:+:}$d"
    done
fi

libdirs=""
missing=""
for lib in $needed; do
    found=""
    old_ifs=$IFS; IFS=:
    for d in $search; do
        if [ -e "$d/$lib" ]; then found="$d"; break; fi
    done
    IFS=$old_ifs
    if [ -z "$found" ]; then
        missing="$missing $lib"
        continue
    fi
    case ":$libdirs:" in *":$found:"*) ;; *) libdirs="$libdirs${libdirs:+:}$found" ;; esac
    say "$lib <- $found"
done
[ -z "$missing" ] || die "not found:$missing (searched: $search). Set STREAMAVATAR_CUDA_LIBS to the folder(s) holding them."
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ "${1:-}" = "--env" ]; then
    echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "export STREAMAVATAR_BIN=$bin"
    exit 0
fi

# ---- 3. checks --------------------------------------------------------------------
unresolved=$(ldd "$bin" | grep 'not found' || true)
[ -z "$unresolved" ] || die "ldd: $unresolved"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv,noheader >&2 \
        || say "nvidia-smi failed"
else
    say "no nvidia-smi on PATH"
fi
"$bin" --version >&2 || die "$bin --version failed"

# ---- 4. run -------------------------------------------------------------------------
if [ "${1:-}" = "--" ]; then
    shift
    exec "$bin" "$@"
fi
[ $# -eq 0 ] || die "usage: run-on-gpu.sh [--env | -- STREAMAVATAR_ARGS...]"

status=0
step() {
    name=$1; shift
    say "== $name: streamavatar $*"
    start=$(date +%s)
    "$bin" "$@" > "$logdir/$name.log" 2>&1
    rc=$?
    say "== $name: rc=$rc in $(( $(date +%s) - start )) s (log $logdir/$name.log)"
    tail -n 25 "$logdir/$name.log" >&2
    [ $rc -eq 0 ] || status=1
}
step bench-tiny-cuda   bench generator --config tiny --device cuda:0 --chunks 8
step bench-full-cuda   bench generator --config full --device cuda:0 --chunks 8
step bench-full-pair   bench generator --config full --device cuda:0,cuda:0 --chunks 8
exit $status
