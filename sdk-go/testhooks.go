package cpex

/*
#include <stdint.h>
#include "cpex.h"

static cpex_manager *cpex_go_forge_manager(uintptr_t v) { return (cpex_manager *)v; }

static cpex_status cpex_go_invoke_null_payload(cpex_manager *m, size_t n, char **err)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    cpex_context *ctx = NULL;
    cpex_background *bg = NULL;
    return cpex_invoke(m, "tool_pre_invoke", 15, CPEX_PAYLOAD_GENERIC, NULL, n, NULL, 0, NULL, &out, &out_len, &ctx, &bg, err);
}
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

// invokeRaw invokes with payload and extensions bytes as given (possibly not
// MessagePack at all), to test the library's own checks.
func invokeRaw(m *PluginManager, hook string, payloadType uint8, payload, extensions []byte) (*PipelineResult, error) {
	h, leave, err := m.enter("invokeRaw")
	if err != nil {
		return nil, err
	}
	defer leave()
	raw, ctx, bg, err := callInvoke(h, hook, payloadType, payload, extensions, nil)
	if err != nil {
		return nil, err
	}
	releaseContext(ctx)
	releaseBackground(bg)
	return decodeResult(raw, payloadType)
}

// invokeNullPayload passes a NULL payload pointer with length n.
func invokeNullPayload(m *PluginManager, n int) error {
	var msg *C.char
	status := C.cpex_go_invoke_null_payload(m.state.handle.Load().p, C.size_t(n), &msg)
	if int32(status) != codeOk {
		return newError(int32(status), takeMessage(msg))
	}
	return nil
}
