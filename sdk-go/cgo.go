package cpex

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#cgo LDFLAGS: -L${SRCDIR}/../build/lib -lcpex -Wl,-rpath,${SRCDIR}/../build/lib
#include <stdlib.h>
#include "cpex.h"
*/
import "C"

import "unsafe"

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
