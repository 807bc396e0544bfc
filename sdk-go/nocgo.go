//go:build !cgo

package cpex

// The SDK drives libcpex.so through cgo. Built with CGO_ENABLED=0 it has no API, and
// the build stops on the line below, its one error naming the fix.
var _ = cpex_needs_cgo__build_with_CGO_ENABLED_1_and_a_C_compiler_see_the_README
