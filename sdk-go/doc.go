// Package cpex is the Go SDK of cpex, a plugin runtime for AI gateways and agent
// hosts. The runtime is written in Python and exported as the C library libcpex.so;
// this package links it through cgo (include/cpex.h, generated from the ABI schema).
//
// A host creates a PluginManager from a YAML config, initializes it, and invokes hooks
// ("tool_pre_invoke", "cmf.llm_input", any custom name) with a payload and optional
// extensions, from any number of goroutines:
//
//	m, err := cpex.NewPluginManager(yaml)
//	if err != nil { ... }
//	defer m.Shutdown()
//	if err := m.Initialize(); err != nil { ... }
//	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric, payload, ext, nil)
//
// A struct payload's fields are named by their msgpack tags, or by their json tags
// when they have no msgpack tag, so structs tagged for encoding/json work as they are.
//
// InvokeByNameWith and the typed InvokeWith take the optional inputs of an invoke in
// an InvokeOptions: the extensions, the context table of the request's previous hook,
// and the request's global context (a GlobalContext: request id, user, tenant,
// server, content type, metadata), which plugins read as PluginContext.request and
// plugins written for py-cpex as their global_context:
//
//	res, ctx, bg, err := cpex.InvokeWith(goctx, m, "tool_pre_invoke", cpex.PayloadGeneric,
//		cpex.ToolPreInvokePayload{Name: name, Args: args},
//		cpex.InvokeOptions{Request: &cpex.GlobalContext{RequestID: id, User: user}})
//
// The other invoke functions are these with fewer inputs; all of them share the rules
// below.
//
// The result says whether to continue (IsDenied, Violation with the denying plugin's
// name), carries the modified payload and extensions (decode them with
// DeserializePayload / DeserializeExtensions, or use the typed Invoke[P]), soft
// errors of plugins that failed under on_error ignore / disable, and aggregated
// metadata. The ContextTable carries per-plugin state to the next hook of the same
// request (pass it to that invoke, which consumes it when it succeeds and leaves it
// usable when it fails, or Close it); BackgroundTasks are the fire-and-forget plugins
// (Wait for their errors, or Close).
//
// Errors are *Error values carrying the library's message; match their class with
// errors.Is against ErrCpexInvalidHandle, ErrCpexInvalidInput, ErrCpexParse,
// ErrCpexConfig, ErrCpexPipeline, ErrCpexSerialize, ErrCpexTimeout, ErrCpexPanic,
// ErrCpexRuntimeInit and ErrCpexABIMismatch. After Shutdown every call fails with
// ErrCpexInvalidHandle; closing twice is harmless; a manager dropped without Shutdown
// is released by a cleanup that never blocks the program's finalizers. A nil or zero
// PluginManager, ContextTable or BackgroundTasks (one not created by this package)
// fails every method with ErrCpexInvalidHandle instead of panicking or hanging;
// Shutdown and Close of one do nothing, and Wait on a nil *BackgroundTasks (an invoke
// that started no fire-and-forget task) returns at once.
//
// ReloadConfig and ReloadConfigFile swap the plugins of a running manager for a new
// config atomically: the new plugins are initialized first, calls in flight finish on
// the old ones, and a config that fails leaves the old plugins serving.
//
// Each call inside the library holds an OS thread, so calls in flight are bounded
// (WithMaxInFlight, default DefaultMaxInFlight); the Context variants of invoke and
// wait give up when their context ends.
//
// Observability (README: Observability): SetLogger forwards the engine's log records
// to a *slog.Logger; PluginManager.SetDecisionSink (or the config's
// decision_records.file) turns on a DecisionRecord per invoke, the audit trail of each
// plugin's verdict; GlobalContext.Traceparent / Tracestate carry the host's W3C trace
// context, so the engine's OpenTelemetry spans join the gateway's trace.
package cpex
