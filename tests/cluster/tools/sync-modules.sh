#!/usr/bin/env bash
# Regenerates the go.mod/go.sum of each tool module from versions.env. Run it after changing a
# version, then commit the result. k8s.io/kubernetes points its staging modules at ./staging, so
# its consumer must replace each one with the published v0.X.Y; the list is read from upstream's
# own go.mod so that it never drifts from the release.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

write_module() { # dir module-path require-line [replace-block]
  local dir=$1 path=$2 req=$3 repl=${4:-}
  rm -f "$dir/go.mod" "$dir/go.sum"
  {
    printf 'module %s\n\ngo 1.26.0\n\nrequire %s\n' "$path" "$req"
    [ -n "$repl" ] && printf '\nreplace (\n%s\n)\n' "$repl"
  } >"$dir/go.mod"
  (cd "$dir" && go mod tidy)
}

upstream_mod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging_version="v0.${KUBERNETES_VERSION#v1.}"
replaces=$(grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" |
  awk -v v="$staging_version" '{printf "\t%s => %s %s\n", $1, $1, v}')

write_module kubernetes mentor.dev/tests/tools/kubernetes "k8s.io/kubernetes $KUBERNETES_VERSION" "$replaces"
write_module etcd mentor.dev/tests/tools/etcd "go.etcd.io/etcd/server/v3 $ETCD_VERSION"
write_module kwok mentor.dev/tests/tools/kwok "sigs.k8s.io/kwok $KWOK_VERSION"
write_module helm mentor.dev/tests/tools/helm "helm.sh/helm/v3 $HELM_VERSION"
