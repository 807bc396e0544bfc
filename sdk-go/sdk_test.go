package cpex

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestTypedInvokeDecodesPayloadAndExtensions(t *testing.T) {
	m := started(t, config(t, "",
		plugin("writer", "ExtensionWriter", pre, "config: {tag: w}"),
		plugin("tracer", "Trace", pre, "priority: 200", "config: {tag: t}")))
	ext := &Extensions{Custom: map[string]any{"seed": int64(1)}, Meta: &MetaExtension{EntityType: "tool", EntityName: "x"}}
	res, ctx, bg, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"}, ext, nil)
	if err != nil || ctx != nil || bg != nil {
		t.Fatalf("ctx=%v bg=%v err=%v", ctx, bg, err)
	}
	if res.ModifiedPayload == nil || res.ModifiedPayload.ToolName != "x" || !reflect.DeepEqual(res.ModifiedPayload.Trace, []string{"t"}) {
		t.Fatalf("typed payload = %+v", res.ModifiedPayload)
	}
	got := res.ModifiedExtensions
	if got == nil || got.Custom["w"] != true || got.Custom["seed"] != int64(1) || got.Meta.EntityName != "x" {
		t.Fatalf("typed extensions = %+v", got)
	}
	unchanged, _, _, err := Invoke(started(t, config(t, "", plugin("a", "Allow", pre))), "tool_pre_invoke", PayloadGeneric, toolCall{}, nil, nil)
	if err != nil || unchanged.ModifiedPayload != nil || unchanged.ModifiedExtensions != nil {
		t.Fatalf("unchanged = %+v, %v", unchanged, err)
	}
}

func TestInvokeContextHonoursTheDeadline(t *testing.T) {
	m := started(t, config(t, "",
		plugin("slow", "AsyncSleeper", pre, "config: {seconds: 3}"),
		plugin("quick", "Allow", "[tool_post_invoke]")))
	goctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, _, err := m.InvokeByNameContext(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("returned after %v", waited)
	}
	if _, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, nil); err != nil {
		t.Fatalf("the manager is unusable after a cancelled invoke: %v", err)
	}
}

func TestWaitingForASlotIsCancellable(t *testing.T) {
	m, err := NewPluginManager(config(t, "", plugin("slow", "AsyncSleeper", pre, "config: {seconds: 1}")), WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	busy := make(chan error, 1)
	go func() {
		_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		busy <- err
	}()
	time.Sleep(100 * time.Millisecond)
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, _, err = m.InvokeByNameContext(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "in-flight bound") {
		t.Fatalf("err = %v", err)
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
}

func TestWaitContext(t *testing.T) {
	m := started(t, config(t, "", plugin("rec", "Recorder", pre, "mode: fire_and_forget", "config: {seconds: 0.5}")))
	_, _, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{ID: 1}, nil, nil)
	if err != nil || bg == nil {
		t.Fatalf("bg=%v err=%v", bg, err)
	}
	goctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := bg.WaitContext(goctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitContext = %v", err)
	}
	if errs, err := bg.Wait(); err != nil || len(errs) != 0 {
		t.Fatalf("Wait = %v, %v", errs, err)
	}
}

func TestEveryCallFailsCleanlyAfterShutdown(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", pre), plugin("rec", "SyncRecorder", pre, "mode: fire_and_forget")))
	_, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil || bg == nil {
		t.Fatalf("ctx=%v bg=%v err=%v", ctx, bg, err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"RegisterFactory": func() error { return m.RegisterFactory("k", "a:B") },
		"LoadConfig":      func() error { return m.LoadConfig("plugins: []") },
		"Initialize":      m.Initialize,
		"HasHooksFor":     func() error { _, err := m.HasHooksFor("x"); return err },
		"PluginCount":     func() error { _, err := m.PluginCount(); return err },
		"PluginNames":     func() error { _, err := m.PluginNames(); return err },
		"IsInitialized":   func() error { _, err := m.IsInitialized(); return err },
		"InvokeByName": func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			return err
		},
		"Invoke": func() error {
			_, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			return err
		},
		"InvokeByName with the context": func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
			return err
		},
		"Wait": func() error { _, err := bg.Wait(); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrCpexInvalidHandle) {
			t.Errorf("%s after Shutdown: %v", name, err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := ctx.Close(); err != nil {
			t.Errorf("ContextTable.Close #%d after Shutdown: %v", i+1, err)
		}
		if err := bg.Close(); err != nil {
			t.Errorf("BackgroundTasks.Close #%d after Shutdown: %v", i+1, err)
		}
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown again: %v", err)
		}
	}
}

func TestLoadConfigFile(t *testing.T) {
	m, err := NewPluginManagerDefault()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	path := filepath.Join(t.TempDir(), "cpex.yaml")
	if err := os.WriteFile(path, []byte(config(t, "", plugin("a", "Allow", pre))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.LoadConfigFile(path); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.PluginCount(); n != 1 {
		t.Fatalf("PluginCount = %d", n)
	}
	if err := m.LoadConfigFile(path + ".missing"); !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(strings.ToLower(err.Error()), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestDroppedManagerIsReleased(t *testing.T) {
	m, err := NewPluginManager(config(t, "", plugin("a", "Allow", pre)))
	if err != nil {
		t.Fatal(err)
	}
	h := m.state.handle.Load().p
	m = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if _, err := callIsInitialized(h); errors.Is(err, ErrCpexInvalidHandle) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a dropped manager was never shut down")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An invoke's context table and background tasks share one cleanup (handlePair): when
// both are dropped, both handles are released; when one is kept, neither is released
// before it goes, and the kept one stays usable.
func TestDroppedContextAndBackgroundAreReleased(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", pre), plugin("rec", "SyncRecorder", pre, "mode: fire_and_forget")))
	before, err := LiveHandles()
	if err != nil {
		t.Fatal(err)
	}
	var kept *ContextTable
	for i := 0; i < 50; i++ {
		_, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		if err != nil || ctx == nil || bg == nil {
			t.Fatalf("ctx=%v bg=%v err=%v", ctx, bg, err)
		}
		if i == 0 {
			kept = ctx
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n, err := LiveHandles()
		if err != nil {
			t.Fatal(err)
		}
		if n == before+2 { // the kept table and its pair's background handle
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live handles: %d, want %d", n, before+2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, kept); err != nil {
		t.Fatalf("the kept table: %v", err)
	}
	kept = nil
	for {
		runtime.GC()
		if n, _ := LiveHandles(); n == before {
			return
		}
		if time.Now().After(deadline) {
			n, _ := LiveHandles()
			t.Fatalf("live handles: %d, want %d", n, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
