#!/usr/bin/env bash
# Installs the MLflow server that the tracking tests start, into a virtual environment of its own
# outside the repository (its pins are not Mentor's), run as `<dir>/bin/python -m mlflow`:
#   ${MENTOR_CACHE:-~/.cache/mentor}/mlflow-<version>/
# Prints that directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
dir="${MENTOR_CACHE:-$HOME/.cache/mentor}/mlflow-$MLFLOW_VERSION"
if [ ! -f "$dir/.installed" ]; then
  echo "installing mlflow $MLFLOW_VERSION from PyPI" >&2
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION" >&2
  touch "$dir/.installed"   # only once complete
fi
echo "$dir"
