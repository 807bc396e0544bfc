// Package kvstore is the Go binding of libkv, an in-memory key-value store written in
// Python (examples/codegen/kvstore). Everything but this file is generated from
// schema/kv.yaml by cpex_codegen (docs/codegen.md); this file says where the header
// and the library are.
package kvstore

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#cgo LDFLAGS: -L${SRCDIR}/../../../../build/examples/kvstore -lkv -Wl,-rpath,${SRCDIR}/../../../../build/examples/kvstore
*/
import "C"
