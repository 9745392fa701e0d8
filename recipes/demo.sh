#!/usr/bin/env bash
# Set up (recipes/setup.sh), then run the embedded demo (recipes/demo.py).
# Output: out/demo/{results.md,results.json,cer_vs_params.png}; rerunning resumes.
# The default run takes about a quarter of an hour on 2 cores, set-up included.
# Extra arguments go to demo.py, e.g.  bash recipes/demo.sh --full   (the long sweep)
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup.sh
shared=${KALDI_COMPRESS_SHARED:-../shared}
if [ ! -d "$shared/data/ko_wide_dev" ] && ! command -v espeak-ng >/dev/null; then
  echo "demo: no ../shared speech data; installing espeak-ng to synthesise a test set" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null; fi
fi
exec .venv/bin/python recipes/demo.py "$@"
