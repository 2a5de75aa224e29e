#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz, ASan + UBSan, clang) to run on
# another x86-64 Linux machine and assembles the folder that
# scripts/fuzz_device.sh runs:
#
#   bash scripts/fuzz_bundle.sh [BUNDLE]     # default .dev/robust
#
#   BUNDLE/bin/fuzz_<name>          the harnesses; ICU, libstdc++ and libgcc linked
#                                   statically (NFC needs no ICU data file), line
#                                   tables kept for file:line in reports (addr2line)
#   BUNDLE/lib/                     libfmt (Debian ships it shared only) and what it needs
#   BUNDLE/corpus/<name>/           the seed corpora of tests/fuzz/corpus
#   BUNDLE/data/qwen2-tokenizer/    the vendored tokenizer the harnesses load
#                                   (tests/fuzz/qwen_tokenizer.hpp finds it beside bin/)
#   BUNDLE/fuzz_device.sh           a copy of scripts/fuzz_device.sh
#   BUNDLE/glibc_required.txt       the newest glibc symbol version the binaries use
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bundle=$(realpath -m "${1:-$src/.dev/robust}")
build=${BUILD:-$src/build-fuzz-bundle}
icu_static=""
for f in /usr/lib/*-linux-gnu/libicuuc.a /usr/lib/libicuuc.a; do [ -f "$f" ] && { icu_static=$f; break; }; done
[ -n "$icu_static" ] || { echo "libicuuc.a not found (libicu-dev)"; exit 1; }
cmake --preset fuzz -B "$build" -DICU_UC_LIBRARY_RELEASE="$icu_static" -DSTATICGRAD_FUZZ_DEBUG=-gline-tables-only \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" > /dev/null
cmake --build "$build" --target sg_fuzzers --parallel "${PARALLEL:-2}"
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/corpus" "$bundle/data"
for f in "$build"/tests/fuzz/fuzz_*; do
  [ -f "$f" ] && [ -x "$f" ] && cp "$f" "$bundle/bin/"
done
cp -r "$src"/tests/fuzz/corpus/. "$bundle/corpus/"
cp -r "$src/data/qwen2-tokenizer" "$bundle/data/"
# Shared libraries the harnesses still need beyond glibc (libfmt here).
ldd "$bundle"/bin/fuzz_* | awk '/=> \// {print $3}' | sort -u | grep -v -E '/lib(c|m|dl|pthread|rt)\.so' \
  | while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
cp "$src/scripts/fuzz_device.sh" "$bundle/"  # runnable from the bundle alone
# The newest glibc symbol version the harnesses need: fuzz_device.sh checks it.
objdump -T "$bundle"/bin/fuzz_* "$bundle"/lib/* | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1 \
  > "$bundle/glibc_required.txt"
echo "bundle: $bundle ($(du -sh "$bundle" | cut -f1))"
ls -la "$bundle/bin" "$bundle/lib"
echo "needs glibc >= $(cat "$bundle/glibc_required.txt")"
