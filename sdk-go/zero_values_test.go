package cpex

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// A nil or zero-value PluginManager, ContextTable or BackgroundTasks fails every
// method with ErrCpexInvalidHandle naming the method, or, for Close / Shutdown and
// Wait on a nil *BackgroundTasks, does nothing: never a panic, never a hang.

// zeroCallTimeout bounds each call, so that a hang fails the test instead of CI.
const zeroCallTimeout = 5 * time.Second

// bounded runs call on its own goroutine and reports its error, a panic as a test
// failure, and a call still running after zeroCallTimeout as a test failure.
func bounded(t *testing.T, call func() error) error {
	t.Helper()
	type outcome struct {
		err   error
		panic any
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{panic: p}
			}
		}()
		done <- outcome{err: call()}
	}()
	select {
	case o := <-done:
		if o.panic != nil {
			t.Fatalf("panicked: %v", o.panic)
		}
		return o.err
	case <-time.After(zeroCallTimeout):
		t.Fatalf("still running after %v (a hang)", zeroCallTimeout)
		return nil
	}
}

// wantInvalid checks that err is an ErrCpexInvalidHandle whose message starts with
// the method's name and says what is wrong with the value.
func wantInvalid(t *testing.T, err error, method, what string) {
	t.Helper()
	var e *Error
	if !errors.Is(err, ErrCpexInvalidHandle) || !errors.As(err, &e) {
		t.Fatalf("got %v; want an *Error matching ErrCpexInvalidHandle", err)
	}
	if !strings.HasPrefix(e.Message, method+": ") || !strings.Contains(e.Message, what) {
		t.Fatalf("message %q: want it to start with %q and contain %q", e.Message, method+": ", what)
	}
}

// exportedMethods lists the exported methods of v's type, sorted.
func exportedMethods(v any) []string {
	typ := reflect.TypeOf(v)
	names := make([]string, 0, typ.NumMethod())
	for i := 0; i < typ.NumMethod(); i++ {
		names = append(names, typ.Method(i).Name)
	}
	sort.Strings(names)
	return names
}

// checkCoverage fails the test when the exported methods of v's type differ from the
// methods the table covers: a new method needs its zero-value case.
func checkCoverage[C any](t *testing.T, v any, cases map[string]C) {
	t.Helper()
	covered := make([]string, 0, len(cases))
	for name := range cases {
		covered = append(covered, name)
	}
	sort.Strings(covered)
	if have := exportedMethods(v); !reflect.DeepEqual(have, covered) {
		t.Fatalf("%T has the exported methods %v; the zero-value table covers %v", v, have, covered)
	}
}

// managerCall calls one method of m and returns its error, checking that a failed
// call returns zero values besides.
type managerCall func(m *PluginManager) error

var managerCalls = map[string]managerCall{
	"RegisterFactory":  func(m *PluginManager) error { return m.RegisterFactory("k", "a:B") },
	"LoadConfig":       func(m *PluginManager) error { return m.LoadConfig("plugins: []") },
	"LoadConfigFile":   func(m *PluginManager) error { return m.LoadConfigFile("/no/such/cpex.yaml") },
	"ReloadConfig":     func(m *PluginManager) error { return m.ReloadConfig("plugins: []") },
	"ReloadConfigFile": func(m *PluginManager) error { return m.ReloadConfigFile("/no/such/cpex.yaml") },
	"Initialize":       func(m *PluginManager) error { return m.Initialize() },
	"Shutdown":         func(m *PluginManager) error { return m.Shutdown() },
	"SetDecisionSink":  func(m *PluginManager) error { return m.SetDecisionSink(func(DecisionRecord) {}) },
	"HasHooksFor": func(m *PluginManager) error {
		has, err := m.HasHooksFor("tool_pre_invoke")
		if has {
			return fmt.Errorf("HasHooksFor = true")
		}
		return err
	},
	"PluginCount": func(m *PluginManager) error {
		n, err := m.PluginCount()
		if n != 0 {
			return fmt.Errorf("PluginCount = %d", n)
		}
		return err
	},
	"PluginNames": func(m *PluginManager) error {
		names, err := m.PluginNames()
		if names != nil {
			return fmt.Errorf("PluginNames = %v", names)
		}
		return err
	},
	"PluginStats": func(m *PluginManager) error {
		stats, err := m.PluginStats()
		if stats != nil {
			return fmt.Errorf("PluginStats = %v", stats)
		}
		return err
	},
	"EngineWorkers": func(m *PluginManager) error {
		n, err := m.EngineWorkers()
		if n != 0 {
			return fmt.Errorf("EngineWorkers = %d", n)
		}
		return err
	},
	"IsInitialized": func(m *PluginManager) error {
		ok, err := m.IsInitialized()
		if ok {
			return fmt.Errorf("IsInitialized = true")
		}
		return err
	},
	"InvokeByName": func(m *PluginManager) error {
		res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("InvokeByName returned %v %v %v", res, ctx, bg)
		}
		return err
	},
	"InvokeByNameContext": func(m *PluginManager) error {
		res, ctx, bg, err := m.InvokeByNameContext(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("InvokeByNameContext returned %v %v %v", res, ctx, bg)
		}
		return err
	},
	"InvokeByNameWith": func(m *PluginManager) error {
		res, ctx, bg, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{},
			InvokeOptions{Request: &GlobalContext{RequestID: "r"}})
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("InvokeByNameWith returned %v %v %v", res, ctx, bg)
		}
		return err
	},
}

// The generic helpers of typed.go take the manager as an argument.
var managerFuncs = map[string]managerCall{
	"Invoke": func(m *PluginManager) error {
		res, ctx, bg, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"}, nil, nil)
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("Invoke returned %v %v %v", res, ctx, bg)
		}
		return err
	},
	"InvokeContext": func(m *PluginManager) error {
		goctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, ctx, bg, err := InvokeContext(goctx, m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"}, &Extensions{}, nil)
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("InvokeContext returned %v %v %v", res, ctx, bg)
		}
		return err
	},
	"InvokeWith": func(m *PluginManager) error {
		res, ctx, bg, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"},
			InvokeOptions{Extensions: &Extensions{}, Request: &GlobalContext{RequestID: "r"}})
		if res != nil || ctx != nil || bg != nil {
			return fmt.Errorf("InvokeWith returned %v %v %v", res, ctx, bg)
		}
		return err
	},
}

func TestZeroPluginManager(t *testing.T) {
	checkCoverage(t, (*PluginManager)(nil), managerCalls)
	managers := []struct {
		name string
		m    func() *PluginManager
		what string
	}{
		{"nil", func() *PluginManager { return nil }, "the *PluginManager is nil"},
		{"zero", func() *PluginManager { return &PluginManager{} }, "zero value, not created by NewPluginManager"},
		{"zero copy", func() *PluginManager { var m PluginManager; return &m }, "zero value, not created by NewPluginManager"},
	}
	all := map[string]managerCall{}
	for name, call := range managerCalls {
		all[name] = call
	}
	for name, call := range managerFuncs {
		all[name] = call
	}
	for _, mk := range managers {
		for name, call := range all {
			t.Run(mk.name+"/"+name, func(t *testing.T) {
				err := bounded(t, func() error { return call(mk.m()) })
				if name == "Shutdown" { // documented: nothing to shut down
					if err != nil {
						t.Fatalf("Shutdown = %v; want nil", err)
					}
					return
				}
				wantInvalid(t, err, name, mk.what)
			})
		}
	}
}

// A zero manager stays refused after a Shutdown (which did nothing), and a zero
// manager's calls do not take a context table passed to them.
func TestZeroPluginManagerKeepsTheContextTable(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]")))
	_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil {
		t.Fatalf("pre: ctx=%v err=%v", ctx, err)
	}
	var zero PluginManager
	_ = zero.Shutdown()
	err = bounded(t, func() error {
		_, _, _, err := zero.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
		return err
	})
	wantInvalid(t, err, "InvokeByName", "zero value")
	res, next, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if err != nil || res.Metadata["calls"] != int64(2) {
		t.Fatalf("the context table after a zero manager's invoke: %v %+v", err, res)
	}
	_ = next.Close()
}

func TestZeroContextTable(t *testing.T) {
	calls := map[string]func(c *ContextTable) error{
		"Close": func(c *ContextTable) error { return c.Close() },
	}
	checkCoverage(t, (*ContextTable)(nil), calls)
	for _, c := range []struct {
		name string
		c    func() *ContextTable
	}{
		{"nil", func() *ContextTable { return nil }},
		{"zero", func() *ContextTable { return &ContextTable{} }},
	} {
		for name, call := range calls {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				tbl := c.c()
				for i := 0; i < 2; i++ { // Close is a no-op, twice too
					if err := bounded(t, func() error { return call(tbl) }); err != nil {
						t.Fatalf("%s #%d = %v; want nil", name, i+1, err)
					}
				}
			})
		}
	}
}

// A zero ContextTable passed to an invoke is refused; the manager goes on.
func TestZeroContextTableIsRefusedByInvoke(t *testing.T) {
	m := started(t, config(t, "", plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]")))
	invokes := map[string]func(c *ContextTable) error{
		"InvokeByName": func(c *ContextTable) error {
			_, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, c)
			return err
		},
		"InvokeByNameContext": func(c *ContextTable) error {
			_, _, _, err := m.InvokeByNameContext(context.Background(), "tool_post_invoke", PayloadGeneric, map[string]any{}, nil, c)
			return err
		},
		"Invoke": func(c *ContextTable) error {
			_, _, _, err := Invoke(m, "tool_post_invoke", PayloadGeneric, map[string]any{}, nil, c)
			return err
		},
		"InvokeContext": func(c *ContextTable) error {
			_, _, _, err := InvokeContext(context.Background(), m, "tool_post_invoke", PayloadGeneric, map[string]any{}, nil, c)
			return err
		},
		"InvokeByNameWith": func(c *ContextTable) error {
			_, _, _, err := m.InvokeByNameWith(context.Background(), "tool_post_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{Context: c})
			return err
		},
		"InvokeWith": func(c *ContextTable) error {
			_, _, _, err := InvokeWith(context.Background(), m, "tool_post_invoke", PayloadGeneric, map[string]any{},
				InvokeOptions{Request: &GlobalContext{RequestID: "r"}, Context: c})
			return err
		},
	}
	for name, call := range invokes {
		t.Run(name, func(t *testing.T) {
			err := bounded(t, func() error { return call(&ContextTable{}) })
			wantInvalid(t, err, name, "the *ContextTable is a zero value")
			if _, _, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, nil); err != nil {
				t.Fatalf("the manager stopped working: %v", err)
			}
		})
	}
}

func TestZeroBackgroundTasks(t *testing.T) {
	calls := map[string]func(b *BackgroundTasks) error{
		"Wait": func(b *BackgroundTasks) error {
			errs, err := b.Wait()
			if errs != nil {
				return fmt.Errorf("Wait returned errors %v", errs)
			}
			return err
		},
		"WaitContext": func(b *BackgroundTasks) error {
			goctx, cancel := context.WithCancel(context.Background())
			cancel() // a nil *BackgroundTasks does not even look at goctx
			errs, err := b.WaitContext(goctx)
			if errs != nil {
				return fmt.Errorf("WaitContext returned errors %v", errs)
			}
			return err
		},
		"Close": func(b *BackgroundTasks) error { return b.Close() },
	}
	checkCoverage(t, (*BackgroundTasks)(nil), calls)
	for name, call := range calls {
		t.Run("nil/"+name, func(t *testing.T) {
			// Documented: an invoke that started no task returns a nil
			// *BackgroundTasks, and `defer bg.Wait()` / `bg.Close()` must just work.
			if err := bounded(t, func() error { return call(nil) }); err != nil {
				t.Fatalf("%s on a nil *BackgroundTasks = %v; want nil", name, err)
			}
		})
		t.Run("zero/"+name, func(t *testing.T) {
			err := bounded(t, func() error { return call(&BackgroundTasks{}) })
			if name == "Close" {
				if err != nil {
					t.Fatalf("Close = %v; want nil", err)
				}
				return
			}
			wantInvalid(t, err, name, "the *BackgroundTasks is a zero value")
		})
	}
}
