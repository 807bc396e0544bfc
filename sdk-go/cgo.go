package cpex

// Where libcpex and its header are comes from the environment, never from a path in
// this package: CGO_CFLAGS (-I the folder of cpex.h) and CGO_LDFLAGS (-L and an rpath
// to the folder of libcpex.so.1), which `eval "$(cpexrt-config --cgo-env)"` sets for
// an installed cpexrt and the Makefile sets for this repository (README, "Install").
// Not `#cgo pkg-config`: Go's build cache does not key on pkg-config's answers
// (golang/go#24544), so a build would silently link the libcpex of an earlier build
// (another venv, the checkout); the CGO_* variables are part of the key. (cpexrt also
// installs a cpex.pc, for C builds and for CGO_CFLAGS="$(pkg-config --cflags cpex)".)
// Without the flags, cpex_required.h (included first into every cgo file) stops the
// build with one sentence naming the fix.

/*
#cgo CFLAGS: -include ${SRCDIR}/cpex_required.h
#cgo LDFLAGS: -l:libcpex.so.1
#include <stdlib.h>
#include "cpex.h"
*/
import "C"

import (
	"bytes"
	"unsafe"
)

// The pointer helpers of the generated cgo layer (abi_gen.go). Inputs are borrowed by
// the library for the duration of one call and never retained, so Go memory may be
// passed directly; empty inputs go over as NULL with length 0, never &b[0].

func cText(s string) *C.char {
	if len(s) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(unsafe.StringData(s)))
}

func cBytes(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b)))
}

// takeMessage copies a library-owned error message into Go and frees it.
func takeMessage(p *C.char) string {
	if p == nil {
		return ""
	}
	s := C.GoString(p)
	C.cpex_free_buffer(unsafe.Pointer(p))
	return s
}

// takeBytes copies a library-owned buffer into Go and frees it.
func takeBytes(p *C.uint8_t, n C.size_t) []byte {
	if p == nil {
		return nil
	}
	out := make([]byte, int(n))
	copy(out, unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n)))
	C.cpex_free_buffer(unsafe.Pointer(p))
	return out
}

// takeResult is takeBytes for an invoke's result (the generated calls of the invokes
// use it): the payload type's unchanged result, the most common one, is recognised in
// the library's memory and answered with the shared bytes of unchangedResult, which
// nobody may modify, instead of a copy.
func takeResult(p *C.uint8_t, n C.size_t, payloadType uint8) []byte {
	if want := unchangedResult(payloadType); p != nil && want != nil && int(n) == len(want) &&
		bytes.Equal(unsafe.Slice((*byte)(unsafe.Pointer(p)), len(want)), want) {
		C.cpex_free_buffer(unsafe.Pointer(p))
		return want
	}
	return takeBytes(p, n)
}
