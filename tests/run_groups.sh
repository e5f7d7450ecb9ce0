#!/usr/bin/env bash
# `make test`'s pytest: the three groups of tests/conftest.py as three pytest processes side by
# side, each with a temporary directory of its own (removed if every group passes). Each group's
# output is printed whole once it ends; the script fails if any group does. Its arguments go to
# each pytest (-x, --durations=0, a path).
set -uo pipefail
cd "$(dirname "$0")/.."
groups=(local own-control-planes shared-control-plane)  # the order their outputs are printed in
work=$(mktemp -d "${TMPDIR:-/tmp}/mentor-tests.XXXXXX")
pids=()
for group in "${groups[@]}"; do
  .venv/bin/pytest --group "$group" --basetemp "$work/$group" "$@" > "$work/$group.log" 2>&1 &
  pids+=($!)
done
echo "== $(date -u +%TZ) pytest: ${groups[*]}, side by side (logs in $work)"
failed=()
for i in "${!groups[@]}"; do
  wait "${pids[$i]}"; rc=$?
  echo "== $(date -u +%TZ) pytest --group ${groups[$i]}: exit $rc"
  cat "$work/${groups[$i]}.log"
  [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || failed+=("${groups[$i]}")  # 5: none of its tests chosen
done
[ ${#failed[@]} -eq 0 ] || { echo "== failed: ${failed[*]} (their files are kept in $work)"; exit 1; }
rm -rf "$work"  # a gigabyte of models, checkpoints and etcd data
