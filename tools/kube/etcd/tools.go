//go:build tools

// Package tools pins etcd 3.5 (in 3.5 the etcd command is the server module's root
// package) and etcdctl. They live in a module of their own because Kubernetes 1.37
// requires the etcd client modules at 3.7: in one module graph the newest version wins
// and etcd 3.5's server would be compiled against 3.7's API.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
