//go:build tools

// Package tools pins kwok, which simulates the GPU nodes in the test suite.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
