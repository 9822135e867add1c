//go:build tools

// Package tools pins the one program this set builds, so `go mod tidy` keeps its
// dependencies in go.mod and go.sum; build.sh builds it with `go build PACKAGE`.
package tools

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
