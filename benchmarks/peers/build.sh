#!/usr/bin/env bash
# Builds the peers the operator benchmark races, from Go modules, into a cache outside the repo:
#   ${MENTOR_CACHE:-~/.cache/mentor}/peers/training-operator-<version>/{bin/training-operator.v1,crds/}
# Kubeflow's training-operator v1: its module has no replace directives, so `go install` builds
# it as released; its CRDs come from the same module. Prints the peer's directory.
set -euo pipefail
version=${TRAINING_OPERATOR_VERSION:-v1.9.4}
module=github.com/kubeflow/training-operator
dir="${MENTOR_CACHE:-$HOME/.cache/mentor}/peers/training-operator-$version"
if [ ! -x "$dir/bin/training-operator.v1" ]; then
  mkdir -p "$dir/bin"
  GOTOOLCHAIN=local GOBIN="$dir/bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "$module/cmd/training-operator.v1@$version" >&2
fi
if [ ! -f "$dir/crds/kubeflow.org_pytorchjobs.yaml" ]; then
  src=$(GOTOOLCHAIN=local go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$dir/crds" && cp "$src/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$dir/crds/"
fi
echo "$dir"
