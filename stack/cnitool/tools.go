//go:build tools

// Package cnitool pins the cnitool command of containernetworking/cni (the
// runtime side of CNI, through libcni) that the test stack builds; it is
// never compiled itself (build tag "tools"), it only keeps it in go.mod.
package cnitool

import (
	_ "github.com/containernetworking/cni/cnitool"
)
