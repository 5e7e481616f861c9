#!/bin/sh
# nvcc-record.sh: an `NVCC` stand-in that records object compiles instead of
# running them, so heavy CUDA C++ (candle-flash-attn's 53 CUTLASS kernels) can
# be compiled on the 16-core GPU host and the objects carried back.
# See docs/GPU.md, "Flash attention".
#
#   cp deploy/cuda/nvcc-record.sh $CUDA_ROOT/bin/nvcc-record   # cudaforge takes
#   # the toolkit root from NVCC's path (../..), so the copy must sit in bin/
#   NVCC_REAL=$CUDA_ROOT/bin/nvcc NVCC_RECORD=/tmp/fa-commands.txt \
#   NVCC=$CUDA_ROOT/bin/nvcc-record cargo build --release -p candle-flash-attn ...
#
# * `nvcc ... -c -o X.o ... F.cu` where F's path contains $NVCC_RECORD_MATCH
#   (default `flash_`): appends one line to $NVCC_RECORD,
#   `cd '<cwd>' && nvcc '<arg>' ...` (arguments single-quoted), and writes a
#   placeholder host object at X.o (an empty C translation unit), so the build
#   script's cache records the source hashes and moves on;
# * anything else (`--version`, `--lib`, `--ptx`, other .cu files such as
#   candle-kernels', which reruns since NVCC changed): runs $NVCC_REAL.
# Replay the file on the GPU host (paths rewritten with sed to where the
# carried sources are), then put the real X.o files back over the
# placeholders and rebuild: the build script finds them up to date and only
# archives them.
set -eu
real="${NVCC_REAL:?NVCC_REAL: the real nvcc}"
record="${NVCC_RECORD:?NVCC_RECORD: file to append compile commands to}"

match="${NVCC_RECORD_MATCH:-flash_}"

compile=0 out="" matched=0
prev=""
for arg in "$@"; do
    [ "$arg" = "-c" ] && compile=1
    [ "$prev" = "-o" ] && out="$arg"
    case "$arg" in *.cu) case "$arg" in *"$match"*) matched=1 ;; esac ;; esac
    prev="$arg"
done
if [ "$compile" -eq 0 ] || [ -z "$out" ] || [ "$matched" -eq 0 ]; then
    exec "$real" "$@"
fi

line="cd '$(pwd)' && nvcc"
for arg in "$@"; do
    line="$line '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
done
printf '%s\n' "$line" >> "$record"
tmp=$(mktemp --suffix=.c)
echo 'static int nvcc_record_placeholder;' > "$tmp"
cc -c -fPIC -o "$out" "$tmp"
rm -f "$tmp"
