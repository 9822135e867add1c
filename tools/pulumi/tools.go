//go:build tools

// Package tools pins the Pulumi CLI. It is built as a dependency of this module because
// `go install` refuses modules whose go.mod has replace directives.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
