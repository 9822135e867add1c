//go:build tools

// Package tools pins the Kubernetes provider. It is a module of its own because the
// provider does not compile against the CLI's pulumi/pkg/v3 (codegen/schema changed
// ResourceSpec values to pointers after v3.215.0, which the provider requires).
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes"
)
