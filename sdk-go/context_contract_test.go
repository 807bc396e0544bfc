package cpex

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// The contract of a context table passed to an invoke: the invoke consumes it only
// when it succeeds; when it fails, whatever the reason (encoding in the SDK, a
// cancelled wait for a slot, the library returning an error), the table is left
// unchanged and usable, for a retry or the next hook. One invoke holds a table at a
// time. The tests read the table through the Counter plugin, which counts the hooks of
// one request in its per-request state and reports the count from tool_post_invoke.

// contractConfig: Counter on both hooks, after the plugins that fail or sleep when the
// extensions name their tool.
func contractConfig(t *testing.T, settings string) string {
	return config(t, settings,
		plugin("raiser", "Raises", pre, "priority: 1", "conditions: [{tools: [boom]}]"),
		plugin("garbage", "Garbage", pre, "priority: 1", "conditions: [{tools: [junk]}]"),
		plugin("sleeper", "AsyncSleeper", pre, "priority: 1", "conditions: [{tools: [slow, slow-boom]}]", "config: {seconds: 0.5}"),
		plugin("late-raiser", "Raises", pre, "priority: 2", "conditions: [{tools: [slow-boom]}]"),
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]", "priority: 10"))
}

// startedWith is started with options.
func startedWith(t *testing.T, yaml string, opts ...Option) *PluginManager {
	t.Helper()
	m, err := NewPluginManager(yaml, opts...)
	if err != nil {
		t.Fatalf("NewPluginManager: %v", err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// firstHook runs tool_pre_invoke with no context: Counter counts 1 and a table comes back.
func firstHook(t *testing.T, m *PluginManager) *ContextTable {
	t.Helper()
	_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil {
		t.Fatalf("first hook: ctx=%v err=%v", ctx, err)
	}
	return ctx
}

// postHookSees runs tool_post_invoke with ctx and checks that Counter saw calls hooks
// in the request, i.e. that the table carried the state of the successful hooks.
func postHookSees(t *testing.T, m *PluginManager, ctx *ContextTable, calls int64) {
	t.Helper()
	res, next, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if err != nil {
		t.Fatalf("post hook with the context table: %v", err)
	}
	defer next.Close()
	if got := res.Metadata["calls"]; got != int64(calls) {
		t.Fatalf("Counter saw calls=%v; want %d (metadata %v)", got, calls, res.Metadata)
	}
	// Consumed by the success.
	if _, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx); !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("a consumed context table again: %v", err)
	}
}

// settle runs an invoke without a table on a manager of one slot: it starts only
// after an abandoned invoke finished and settled its table. What it returns is closed.
func settle(t *testing.T, m *PluginManager) {
	t.Helper()
	_, next, bg, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = next.Close()
	_ = bg.Close()
}

// wantInUse checks the error of an invoke passed a table another invoke holds.
func wantInUse(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already in use", err)
	}
}

func TestContextSurvivesAnEncodeFailure(t *testing.T) {
	m := started(t, contractConfig(t, ""))
	unencodable := map[string]any{"ch": make(chan int)}
	cases := map[string]func(ctx *ContextTable) error{
		"payload": func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, unencodable, nil, ctx)
			return err
		},
		"extensions": func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, unencodable, ctx)
			return err
		},
		"typed payload": func(ctx *ContextTable) error {
			_, _, _, err := Invoke(m, "tool_post_invoke", PayloadGeneric, unencodable, nil, ctx)
			return err
		},
		"typed extensions": func(ctx *ContextTable) error {
			_, _, _, err := InvokeContext(context.Background(), m, "tool_post_invoke", PayloadGeneric, map[string]any{}, &Extensions{Custom: unencodable}, ctx)
			return err
		},
	}
	for name, fail := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := firstHook(t, m)
			for i := 0; i < 2; i++ { // and again: the table is still there
				if err := fail(ctx); !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "cannot encode as MessagePack") {
					t.Fatalf("attempt %d: got %v; want ErrCpexInvalidInput, cannot encode", i+1, err)
				}
			}
			postHookSees(t, m, ctx, 2)
		})
	}
}

func TestContextSurvivesACancelledWaitForASlot(t *testing.T) {
	m := startedWith(t, contractConfig(t, ""), WithMaxInFlight(1))
	ctx := firstHook(t, m)
	busy := make(chan error, 1)
	go func() {
		_, next, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow"), nil)
		_ = next.Close()
		busy <- err
	}()
	time.Sleep(100 * time.Millisecond) // the sleeper holds the only slot for 0.5 s
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, _, err := m.InvokeByNameContext(goctx, "tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "in-flight bound") {
		t.Fatalf("err = %v", err)
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	postHookSees(t, m, ctx, 2)
}

func TestContextSurvivesAShutDownManager(t *testing.T) {
	m := started(t, contractConfig(t, ""))
	ctx := firstHook(t, m)
	other, err := NewPluginManager(contractConfig(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	_ = other.Shutdown()
	if _, _, _, err := other.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx); !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("invoke on a shut-down manager: %v", err)
	}
	postHookSees(t, m, ctx, 2)
}

// Every error status of the library leaves the table valid: pass it again (the
// failure repeats), then to the post hook.
func TestContextSurvivesAFailedInvoke(t *testing.T) {
	m := started(t, contractConfig(t, "  plugin_timeout: 0.2\n"))
	cases := []struct {
		name     string
		run      func(ctx *ContextTable) error
		sentinel error
		message  string
	}{
		{"plugin raises under on_error fail", func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("boom"), ctx)
			return err
		}, ErrCpexPipeline, "plugin 'raiser' raised RuntimeError"},
		{"plugin returns garbage", func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("junk"), ctx)
			return err
		}, ErrCpexPipeline, "plugin 'garbage' returned int"},
		{"plugin times out", func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow"), ctx)
			return err
		}, ErrCpexTimeout, "plugin 'sleeper' timed out"},
		{"unknown payload type", func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", 99, map[string]any{}, nil, ctx)
			return err
		}, ErrCpexInvalidInput, "unknown payload type 99"},
		{"non-UTF-8 hook", func(ctx *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool\xff", PayloadGeneric, map[string]any{}, nil, ctx)
			return err
		}, ErrCpexInvalidInput, "hook: not valid UTF-8"},
		{"typed invoke, plugin raises", func(ctx *ContextTable) error {
			_, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "boom"}, entity("boom"), ctx)
			return err
		}, ErrCpexPipeline, "plugin 'raiser' raised RuntimeError"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := firstHook(t, m)
			for i := 0; i < 2; i++ {
				if err := tc.run(ctx); !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.message) {
					t.Fatalf("attempt %d: got %v; want %v containing %q", i+1, err, tc.sentinel, tc.message)
				}
			}
			postHookSees(t, m, ctx, 2)
		})
	}
}

// A failed invoke leaves the table unchanged: what Counter did in the failed invoke,
// before the raiser failed it, is not kept.
func TestFailedInvokeLeavesTheContextUnchanged(t *testing.T) {
	m := started(t, config(t, "",
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]", "priority: 1"),
		plugin("raiser", "Raises", pre, "priority: 10", "conditions: [{tools: [boom]}]")))
	ctx := firstHook(t, m)
	for i := 0; i < 3; i++ {
		if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("boom"), ctx); !errors.Is(err, ErrCpexPipeline) {
			t.Fatalf("attempt %d: got %v; want ErrCpexPipeline", i+1, err)
		}
	}
	postHookSees(t, m, ctx, 2)
}

// An invoke abandoned because its goctx ended holds the table until it finishes; when
// it then fails, the table is put back. The manager has one slot, so the next invoke
// without a table starts only after the abandoned one settled the table.
func TestAbandonedInvokeThatFailsGivesTheContextBack(t *testing.T) {
	m := startedWith(t, contractConfig(t, ""), WithMaxInFlight(1))
	ctx := firstHook(t, m)
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, _, err := m.InvokeByNameContext(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow-boom"), ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	wantInUse(t, err)
	settle(t, m)
	postHookSees(t, m, ctx, 2)
}

// An abandoned invoke that then succeeds consumed the table.
func TestAbandonedInvokeThatSucceedsConsumesTheContext(t *testing.T) {
	m := startedWith(t, contractConfig(t, ""), WithMaxInFlight(1))
	ctx := firstHook(t, m)
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, _, err := m.InvokeByNameContext(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow"), ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	settle(t, m)
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already consumed", err)
	}
}

// A table closed while an abandoned invoke holds it is freed when that invoke fails,
// not put back into a table nobody will close again.
func TestContextClosedWhileAnAbandonedInvokeHoldsItIsFreed(t *testing.T) {
	m := startedWith(t, contractConfig(t, ""), WithMaxInFlight(1))
	before, err := LiveHandles()
	if err != nil {
		t.Fatal(err)
	}
	ctx := firstHook(t, m)
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, _, err := m.InvokeByNameContext(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow-boom"), ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatalf("Close while held: %v", err)
	}
	settle(t, m)
	if after, err := LiveHandles(); err != nil || after > before {
		t.Fatalf("live handles went from %d to %d (%v): the closed table was put back", before, after, err)
	}
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already closed") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already closed", err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// While one invoke holds a table, another invoke passing it fails at once.
func TestOneInvokeHoldsAContextTableAtATime(t *testing.T) {
	m := started(t, contractConfig(t, ""))
	ctx := firstHook(t, m)
	held := make(chan error, 1)
	go func() {
		_, next, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("slow"), ctx)
		_ = next.Close()
		held <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for ctx.state.handle.Load() != nil { // until the first invoke took it
		if time.Now().After(deadline) {
			t.Fatal("the first invoke never took the table")
		}
		time.Sleep(time.Millisecond)
	}
	_, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	wantInUse(t, err)
	if err := <-held; err != nil {
		t.Fatalf("the invoke holding the table: %v", err)
	}
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already consumed", err)
	}
}

// Goroutines hammering one table with failing invokes: each attempt either held the
// table (and failed in the plugin) or found it in use; the table survives them all.
func TestConcurrentFailedInvokesShareAContextTableSafely(t *testing.T) {
	m := started(t, contractConfig(t, ""))
	ctx := firstHook(t, m)
	const goroutines, attempts = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	held, inUse := 0, 0
	errs := make(chan error, goroutines*attempts)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < attempts; i++ {
				_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, entity("boom"), ctx)
				mu.Lock()
				switch {
				case errors.Is(err, ErrCpexPipeline):
					held++
				case errors.Is(err, ErrCpexInvalidHandle) && strings.Contains(err.Error(), "already in use"):
					inUse++
				default:
					errs <- err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	unexpected := 0
	for err := range errs {
		if unexpected++; unexpected <= 3 {
			t.Errorf("unexpected outcome: %v", err)
		}
	}
	if unexpected > 0 {
		t.Fatalf("%d unexpected outcomes (%d held the table, %d found it in use)", unexpected, held, inUse)
	}
	if held == 0 {
		t.Fatalf("no invoke ever held the table (%d in use)", inUse)
	}
	t.Logf("%d attempts held the table, %d found it in use", held, inUse)
	postHookSees(t, m, ctx, 2)
}

// When the library succeeded but the modified payload cannot be decoded into P, the
// typed invoke fails and the table was consumed (documented on Invoke).
func TestTypedDecodeFailureAfterSuccessConsumesTheContext(t *testing.T) {
	m := started(t, config(t, "",
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]"),
		plugin("tracer", "Trace", pre, "config: {tag: t}")))
	ctx := firstHook(t, m)
	// The tracer adds trace: ["t"], which a map[string]int cannot hold.
	_, next, bg, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, map[string]int{}, nil, ctx)
	if !errors.Is(err, ErrCpexSerialize) || next != nil || bg != nil {
		t.Fatalf("typed invoke = %v, %v, %v; want ErrCpexSerialize", next, bg, err)
	}
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already consumed", err)
	}
}
