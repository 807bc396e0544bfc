package cpex

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func pluginDir(t testing.TB) string {
	dir, err := filepath.Abs("../tests/plugins")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// config builds a YAML config over the shared test plugins (tests/plugins).
func config(t testing.TB, settings string, plugins ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plugin_settings:\n  plugin_dirs: [%q]\n%s", pluginDir(t), settings)
	b.WriteString("plugins:\n")
	for _, p := range plugins {
		b.WriteString(p)
	}
	return b.String()
}

func plugin(name, class, hooks string, extra ...string) string {
	s := fmt.Sprintf("  - name: %s\n    kind: cpex_test_plugins:%s\n    hooks: %s\n", name, class, hooks)
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

func started(t testing.TB, yaml string) *PluginManager {
	t.Helper()
	m, err := NewPluginManager(yaml)
	if err != nil {
		t.Fatalf("NewPluginManager: %v", err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

const pre = "[tool_pre_invoke]"

func TestLifecycleAndQueries(t *testing.T) {
	m, err := NewPluginManagerDefault()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m.PluginCount(); err != nil || n != 0 {
		t.Fatalf("PluginCount on an empty manager = %d, %v", n, err)
	}
	yaml := config(t, "", plugin("b", "DenyWhenBlocked", pre), plugin("a", "Allow", "[tool_pre_invoke, tool_post_invoke]"))
	if err := m.LoadConfig(yaml); err != nil {
		t.Fatal(err)
	}
	names, err := m.PluginNames()
	if err != nil || strings.Join(names, ",") != "b,a" {
		t.Fatalf("PluginNames = %v, %v", names, err)
	}
	if n, _ := m.PluginCount(); n != 2 {
		t.Fatalf("PluginCount = %d", n)
	}
	if has, _ := m.HasHooksFor("tool_post_invoke"); !has {
		t.Fatal("HasHooksFor(tool_post_invoke) = false")
	}
	if has, _ := m.HasHooksFor("prompt_pre_fetch"); has {
		t.Fatal("HasHooksFor(prompt_pre_fetch) = true")
	}
	if ok, _ := m.IsInitialized(); ok {
		t.Fatal("initialized before Initialize")
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.IsInitialized(); !ok {
		t.Fatal("not initialized after Initialize")
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := m.PluginCount(); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("PluginCount after Shutdown: %v", err)
	}
	if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("InvokeByName after Shutdown: %v", err)
	}
}

type toolCall struct {
	ToolName string   `msgpack:"tool_name"`
	Block    bool     `msgpack:"block"`
	Trace    []string `msgpack:"trace,omitempty"`
}

func TestAllowDenyAndModifiedPayload(t *testing.T) {
	m := started(t, config(t, "",
		plugin("guard", "DenyWhenBlocked", pre, "priority: 1"),
		plugin("tracer", "Trace", pre, "priority: 2", "config: {tag: t1}")))

	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.IsDenied() || ctx != nil || bg != nil {
		t.Fatalf("allowed call: denied=%v ctx=%v bg=%v", res.IsDenied(), ctx, bg)
	}
	out, err := DeserializePayload[toolCall](res.ModifiedPayload)
	if out == nil || err != nil {
		t.Fatalf("DeserializePayload = %v, %v", out, err)
	}
	if out.ToolName != "x" || strings.Join(out.Trace, ",") != "t1" {
		t.Fatalf("modified payload = %+v", out)
	}

	res, _, _, err = m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x", Block: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsDenied() || res.Violation == nil {
		t.Fatalf("blocked call not denied: %+v", res)
	}
	v := res.Violation
	if v.PluginName != "guard" || v.Code != "blocked" || v.Details["tool"] != "x" {
		t.Fatalf("violation = %+v", v)
	}
	if res.ModifiedPayload != nil {
		t.Fatal("a denied call carries a modified payload")
	}
}

func TestErrorsMatchTheirClassAndCarryTheMessage(t *testing.T) {
	cases := []struct {
		name     string
		run      func() error
		sentinel error
		message  string
	}{
		{"yaml syntax", func() error { _, err := NewPluginManager("plugins: ["); return err }, ErrCpexParse, "YAML syntax error at line"},
		{"bad enum", func() error {
			_, err := NewPluginManager("plugins: [{name: a, kind: 'x:Y', mode: sideways}]")
			return err
		}, ErrCpexConfig, "plugins[0].mode"},
		{"duplicate names", func() error {
			_, err := NewPluginManager(config(t, "", plugin("a", "Allow", pre), plugin("a", "Allow", pre)))
			return err
		}, ErrCpexConfig, "duplicate plugin name 'a'"},
		{"unknown kind", func() error {
			_, err := NewPluginManager("plugins: [{name: a, kind: 'no_such_module_q:A'}]")
			return err
		}, ErrCpexConfig, "cannot import module 'no_such_module_q'"},
		{"plugin raises", func() error {
			m := started(t, config(t, "", plugin("bad", "Raises", pre)))
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			return err
		}, ErrCpexPipeline, "'bad' raised RuntimeError: kaboom"},
		{"plugin times out", func() error {
			m := started(t, config(t, "  plugin_timeout: 0.2\n", plugin("slow", "AsyncSleeper", pre, "config: {seconds: 5}")))
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			return err
		}, ErrCpexTimeout, "'slow' timed out"},
		{"unknown payload type", func() error {
			m := started(t, config(t, "", plugin("a", "Allow", pre)))
			_, _, _, err := m.InvokeByName("tool_pre_invoke", 77, map[string]any{}, nil, nil)
			return err
		}, ErrCpexInvalidInput, "unknown payload type 77"},
		{"payload not a map", func() error {
			m := started(t, config(t, "", plugin("a", "Allow", pre)))
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, []int{1}, nil, nil)
			return err
		}, ErrCpexInvalidInput, "must be a map"},
		{"initialize fails", func() error {
			m, err := NewPluginManager(config(t, "", plugin("b", "BrokenInit", pre)))
			if err != nil {
				return err
			}
			defer m.Shutdown()
			return m.Initialize()
		}, ErrCpexPipeline, "'b': initialize raised ValueError: no database"},
	}
	all := []error{ErrCpexInvalidHandle, ErrCpexInvalidInput, ErrCpexParse, ErrCpexPipeline, ErrCpexSerialize,
		ErrCpexTimeout, ErrCpexPanic, ErrCpexConfig, ErrCpexRuntimeInit, ErrCpexABIMismatch}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("got %v, want %v", err, tc.sentinel)
			}
			for _, other := range all {
				if other != tc.sentinel && errors.Is(err, other) {
					t.Fatalf("%v also matches %v", err, other)
				}
			}
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(e.Message, tc.message) {
				t.Fatalf("message %q does not contain %q", err, tc.message)
			}
		})
	}
}

func TestForgedHandlesAreRefused(t *testing.T) {
	for _, v := range []uintptr{0x7fff_dead_0000, 0x4350_0100_0000_9999, 0x4350_0200_0000_0001} {
		m := forgeManager(v)
		err := m.Initialize()
		if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "manager") {
			t.Fatalf("forged handle %#x: %v", v, err)
		}
		m.state.handle.Store(nil) // not ours to shut down
	}
}

func TestContextThreadsStateAndIsConsumed(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]")))
	_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil {
		t.Fatalf("pre: ctx=%v err=%v", ctx, err)
	}
	res, next, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if calls, _ := res.Metadata["calls"].(int64); calls != 2 {
		t.Fatalf("metadata = %#v, want calls=2", res.Metadata)
	}
	if _, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("reusing a consumed context: %v", err)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	if err := next.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestShutdownInvalidatesContextTables(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", pre)))
	_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil {
		t.Fatalf("ctx=%v err=%v", ctx, err)
	}
	h := ctx.take()
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := rawFreeContext(h); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("freeing a context of a shut-down manager: %v", err)
	}
}

// Each goroutine's error must carry the message of its own call, although goroutines
// move between OS threads: the payload type in the message identifies the call.
func TestManyGoroutinesInvokeAtOnce(t *testing.T) {
	m := started(t, config(t, "",
		plugin("guard", "DenyWhenBlocked", pre),
		plugin("tracer", "Trace", pre, "priority: 200", "config: {tag: t}")))
	const goroutines, calls = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				name := fmt.Sprintf("tool-%d-%d", g, i)
				switch i % 3 {
				case 0:
					res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: name, Block: true}, nil, nil)
					if err != nil || !res.IsDenied() || res.Violation.Details["tool"] != name {
						errs <- fmt.Errorf("%s: blocked call: %v %+v", name, err, res)
					}
				case 1:
					res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: name}, nil, nil)
					out := &toolCall{}
					if err == nil {
						out, err = DeserializePayload[toolCall](res.ModifiedPayload)
					}
					if err != nil || out == nil || res.IsDenied() || out.ToolName != name || len(out.Trace) != 1 {
						errs <- fmt.Errorf("%s: allowed call: %v %+v", name, err, out)
					}
				case 2:
					pt := uint8(2 + (g*calls+i)%250)
					_, _, _, err := m.InvokeByName("tool_pre_invoke", pt, toolCall{ToolName: name}, nil, nil)
					if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), fmt.Sprintf("unknown payload type %d;", pt)) {
						errs <- fmt.Errorf("%s: payload type %d: %v", name, pt, err)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestShutdownRacingInvokes(t *testing.T) {
	m := started(t, config(t, "", plugin("a", "Allow", pre)))
	var wg sync.WaitGroup
	errs := make(chan error, 16*100)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"i": i}, nil, nil)
				if err != nil && !errors.Is(err, ErrCpexInvalidHandle) {
					errs <- err
				}
			}
		}()
	}
	if err := m.Shutdown(); err != nil {
		t.Error(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("invoke racing Shutdown: %v", err)
	}
}

func TestInFlightBound(t *testing.T) {
	m, err := NewPluginManager(config(t, "", plugin("a", "Allow", pre)), WithMaxInFlight(2))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if cap(m.sem) != 2 {
		t.Fatalf("in-flight bound = %d", cap(m.sem))
	}
}

func TestABIVersionCheck(t *testing.T) {
	major, minor, info := LibraryVersion()
	if err := checkVersion(major<<16|minor, info); err != nil {
		t.Fatalf("the built library is refused: %v", err)
	}
	for _, v := range []uint32{(ABIVersionMajor + 1) << 16, (ABIVersionMajor-1)<<16 | 0xFFFF} {
		err := checkVersion(v, info)
		want := fmt.Sprintf("libcpex has ABI %d.%d; this Go SDK needs %d.x", v>>16, v&0xFFFF, ABIVersionMajor)
		if !errors.Is(err, ErrCpexABIMismatch) || !strings.Contains(err.Error(), want) {
			t.Fatalf("version %#x: %v", v, err)
		}
	}
	if ours := uint32(ABIVersionMinor); ours > 0 {
		if err := checkVersion(ABIVersionMajor<<16|(ours-1), info); !errors.Is(err, ErrCpexABIMismatch) {
			t.Fatalf("an older minor is accepted: %v", err)
		}
	}
}
