#!/usr/bin/env bash
# Packs a bundle for scripts/gpu_session.sh from a build folder: stripped
# binaries (xz-compressed when over 4 MB), the shared libraries of the build
# machine that the GPU image lacks (libcudart, Google Benchmark, fmt,
# yaml-cpp, ICU, zlib; cuBLASLt comes from the image's CUDA), the vendored tokenizer.
#
#   bash scripts/pack_gpu_bundle.sh BUILD BUNDLE TARGET ...
# TARGET: a path relative to BUILD (e.g. tests/gpu_test_attention, staticgrad).
set -eu
build=${1:?usage: pack_gpu_bundle.sh BUILD BUNDLE TARGET ...}
bundle=${2:?}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/share/staticgrad"
for t in "$@"; do
  f="$build/$t"
  [ -x "$f" ] || { echo "pack_gpu_bundle: $f is not built" >&2; exit 1; }
  strip -o "$bundle/bin/$(basename "$t")" "$f"
  if [ "$(stat -c %s "$bundle/bin/$(basename "$t")")" -gt 4000000 ]; then xz -T2 -6 "$bundle/bin/$(basename "$t")"; fi
done
for t in "$@"; do ldd "$build/$t"; done | awk '/=>/ {print $3}' | sort -u |
  grep -E 'libcudart|libbenchmark|libfmt|libyaml-cpp|libicu|libz\.so' | while read -r l; do
  [ -e "$bundle/lib/$(basename "$l").xz" ] || { cp -L "$l" "$bundle/lib/" && xz -T2 -6 "$bundle/lib/$(basename "$l")"; }
done
cp -r "$here/../data/qwen2-tokenizer" "$bundle/share/staticgrad/"
du -sh "$bundle"
