//go:build cgo

package cpex

/*
#include "cpex.h"
*/
import "C"

// What the SDK asks of the loaded library itself, not of a manager.

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
