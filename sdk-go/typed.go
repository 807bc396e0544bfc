//go:build cgo

package cpex

import (
	"context"
)

// TypedPipelineResult is a PipelineResult whose modified payload and extensions are
// already decoded: ModifiedPayload into the caller's payload type P.
type TypedPipelineResult[P any] struct {
	PipelineResult
	// ModifiedPayload is the payload a plugin changed, or nil when unchanged.
	ModifiedPayload *P
	// ModifiedExtensions are the extensions a plugin changed, or nil when unchanged.
	ModifiedExtensions *Extensions
}

// DeserializePayload decodes a modified payload (PipelineResult.ModifiedPayload) into P
// (a struct's fields are matched by their msgpack tags, else their json tags).
func DeserializePayload[P any](data []byte) (*P, error) {
	if data == nil {
		return nil, nil
	}
	out := new(P)
	if err := decode(data, out, "modified payload"); err != nil {
		return nil, err
	}
	return out, nil
}

// DeserializeExtensions decodes modified extensions (PipelineResult.ModifiedExtensions).
func DeserializeExtensions(data []byte) (*Extensions, error) {
	return DeserializePayload[Extensions](data)
}

// Invoke is InvokeByName with the result decoded into the payload's own type: for a
// CMF hook, P is MessagePayload; for a generic hook, any map or struct, its fields
// named by their msgpack tags or, for a field without one, by their json tags (both
// ways: the payload sent and the modified payload decoded into P). ext may be nil.
// ctx is consumed only when the call succeeds and left unchanged and usable when it
// fails, as for InvokeByName; when the library succeeded but the modified payload or
// extensions cannot be decoded into P, ctx was consumed and the returned error says
// why. A nil or zero-value m fails with ErrCpexInvalidHandle.
func Invoke[P any](m *PluginManager, hook string, payloadType uint8, payload P, ext *Extensions, ctx *ContextTable) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	return invokeTyped(context.Background(), "Invoke", m, hook, payloadType, payload, typedOptions(ext, ctx))
}

// InvokeContext is Invoke honouring goctx's deadline and cancellation (see
// InvokeByNameContext, also for what happens to ctx when goctx ends mid-call).
func InvokeContext[P any](goctx context.Context, m *PluginManager, hook string, payloadType uint8, payload P, ext *Extensions, ctx *ContextTable) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	return invokeTyped(goctx, "InvokeContext", m, hook, payloadType, payload, typedOptions(ext, ctx))
}

// InvokeWith is InvokeContext with its optional inputs in opts: the extensions, the
// request's global context (opts.Request, which plugins read as their request /
// py-cpex global_context) and the context table of the request's previous hook (see
// InvokeByNameWith). The modified payload is decoded into P, the modified extensions
// into *Extensions, whatever type opts.Extensions had.
func InvokeWith[P any](goctx context.Context, m *PluginManager, hook string, payloadType uint8, payload P, opts InvokeOptions) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	return invokeTyped(goctx, "InvokeWith", m, hook, payloadType, payload, opts)
}

// typedOptions are the options of Invoke and InvokeContext (a nil ext is no
// extensions: see isNil).
func typedOptions(ext *Extensions, ctx *ContextTable) InvokeOptions {
	return InvokeOptions{Extensions: ext, Context: ctx}
}

func invokeTyped[P any](goctx context.Context, op string, m *PluginManager, hook string, payloadType uint8, payload P, opts InvokeOptions) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	res, next, bg, err := m.invoke(goctx, op, hook, payloadType, payload, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	typed := &TypedPipelineResult[P]{PipelineResult: *res}
	if typed.ModifiedPayload, err = DeserializePayload[P](res.ModifiedPayload); err == nil {
		typed.ModifiedExtensions, err = DeserializeExtensions(res.ModifiedExtensions)
	}
	if err != nil {
		_ = next.Close()
		_ = bg.Close()
		return nil, nil, nil, err
	}
	return typed, next, bg, nil
}
