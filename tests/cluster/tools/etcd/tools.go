//go:build tools

// Package tools pins etcd's server, which the test suite builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
