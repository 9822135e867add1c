//go:build tools

// Package tools pins the programs this set builds, so `go mod tidy` keeps their
// dependencies in go.mod and go.sum; build.sh builds each with `go build PACKAGE`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
