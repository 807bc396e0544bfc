package cpex

/*
#include "cpex.h"
*/
import "C"

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxInFlight bounds the calls that may be inside the library at once. Each
// call sitting in Python holds an OS thread; without a bound, many goroutines blocked
// in a slow plugin would drive the process toward Go's 10,000-thread limit.
const DefaultMaxInFlight = 64

// Option configures a PluginManager.
type Option func(*options)

type options struct {
	maxInFlight int
}

// WithMaxInFlight sets how many calls may be inside the library at once (at least 1).
func WithMaxInFlight(n int) Option {
	return func(o *options) {
		if n < 1 {
			n = 1
		}
		o.maxInFlight = n
	}
}

// managerState is what a cleanup may touch: it never refers back to the PluginManager,
// so a dropped manager can be collected and its handle released.
type managerState struct {
	handle atomic.Pointer[managerRef]
	// The decision sink registered by SetDecisionSink (observe.go), released after
	// the library's shutdown delivered its last record.
	sinkMu sync.Mutex
	sink   *decisionSink
	// engineWorkers: the manager's engine runs in worker processes
	// (plugin_settings.engine_workers), so its invokes skip the lane: they never
	// enter this process's Python.
	engineWorkers atomic.Bool
}

// releaseSink forgets the decision sink once the manager is shut down.
func (st *managerState) releaseSink() {
	st.sinkMu.Lock()
	s := st.sink
	st.sink = nil
	st.sinkMu.Unlock()
	s.release()
}

// PluginManager drives the plugins of one config. It is safe for concurrent use;
// Shutdown may race in-flight calls, which then fail with ErrCpexInvalidHandle.
//
// Create it with NewPluginManager or NewPluginManagerDefault. A nil *PluginManager or a
// zero PluginManager{} is not usable: every method (and Invoke / InvokeContext) fails
// at once with ErrCpexInvalidHandle naming the method, never a panic or a hang; its
// Shutdown does nothing and returns nil.
type PluginManager struct {
	state *managerState
	sem   chan struct{}
}

var abiCheck struct {
	once sync.Once
	err  error
}

// checkLibrary refuses a library built for another ABI, once per process.
func checkLibrary() error {
	abiCheck.once.Do(func() {
		abiCheck.err = checkVersion(libraryABIVersion(), libraryBuildInfo())
	})
	return abiCheck.err
}

func checkVersion(v uint32, buildInfo string) error {
	major, minor := v>>16, v&0xFFFF
	if major != ABIVersionMajor || minor < ABIVersionMinor {
		return &Error{Code: codeABIMismatch, Message: fmt.Sprintf(
			"libcpex has ABI %d.%d; this Go SDK needs %d.x with x >= %d (library build: %s)",
			major, minor, ABIVersionMajor, ABIVersionMinor, buildInfo)}
	}
	return nil
}

func newManager(h *C.cpex_manager, opts []Option) *PluginManager {
	o := options{maxInFlight: DefaultMaxInFlight}
	for _, opt := range opts {
		opt(&o)
	}
	st := &managerState{}
	st.handle.Store(&managerRef{h})
	m := &PluginManager{state: st, sem: make(chan struct{}, o.maxInFlight)}
	runtime.AddCleanup(m, dropManager, st)
	return m
}

// NewPluginManagerDefault creates a manager with no config; load one with LoadConfig.
func NewPluginManagerDefault(opts ...Option) (*PluginManager, error) {
	if err := checkLibrary(); err != nil {
		return nil, err
	}
	h, err := callManagerNew()
	if err != nil {
		return nil, err
	}
	return newManager(h, opts), nil
}

// NewPluginManager creates a manager and loads the YAML config into it.
func NewPluginManager(yaml string, opts ...Option) (*PluginManager, error) {
	if err := checkLibrary(); err != nil {
		return nil, err
	}
	h, err := callManagerNewFromYaml(yaml)
	if err != nil {
		return nil, err
	}
	m := newManager(h, opts)
	m.noteEngineWorkers(h)
	return m, nil
}

// noteEngineWorkers records, after a config was loaded, whether the manager's engine
// runs in worker processes.
func (m *PluginManager) noteEngineWorkers(h *C.cpex_manager) {
	n, err := callEngineWorkers(h)
	m.state.engineWorkers.Store(err == nil && n > 0)
}

// EngineWorkers is the number of worker processes the manager's engine runs in
// (plugin_settings.engine_workers), 0 when it runs in this process. Since ABI 1.3.
func (m *PluginManager) EngineWorkers() (int, error) {
	h, leave, err := m.enter("EngineWorkers")
	if err != nil {
		return 0, err
	}
	defer leave()
	return callEngineWorkers(h)
}

// check refuses a nil or zero-value manager (one not created by NewPluginManager or
// NewPluginManagerDefault) with an ErrCpexInvalidHandle naming op.
func (m *PluginManager) check(op string) error {
	switch {
	case m == nil:
		return &Error{Code: codeInvalidHandle, Message: op + ": the *PluginManager is nil; create one with NewPluginManager or NewPluginManagerDefault"}
	case m.state == nil || m.sem == nil:
		return &Error{Code: codeInvalidHandle, Message: op + ": the PluginManager is a zero value, not created by NewPluginManager or NewPluginManagerDefault"}
	}
	return nil
}

// enter takes a slot of the in-flight bound and the lane, and returns the live
// handle and the function that gives both back.
func (m *PluginManager) enter(op string) (*C.cpex_manager, func(), error) {
	return m.enterContext(context.Background(), op)
}

// enterContext is enter, giving up when goctx ends while waiting.
func (m *PluginManager) enterContext(goctx context.Context, op string) (*C.cpex_manager, func(), error) {
	h, ex, err := m.enterWith(goctx, op, true)
	if err != nil {
		return nil, nil, err
	}
	return h, ex.leave, nil
}

// enterCall is enterContext for an invoke: a manager whose engine runs in worker
// processes answers it without entering Python (ffi/remote.c), so it skips the lane
// and calls run side by side. It returns the exit as a value (no function value to
// allocate on every invoke): call its leave once the call returned.
func (m *PluginManager) enterCall(goctx context.Context, op string) (*C.cpex_manager, exit, error) {
	return m.enterWith(goctx, op, m.state == nil || !m.state.engineWorkers.Load())
}

// exit is what a call entered with enterWith gives back when it leaves: its slot of
// the in-flight bound and, when it took the lane, its lane ticket.
type exit struct {
	sem    chan struct{}
	ticket uint64 // 0: the call did not take the lane
}

func (e exit) leave() {
	if e.ticket != 0 {
		leaveLane(e.ticket)
	}
	<-e.sem
}

func (m *PluginManager) enterWith(goctx context.Context, op string, useLane bool) (*C.cpex_manager, exit, error) {
	if err := m.check(op); err != nil {
		return nil, exit{}, err
	}
	select {
	case m.sem <- struct{}{}: // a free slot: no select over the context's channel
	default:
		select {
		case m.sem <- struct{}{}:
		case <-goctx.Done():
			return nil, exit{}, fmt.Errorf("cpex: %s: waiting for a slot of the in-flight bound: %w", op, goctx.Err())
		}
	}
	ref := m.state.handle.Load()
	if ref == nil {
		<-m.sem
		return nil, exit{}, &Error{Code: codeInvalidHandle, Message: op + ": the manager was shut down"}
	}
	if !useLane {
		return ref.p, exit{sem: m.sem}, nil
	}
	ticket, err := enterLaneTicket(goctx, op)
	if err != nil {
		<-m.sem
		return nil, exit{}, err
	}
	return ref.p, exit{sem: m.sem, ticket: ticket}, nil
}

// RegisterFactory registers a plugin kind for the configs loaded afterwards: configs
// may then say `kind: <kind>` for the cpexrt.Plugin subclass at target, an import path
// "package.module:ClassName".
func (m *PluginManager) RegisterFactory(kind, target string) error {
	h, leave, err := m.enter("RegisterFactory")
	if err != nil {
		return err
	}
	defer leave()
	return callRegisterFactory(h, kind, target)
}

// LoadConfig loads (replaces) the YAML config before Initialize (afterwards, use
// ReloadConfig).
func (m *PluginManager) LoadConfig(yaml string) error {
	h, leave, err := m.enter("LoadConfig")
	if err != nil {
		return err
	}
	defer leave()
	if err := callLoadConfig(h, yaml); err != nil {
		return err
	}
	m.noteEngineWorkers(h)
	return nil
}

// LoadConfigFile loads the YAML config file at path (see LoadConfig); the library
// reads it, and relative plugin_settings.plugin_dirs in it are taken from the file's
// folder, not the process's working directory. A file that cannot be read fails with
// ErrCpexInvalidInput naming it.
func (m *PluginManager) LoadConfigFile(path string) error {
	h, leave, err := m.enter("LoadConfigFile")
	if err != nil {
		return err
	}
	defer leave()
	if err := callLoadConfigFile(h, path); err != nil {
		return err
	}
	m.noteEngineWorkers(h)
	return nil
}

// ReloadConfig swaps the plugins of the running (initialized) manager for those of a
// new YAML config, atomically for every call: the new plugins are instantiated and
// initialized first; then calls that began before the swap finish on the old plugins
// while calls that begin after it run on the new ones; the old plugins are shut down
// once their calls (at most the old invoke_timeout, plus 1 s) and fire-and-forget
// tasks (up to the old plugin_timeout) finished, and only then does ReloadConfig
// return. A bad config (ErrCpexParse, ErrCpexConfig naming the field or the plugin
// kind that cannot be imported) or a failing initialize (ErrCpexPipeline naming the
// plugin; the new plugins already initialized are shut down again) changes nothing:
// the old plugins keep serving. A manager not initialized fails with ErrCpexPipeline
// (use LoadConfig).
//
// A *ContextTable returned before the reload may be passed to an invoke after it: a
// plugin's state carries over to the plugin of the same name when its kind and config
// are unchanged, the state of plugins the new config lacks is dropped, and when the
// table holds state of a plugin whose kind or config changed the invoke fails with
// ErrCpexInvalidInput (the table stays usable: invoke without it, or Close it).
// Reloads of one manager run one at a time. Since ABI 1.2.
func (m *PluginManager) ReloadConfig(yaml string) error {
	h, leave, err := m.enter("ReloadConfig")
	if err != nil {
		return err
	}
	defer leave()
	return callReloadConfig(h, yaml)
}

// ReloadConfigFile is ReloadConfig with the YAML config file at path, read by the
// library; relative plugin_settings.plugin_dirs in it are taken from the file's
// folder. A file that cannot be read fails with ErrCpexInvalidInput naming it, and the
// old plugins keep serving. Since ABI 1.2.
func (m *PluginManager) ReloadConfigFile(path string) error {
	h, leave, err := m.enter("ReloadConfigFile")
	if err != nil {
		return err
	}
	defer leave()
	return callReloadConfigFile(h, path)
}

// Initialize initializes every plugin; a failing plugin fails the call, by name.
func (m *PluginManager) Initialize() error {
	h, leave, err := m.enter("Initialize")
	if err != nil {
		return err
	}
	defer leave()
	return callInitialize(h)
}

// Shutdown shuts the plugins down and invalidates the manager, its context tables
// and background handles. Later calls fail with ErrCpexInvalidHandle; a second
// Shutdown returns nil. Shutdown of a nil *PluginManager or a zero PluginManager{}
// does nothing and returns nil too (there is nothing to shut down), so a deferred
// Shutdown is always safe.
func (m *PluginManager) Shutdown() error {
	if m == nil || m.state == nil {
		return nil
	}
	ref := m.state.handle.Swap(nil)
	if ref == nil {
		return nil
	}
	err := callShutdown(ref.p)
	m.state.releaseSink()
	return err
}

// HasHooksFor reports whether any active plugin handles hook; cheap enough to guard
// the construction of a payload.
func (m *PluginManager) HasHooksFor(hook string) (bool, error) {
	h, leave, err := m.enter("HasHooksFor")
	if err != nil {
		return false, err
	}
	defer leave()
	return callHasHooksFor(h, hook)
}

// PluginCount is the number of configured plugins.
func (m *PluginManager) PluginCount() (int, error) {
	h, leave, err := m.enter("PluginCount")
	if err != nil {
		return 0, err
	}
	defer leave()
	return callPluginCount(h)
}

// PluginNames lists the configured plugins in config order.
func (m *PluginManager) PluginNames() ([]string, error) {
	h, leave, err := m.enter("PluginNames")
	if err != nil {
		return nil, err
	}
	defer leave()
	raw, err := callPluginNames(h)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := decode(raw, &names, "plugin names"); err != nil {
		return nil, err
	}
	return names, nil
}

// PluginStats reports, per plugin in config order, where it runs and, for isolated
// plugins (isolation thread or process), their workers' counters and circuit.
// Since ABI 1.2.
func (m *PluginManager) PluginStats() ([]PluginStats, error) {
	h, leave, err := m.enter("PluginStats")
	if err != nil {
		return nil, err
	}
	defer leave()
	raw, err := callPluginStats(h)
	if err != nil {
		return nil, err
	}
	var stats []PluginStats
	if err := decode(raw, &stats, "plugin stats"); err != nil {
		return nil, err
	}
	return stats, nil
}

// IsInitialized reports whether Initialize succeeded and Shutdown has not run.
func (m *PluginManager) IsInitialized() (bool, error) {
	h, leave, err := m.enter("IsInitialized")
	if err != nil {
		return false, err
	}
	defer leave()
	return callIsInitialized(h)
}

// InvokeByName runs the plugins of hook over payload, encoded as MessagePack with
// named fields: a map, or a struct whose fields are named by their msgpack tags and,
// for a field without a msgpack tag, by its json tag (`-` skips a field, omitempty is
// honoured; a field with neither tag goes by its Go name). extensions may be nil.
//
// ctx is the context table returned by the previous invoke of the same request, or
// nil. The call consumes ctx only when it succeeds. When it fails, whatever the
// reason (the payload or extensions cannot be encoded, the manager was shut down, the
// library returns an error: a plugin failed under on_error: fail, a timeout, a bad
// input), ctx is left unchanged and usable: pass it again to retry, pass it to the
// next hook, or Close it. A ctx that another invoke holds at the moment, or that was
// consumed or closed, fails the call with ErrCpexInvalidHandle. (When the library
// succeeded but its result cannot be decoded, ctx was consumed all the same.)
//
// The returned context table and background tasks are nil when there is nothing to
// carry; close the ones you do not pass on.
func (m *PluginManager) InvokeByName(hook string, payloadType uint8, payload any, extensions any, ctx *ContextTable) (*PipelineResult, *ContextTable, *BackgroundTasks, error) {
	return m.invoke(context.Background(), "InvokeByName", hook, payloadType, payload, InvokeOptions{Extensions: extensions, Context: ctx})
}

// InvokeByNameContext is InvokeByName honouring goctx: waiting for a slot of the
// in-flight bound is cancellable (ctx is then left unchanged and usable), and when
// goctx ends while the plugins run, the call returns goctx's error at once (matchable
// with errors.Is, e.g. against context.DeadlineExceeded). The abandoned invoke
// finishes in the background and releases the context table and background tasks it
// produces; it holds ctx until then (an invoke passing ctx meanwhile fails with
// ErrCpexInvalidHandle, in use), and when it fails it puts ctx back, usable again,
// while when it succeeds ctx is consumed. Close ctx to drop it either way: a table
// closed while the abandoned invoke holds it is freed when that invoke fails.
// Payloads are encoded as for InvokeByName (msgpack tags, else json tags).
func (m *PluginManager) InvokeByNameContext(goctx context.Context, hook string, payloadType uint8, payload any, extensions any, ctx *ContextTable) (*PipelineResult, *ContextTable, *BackgroundTasks, error) {
	return m.invoke(goctx, "InvokeByNameContext", hook, payloadType, payload, InvokeOptions{Extensions: extensions, Context: ctx})
}

// InvokeOptions are the optional inputs of an invoke (InvokeByNameWith, InvokeWith);
// the zero value passes none of them.
type InvokeOptions struct {
	// Extensions are the call's extensions: nil, an *Extensions, or any map or struct
	// encoding as the Extensions record (msgpack tags, else json tags). A nil pointer
	// or map counts as none.
	Extensions any
	// Request is the request's global context: request id (required, non-empty),
	// user (a string or a map), tenant, server, content type, metadata. Plugins read
	// it as PluginContext.request, plugins written for py-cpex as their
	// global_context. nil passes none (cpexrt plugins see request None; py-cpex
	// plugins get a global context with a fresh request id). A Request the library
	// refuses fails the invoke with ErrCpexInvalidInput naming the field, e.g.
	// request.request_id.
	Request *GlobalContext
	// Context is the context table returned by the previous invoke of the same
	// request, or nil; consumed only when the invoke succeeds (see InvokeByName).
	Context *ContextTable
	// Timeout is the call's own time limit (rounded up to whole milliseconds), 0 for
	// none: the library stops the running plugin once the call ran this long and the
	// call fails with ErrCpexTimeout, whatever the plugins' on_error
	// (plugin_settings.invoke_timeout still applies when it is shorter); Context then
	// stays usable. Unlike goctx's deadline, which only stops waiting for the call,
	// the plugins stop too. A negative Timeout fails with ErrCpexInvalidInput. Since
	// ABI 1.2 (cpex_invoke_with).
	Timeout time.Duration
}

// InvokeByNameWith is InvokeByNameContext with its optional inputs in opts, and the
// request's global context besides (opts.Request). Everything else is as for
// InvokeByNameContext: payload encoding, the contract of the context table
// (opts.Context is consumed only on success), goctx's deadline and cancellation.
func (m *PluginManager) InvokeByNameWith(goctx context.Context, hook string, payloadType uint8, payload any, opts InvokeOptions) (*PipelineResult, *ContextTable, *BackgroundTasks, error) {
	return m.invoke(goctx, "InvokeByNameWith", hook, payloadType, payload, opts)
}

// invoke is InvokeByNameWith with op, the exported function called, for the
// messages; every invoke of the package goes through it.
func (m *PluginManager) invoke(goctx context.Context, op, hook string, payloadType uint8, payload any, opts InvokeOptions) (*PipelineResult, *ContextTable, *BackgroundTasks, error) {
	if err := m.check(op); err != nil {
		return nil, nil, nil, err
	}
	ctx := opts.Context
	// The library consumes the context handle only when it returns CPEX_OK; on every
	// other path the handle goes back into ctx (giveBack).
	ctxHandle, err := ctx.acquire(op)
	if err != nil {
		return nil, nil, nil, err
	}
	in, err := encodeInvokeInput(op, payload, opts.Extensions, opts.Request, opts.Timeout)
	if err != nil {
		ctx.giveBack(ctxHandle)
		return nil, nil, nil, err
	}
	h, ex, err := m.enterCall(goctx, op)
	if err != nil {
		in.release()
		ctx.giveBack(ctxHandle)
		return nil, nil, nil, err
	}
	var out invokeOutput
	if goctx.Done() == nil {
		// A context that never ends (context.Background): the call runs on this
		// goroutine, with no function value to make (await would run it here too).
		out = callLibrary(h, ex, hook, payloadType, in, ctx, ctxHandle)
	} else {
		// callLibrary settles ctx itself, so that an abandoned call does the same as
		// one waited for.
		call := func() invokeOutput { return callLibrary(h, ex, hook, payloadType, in, ctx, ctxHandle) }
		out, err = await(goctx, call, invokeOutput.release)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cpex: %s %q: %w", op, hook, err)
		}
	}
	if out.err != nil {
		return nil, nil, nil, out.err
	}
	result, err := decodeResult(out.raw, payloadType)
	if err != nil {
		out.release()
		return nil, nil, nil, err
	}
	next, bg := newHandles(out.ctx, out.bg)
	return result, next, bg, nil
}

// callLibrary makes an invoke's call into the library with its encoded inputs, then
// leaves (ex), releases the inputs and settles ctx: consumed when the call succeeded,
// its handle given back otherwise.
func callLibrary(h *C.cpex_manager, ex exit, hook string, payloadType uint8, in invokeInput, ctx *ContextTable, ctxHandle *C.cpex_context) invokeOutput {
	defer ex.leave()
	defer in.release()
	var out invokeOutput
	if in.options != nil {
		out.raw, out.ctx, out.bg, out.err = callInvokeWith(h, hook, payloadType, in.payload, in.extensions, in.request, in.options, ctxHandle)
	} else if in.request != nil {
		out.raw, out.ctx, out.bg, out.err = callInvokeRequest(h, hook, payloadType, in.payload, in.extensions, in.request, ctxHandle)
	} else {
		out.raw, out.ctx, out.bg, out.err = callInvoke(h, hook, payloadType, in.payload, in.extensions, ctxHandle)
	}
	if out.err != nil {
		ctx.giveBack(ctxHandle)
	} else {
		ctx.markConsumed()
	}
	return out
}

// decodeResult decodes the PipelineResult of an invoke. The most common result, no
// plugin objected or changed anything, is exactly the payload type's unchanged result
// (unchangedResult, generated from the schema): it is recognised without decoding.
func decodeResult(raw []byte, payloadType uint8) (*PipelineResult, error) {
	if want := unchangedResult(payloadType); want != nil && bytes.Equal(raw, want) {
		return &PipelineResult{ContinueProcessing: true, PayloadType: payloadType}, nil
	}
	result := &PipelineResult{}
	if err := decode(raw, result, "pipeline result"); err != nil {
		return nil, err
	}
	return result, nil
}

type invokeOutput struct {
	raw []byte
	ctx *C.cpex_context
	bg  *C.cpex_background
	err error
}

// release frees the handles of an invoke nobody will use.
func (o invokeOutput) release() {
	releaseContext(o.ctx)
	releaseBackground(o.bg)
}

// invokeInput is an invoke's input as the library takes it: MessagePack, nil for
// what is absent. The bytes live in enc's buffer: release it once the call returned.
type invokeInput struct {
	payload, extensions, request, options []byte
	enc                                   *inputEncoder
}

func (in invokeInput) release() {
	in.enc.release()
}

func encodeInvokeInput(op string, payload, extensions any, request *GlobalContext, timeout time.Duration) (invokeInput, error) {
	if timeout < 0 {
		return invokeInput{}, newError(codeInvalidInput, fmt.Sprintf("%s: Timeout: expected a positive duration or 0 (none), got %v", op, timeout))
	}
	e := getInputEncoder()
	fail := func(err error) (invokeInput, error) {
		e.release()
		return invokeInput{}, err
	}
	// Offsets first, slices at the end: the buffer may move while it grows.
	var spans [4][2]int
	var has [4]bool
	var err error
	if timeout > 0 {
		ms := uint64((timeout + time.Millisecond - 1) / time.Millisecond)
		if spans[3][0], spans[3][1], err = e.encode(&CallOptions{TimeoutMs: ms}, op, "options"); err != nil {
			return fail(err)
		}
		has[3] = true
	}
	if spans[0][0], spans[0][1], err = e.encode(payload, op, "payload"); err != nil {
		return fail(err)
	}
	has[0] = true
	if !isNil(extensions) {
		if spans[1][0], spans[1][1], err = e.encode(extensions, op, "extensions"); err != nil {
			return fail(err)
		}
		has[1] = true
	}
	if request != nil {
		if spans[2][0], spans[2][1], err = e.encode(request, op, "request"); err != nil {
			return fail(err)
		}
		has[2] = true
	}
	all := e.buf.Bytes()
	part := func(i int) []byte {
		if !has[i] {
			return nil
		}
		return all[spans[i][0]:spans[i][1]:spans[i][1]]
	}
	return invokeInput{payload: part(0), extensions: part(1), request: part(2), options: part(3), enc: e}, nil
}

// isNil reports whether v is nil or holds a nil pointer, map, slice or interface (a
// nil *Extensions in an any is no extensions, not a MessagePack nil).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return r.IsNil()
	}
	return false
}
