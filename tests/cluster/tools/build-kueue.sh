#!/usr/bin/env bash
# Builds Kueue from its Go module (no replace directives, so `go install` builds it as released)
# into a cache outside the repository, with its CRDs and webhook manifests from the same module:
#   ${MENTOR_CACHE:-~/.cache/mentor}/kueue-<version>/{bin/kueue,crds/,webhooks.yaml}
# Prints that directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
module=sigs.k8s.io/kueue
dir="${MENTOR_CACHE:-$HOME/.cache/mentor}/kueue-$KUEUE_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0
if [ ! -x "$dir/bin/kueue" ]; then
  echo "building kueue $KUEUE_VERSION from the Go module proxy" >&2
  mkdir -p "$dir/bin"
  tmp=$(mktemp -d "$dir/.build.XXXXXX")
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X $module/pkg/version.GitVersion=$KUEUE_VERSION" \
    "$module/cmd/kueue@$KUEUE_VERSION" >&2
  mv "$tmp/kueue" "$dir/bin/kueue" && rmdir "$tmp"   # appears only once complete
fi
if [ ! -f "$dir/webhooks.yaml" ]; then
  src=$(go mod download -json "$module@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$dir/crds"
  cp "$src"/config/components/crd/bases/*.yaml "$dir/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$dir/webhooks.yaml"
fi
echo "$dir"
