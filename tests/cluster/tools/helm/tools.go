//go:build tools

// Package tools pins helm, which installs the chart in the test suite.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
