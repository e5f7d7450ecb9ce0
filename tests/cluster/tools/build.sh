#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, helm) from the Go modules in this folder, into a cache outside the repository:
#   ${MENTOR_CACHE:-~/.cache/mentor}/k8s/<versions>/bin
# It rebuilds only what is missing and prints the bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0

key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin="${MENTOR_CACHE:-$HOME/.cache/mentor}/k8s/$key/bin"
mkdir -p "$bin"

missing() { for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }
build() { # module-dir ldflags packages...
  local dir=$1 ldflags=$2; shift 2
  echo "building $* in tests/cluster/tools/$dir" >&2
  local tmp; tmp=$(mktemp -d "$bin/.build.XXXXXX")
  (cd "$here/$dir" && go build -ldflags "-s -w $ldflags" -o "$tmp/" "$@")
  mv "$tmp"/* "$bin/" && rmdir "$tmp"   # appear only once complete
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
if missing kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  v="k8s.io/component-base/version"; c="k8s.io/client-go/pkg/version"
  ld=""
  for p in $v $c; do
    ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  # One invocation, so the four commands share their compiled packages.
  build kubernetes "$ld" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
fi
if missing etcd; then
  build etcd "" go.etcd.io/etcd/server/v3
  mv "$bin/server" "$bin/etcd"   # go names a /v3 main package after its parent directory
fi
if missing kwok; then
  build kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}" \
    sigs.k8s.io/kwok/cmd/kwok
fi
if missing helm; then
  h="helm.sh/helm/v3"
  # helm reports the Kubernetes version of the client libraries it was built with.
  helm_k8s_minor=$(awk '$1=="k8s.io/client-go"{split($2,v,"."); print v[2]}' "$here/helm/go.mod")
  build helm "-X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor" $h/cmd/helm
fi
echo "$bin"
