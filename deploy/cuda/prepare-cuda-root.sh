#!/bin/sh
# prepare-cuda-root.sh CUDA_ROOT CUDARC_SRC
#
# Makes the CUDA tree that the PyPI wheels unpack to (nvidia/cu13/{bin,include,
# lib,nvvm}) linkable the way a toolkit install is:
#   * unversioned symlinks (libcublas.so -> libcublas.so.13, ...) for `-lcublas`;
#   * lib/stubs/libcuda.so, a link-time stand-in for the driver library
#     (SONAME libcuda.so.1). The wheels carry no driver stub, and cudarc's
#     `dynamic-linking` (what candle 0.11 uses) links `-lcuda`. The stub defines
#     every driver entry point cudarc declares (read from its bindings in
#     CUDARC_SRC/src/driver/sys/mod.rs) as a function that returns
#     CUDA_ERROR_NO_DEVICE (100); it is never shipped: at run time the NVIDIA
#     container toolkit mounts the host's real libcuda.so.1. On a machine
#     with no NVIDIA driver, putting lib/stubs on LD_LIBRARY_PATH (it holds a
#     libcuda.so.1 link) lets the CUDA binary start: it runs on the CPU and
#     `--device cuda:N` fails with "no CUDA-capable device" instead of the
#     loader refusing the binary. Never put lib/stubs on LD_LIBRARY_PATH on a
#     GPU host: it would hide the real driver.
set -eu

root="${1:?usage: prepare-cuda-root.sh CUDA_ROOT CUDARC_SRC}"
cudarc="${2:?usage: prepare-cuda-root.sh CUDA_ROOT CUDARC_SRC}"
lib="$root/lib"
bindings="$cudarc/src/driver/sys/mod.rs"

[ -x "$root/bin/nvcc" ] || { echo "prepare-cuda-root: no nvcc at $root/bin/nvcc" >&2; exit 1; }
[ -f "$bindings" ] || { echo "prepare-cuda-root: no cudarc driver bindings at $bindings" >&2; exit 1; }

for versioned in "$lib"/lib*.so.*; do
    base=$(basename "$versioned")
    plain="${base%%.so.*}.so"
    [ -e "$lib/$plain" ] || ln -s "$base" "$lib/$plain"
done

mkdir -p "$lib/stubs"
work=$(mktemp -d)
sed -n 's/^[[:space:]]*fn \(cu[A-Za-z0-9_]*\)(.*/\1/p' "$bindings" | sort -u > "$work/names"
count=$(wc -l < "$work/names")
if [ "$count" -lt 100 ]; then
    echo "prepare-cuda-root: only $count driver functions found in $bindings; cudarc's layout changed?" >&2
    exit 1
fi
# Every driver API function returns CUresult; 100 = CUDA_ERROR_NO_DEVICE.
awk '{ print "int " $1 "(void) { return 100; }" }' "$work/names" > "$work/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$work/libcuda_stub.c"
ln -sf libcuda.so "$lib/stubs/libcuda.so.1"
rm -rf "$work"
echo "prepare-cuda-root: $lib ready ($count driver symbols in the libcuda stub)"
