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

func libraryABIVersion() uint32 {
	return uint32(C.cpex_abi_version())
}

func libraryBuildInfo() string {
	return C.GoString(C.cpex_build_info())
}

// LibraryVersion reports the ABI version of the loaded libcpex and its build info (a
// JSON object: abi, python_version, python_prefix, python_executable). It does not
// start the embedded Python runtime.
func LibraryVersion() (major, minor uint32, buildInfo string) {
	v := libraryABIVersion()
	return v >> 16, v & 0xFFFF, libraryBuildInfo()
}

// LiveHandles reports how many context and background handles the library holds for
// this process (for leak checks: 0 once every one was passed on, closed or shut down).
func LiveHandles() (int, error) {
	_, contexts, backgrounds, err := callLiveHandles()
	return contexts + backgrounds, err
}
