package cpex

import (
	"context"
	"fmt"
	"os"
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

// DeserializePayload decodes a modified payload (PipelineResult.ModifiedPayload) into P.
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
// CMF hook, P is MessagePayload; for a generic hook, any map or struct with msgpack
// tags. ext may be nil.
func Invoke[P any](m *PluginManager, hook string, payloadType uint8, payload P, ext *Extensions, ctx *ContextTable) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	return InvokeContext(context.Background(), m, hook, payloadType, payload, ext, ctx)
}

// InvokeContext is Invoke honouring goctx's deadline and cancellation (see
// InvokeByNameContext).
func InvokeContext[P any](goctx context.Context, m *PluginManager, hook string, payloadType uint8, payload P, ext *Extensions, ctx *ContextTable) (*TypedPipelineResult[P], *ContextTable, *BackgroundTasks, error) {
	var extensions any
	if ext != nil {
		extensions = ext
	}
	res, next, bg, err := m.InvokeByNameContext(goctx, hook, payloadType, payload, extensions, ctx)
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

// LoadConfigFile loads the YAML config at path (see LoadConfig).
func (m *PluginManager) LoadConfigFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &Error{Code: codeInvalidInput, Message: fmt.Sprintf("LoadConfigFile: %v", err)}
	}
	return m.LoadConfig(string(data))
}
