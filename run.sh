#!/usr/bin/env bash
# Set up the project (a .venv with the pinned CPU torch and specscale) and run one job:
#   ./run.sh sweep [snakemake args]   the default sweep on the embedded simulator -> results/
#   ./run.sh sweep --configfile config/questions.yaml
#                                     the study's ViT questions at CPU scale -> results/questions/
#   ./run.sh test  [pytest args]      the test suite
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-}
[ $# -gt 0 ] && shift
case "$job" in sweep | test) ;; *) echo "usage: ./run.sh sweep|test [args]" >&2; exit 2 ;; esac

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 CPU is the tested one.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
export PATH="$PWD/.venv/bin:$PATH"
export WANDB_MODE=${WANDB_MODE:-offline}

case "$job" in
  sweep) exec snakemake --profile profiles/local "$@" ;;
  test) exec pytest -q "$@" ;;
esac
