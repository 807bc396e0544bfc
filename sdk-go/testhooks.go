package cpex

/*
#include <stdint.h>
#include "cpex.h"

static cpex_manager *cpex_go_forge_manager(uintptr_t v) { return (cpex_manager *)v; }
*/
import "C"

// cgo is not allowed in _test.go files, so the tests' C access lives here.

// forgeManager wraps an arbitrary handle value, to test that the library refuses it.
func forgeManager(v uintptr) *PluginManager {
	return newManager(C.cpex_go_forge_manager(C.uintptr_t(v)), nil)
}

// rawFreeContext frees a context handle directly, bypassing ContextTable's guard.
func rawFreeContext(c *C.cpex_context) error {
	return callFreeContext(c)
}
