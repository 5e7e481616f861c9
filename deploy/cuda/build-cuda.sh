#!/bin/sh
# build-cuda.sh: `cargo build --release --features cuda` from a clean checkout,
# with no system CUDA. Run from anywhere inside the repository.
#
#   deploy/cuda/build-cuda.sh            # Hopper (sm_90a: H100, H200)
#   CUDA_COMPUTE_CAP=80 deploy/cuda/build-cuda.sh   # A100; 89 = L4/L40S
#
# Steps (each one is skipped when its result is already there):
#   1. pip-installs the sha256-pinned CUDA 13.0 wheels of
#      deploy/cuda/requirements-build.txt (nvcc, crt, nvvm, cccl, cudart,
#      cuBLAS, cuRAND, NVRTC) into $CUDA_PREFIX/wheels (needs PyPI);
#   2. turns their nvidia/cu13 tree into a linkable CUDA root
#      (deploy/cuda/prepare-cuda-root.sh: unversioned .so links, libcuda stub);
#   3. exports CUDA_ROOT/CUDA_PATH/CUDA_HOME/NVCC/CUDA_COMPUTE_CAP/PATH/
#      LD_LIBRARY_PATH and runs cargo;
#   4. copies the binary to $CARRY_DIR (default target/gpu-carry, an ignored
#      path the device tool can carry; debug info stripped, xz-compressed
#      above CARRY_MAX_MIB=48)
#      and prints what it links.
#
# Environment knobs:
#   CUDA_PREFIX       where the wheels go   (default <repo>/target/cuda-toolkit)
#   CARGO_TARGET_DIR  cargo's target dir    (default <repo>/target)
#   CARRY_DIR         where the binary goes (default <repo>/target/gpu-carry)
#   CUDA_COMPUTE_CAP  90 unless set
#   CARGO_BUILD_JOBS  cargo's -j
#   CUDAFORGE_THREADS parallel nvcc processes in candle-kernels' build script
#                     (default: nproc)
#   PYTHON            python with pip (default python3)
#   CARGO_FEATURES    cargo features (default "cuda"; "cuda cudnn" adds candle's
#                     cuDNN convolutions: the pinned cuDNN wheel of
#                     requirements-cudnn.txt is installed for linking, and
#                     the carried binary needs libcudnn.so.9 on the GPU host)
#   CUDA_TESTS        space-separated integration tests to build too (e.g.
#                     "dit_parity vae_parity"); their executables go to
#                     $CARRY_DIR/tests/<name>(.xz), run there with
#                     STREAMAVATAR_TEST_DEVICE=cuda:0 (deploy/cuda/gpu-checks.sh)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
prefix="${CUDA_PREFIX:-$repo/target/cuda-toolkit}"
carry="${CARRY_DIR:-$repo/target/gpu-carry}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
python="${PYTHON:-python3}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

say() { echo "build-cuda: $*" >&2; }
stamp() { date +%H:%M:%S; }

# ---- 1. wheels ----------------------------------------------------------------
wheels="$prefix/wheels"
root="$wheels/nvidia/cu13"
if [ ! -x "$root/bin/nvcc" ]; then
    say "$(stamp) installing the pinned CUDA wheels into $wheels"
    "$python" -m pip install --no-cache-dir --no-deps --only-binary=:all: \
        --require-hashes --target "$wheels" -r "$here/requirements-build.txt"
fi
[ -x "$root/bin/nvcc" ] || { say "no nvcc at $root/bin/nvcc after pip install"; exit 1; }

# ---- 2. linkable CUDA root ----------------------------------------------------
cd "$repo"
cargo fetch --locked
cudarc_version=$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
[ -n "$cudarc_version" ] || { say "cudarc not in Cargo.lock"; exit 1; }
cudarc_src=""
for dir in "$cargo_home"/registry/src/*/"cudarc-$cudarc_version"; do
    [ -d "$dir" ] && cudarc_src="$dir"
done
[ -n "$cudarc_src" ] || { say "cudarc-$cudarc_version source not under $cargo_home/registry/src"; exit 1; }
if [ ! -e "$root/lib/stubs/libcuda.so" ]; then
    sh "$here/prepare-cuda-root.sh" "$root" "$cudarc_src"
fi

# ---- 3. cargo -----------------------------------------------------------------
# CUDA_ROOT/CUDA_PATH/CUDA_HOME: cudaforge (candle-kernels' build script) and
# cudarc's build script look for the toolkit under these; NVCC and PATH give
# them nvcc (cudarc reads the CUDA version from `nvcc --version`).
# LIBRARY_PATH: the libcuda link stub for `-lcuda` (never used at run time).
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export NVCC="$root/bin/nvcc"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export PATH="$root/bin:$PATH"
export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$root/lib:$root/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="$target_dir"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
features="${CARGO_FEATURES:-cuda}"
case " $features " in
    *" cudnn "*)
        cudnn_lib="$prefix/cudnn-wheels/nvidia/cudnn/lib"
        if [ ! -e "$cudnn_lib/libcudnn.so.9" ]; then
            say "$(stamp) installing the pinned cuDNN wheel into $prefix/cudnn-wheels"
            "$python" -m pip install --no-cache-dir --no-deps --only-binary=:all: \
                --require-hashes --target "$prefix/cudnn-wheels" -r "$here/requirements-cudnn.txt"
        fi
        ln -sf libcudnn.so.9 "$cudnn_lib/libcudnn.so"
        export LIBRARY_PATH="$cudnn_lib:$LIBRARY_PATH" LD_LIBRARY_PATH="$cudnn_lib:$LD_LIBRARY_PATH"
        ;;
esac
say "$(stamp) nvcc: $("$NVCC" --version | tail -1)"
say "$(stamp) cargo build --release --features \"$features\" (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target $target_dir)"
start=$(date +%s)
cargo build --release --locked --features "$features" --bin streamavatar
say "$(stamp) cargo finished in $(( $(date +%s) - start )) s"

# ---- 4. carry -----------------------------------------------------------------
# The device tool carries at most 64 MiB (binary + working tree). The carried
# copy has no debug sections (release keeps `debug = 1`: 228 MiB -> 56 MiB
# measured) and is xz-compressed above CARRY_MAX_MIB (default 48): ~10 MiB.
# run-on-gpu.sh unpacks it. The full binary stays in $target_dir/release.
built="$target_dir/release/streamavatar"
mkdir -p "$carry"
rm -f "$carry/streamavatar" "$carry/streamavatar.xz"
objcopy --strip-debug "$built" "$carry/streamavatar"
size_mib=$(( $(stat -c %s "$carry/streamavatar") / 1048576 ))
say "binary: $built ($(( $(stat -c %s "$built") / 1048576 )) MiB; ${size_mib} MiB without debug info)"
if [ "$size_mib" -gt "${CARRY_MAX_MIB:-48}" ]; then
    xz -T0 -6 "$carry/streamavatar"
    say "carry: $carry/streamavatar.xz ($(( $(stat -c %s "$carry/streamavatar.xz") / 1048576 )) MiB)"
else
    say "carry: $carry/streamavatar"
fi
say "needed shared libraries (readelf -d):"
readelf -d "$built" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p' >&2

# ---- 5. test executables (optional) ---------------------------------------------
if [ -n "${CUDA_TESTS:-}" ]; then
    mkdir -p "$carry/tests"
    for t in $CUDA_TESTS; do
        say "$(stamp) cargo test --no-run --test $t"
        # The test target's own artifact (the same call may also relink the
        # streamavatar binary, whose artifact has an executable too).
        exe=$(cargo test --release --locked --features "$features" --no-run --test "$t" --message-format=json 2>/dev/null \
            | python3 -c 'import json, sys
t = sys.argv[1]
exes = [m["executable"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "compiler-artifact" and m.get("executable")
        and m["target"]["name"] == t and "test" in m["target"]["kind"]]
print(exes[-1] if exes else "")' "$t")
        [ -n "$exe" ] && [ -x "$exe" ] || { say "test $t: no executable built"; exit 1; }
        rm -f "$carry/tests/$t" "$carry/tests/$t.xz"
        objcopy --strip-debug "$exe" "$carry/tests/$t"
        xz -T0 -6 "$carry/tests/$t"
        say "carry: $carry/tests/$t.xz ($(( $(stat -c %s "$carry/tests/$t.xz") / 1048576 )) MiB)"
    done
fi
