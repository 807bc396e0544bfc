package cpex

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The engine's rules, seen from a Go host through the ABI.

type traced struct {
	Trace []string `msgpack:"trace"`
	ID    int      `msgpack:"id,omitempty"`
	Fail  bool     `msgpack:"fail,omitempty"`
	Block bool     `msgpack:"block,omitempty"`
}

func invokeTrace(t *testing.T, m *PluginManager, ext any) ([]string, *PipelineResult) {
	t.Helper()
	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{Trace: []string{}}, ext, nil)
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	_ = ctx.Close()
	_ = bg.Close()
	var out traced
	if decoded, err := DeserializePayload[traced](res.ModifiedPayload); err != nil {
		t.Fatal(err)
	} else if decoded != nil {
		out = *decoded
	}
	if out.Trace == nil {
		out.Trace = []string{}
	}
	return out.Trace, res
}

func TestPriorityAndPhaseOrder(t *testing.T) {
	m := started(t, config(t, "",
		plugin("late", "Trace", pre, "priority: 30", "config: {tag: late}"),
		plugin("tx", "Trace", pre, "mode: transform", "priority: 1", "config: {tag: transform}"),
		plugin("early", "Trace", pre, "priority: 10", "config: {tag: early}"),
		plugin("dis", "Trace", pre, "mode: disabled", "config: {tag: disabled}")))
	got, _ := invokeTrace(t, m, nil)
	if want := []string{"early", "late", "transform"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func TestPhaseAuthority(t *testing.T) {
	m := started(t, config(t, "",
		plugin("tx-deny", "DenyWhenBlocked", pre, "mode: transform", "on_error: ignore"),
		plugin("audit-modify", "Trace", pre, "mode: audit", "on_error: ignore", "config: {tag: audit}"),
		plugin("conc-modify", "Trace", pre, "mode: concurrent", "on_error: ignore", "config: {tag: conc}")))
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{Trace: []string{}, Block: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.IsDenied() || res.ModifiedPayload != nil {
		t.Fatalf("a refused deny / modification got through: %+v", res)
	}
	var who []string
	for _, e := range res.Errors {
		if !strings.Contains(e.Message, "may not") {
			t.Errorf("error of %s does not explain the refusal: %s", e.PluginName, e.Message)
		}
		who = append(who, e.PluginName)
	}
	if want := []string{"tx-deny", "audit-modify", "conc-modify"}; !reflect.DeepEqual(who, want) {
		t.Fatalf("errors from %v, want %v", who, want)
	}
}

func TestOnErrorModes(t *testing.T) {
	m := started(t, config(t, "",
		plugin("ign", "Raises", pre, "on_error: ignore"),
		plugin("dis", "Raises", pre, "on_error: disable")))
	for i, want := range [][]string{{"ign", "dis"}, {"ign"}, {"ign"}} {
		res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range res.Errors {
			got = append(got, e.PluginName)
			if e.Code != "plugin_error" || !strings.Contains(e.Message, "kaboom") {
				t.Errorf("error record %+v", e)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("call %d: errors from %v, want %v", i, got, want)
		}
	}
	fail := started(t, config(t, "", plugin("bad", "Garbage", pre)))
	_, _, _, err := fail.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if !errors.Is(err, ErrCpexPipeline) || !strings.Contains(err.Error(), "plugin 'bad' returned int") {
		t.Fatalf("on_error fail: %v", err)
	}
}

func TestTimeoutsOfSyncAndAsyncPlugins(t *testing.T) {
	for _, class := range []string{"Spinner", "AsyncSleeper"} {
		t.Run(class, func(t *testing.T) {
			m := started(t, config(t, "", plugin("slow", class, pre, "timeout: 0.2", "on_error: ignore", "config: {seconds: 10}"),
				plugin("next", "Trace", pre, "priority: 200", "config: {tag: next}")))
			got, res := invokeTrace(t, m, nil)
			if len(res.Errors) != 1 || res.Errors[0].PluginName != "slow" || res.Errors[0].Code != "plugin_timeout" {
				t.Fatalf("errors = %+v", res.Errors)
			}
			if !reflect.DeepEqual(got, []string{"next"}) {
				t.Fatalf("the pipeline did not go on: %v", got)
			}
			failing := started(t, config(t, "", plugin("slow", class, pre, "timeout: 0.2", "config: {seconds: 10}")))
			_, _, _, err := failing.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			if !errors.Is(err, ErrCpexTimeout) || !strings.Contains(err.Error(), "'slow' timed out after 0.2s") {
				t.Fatalf("on_error fail: %v", err)
			}
		})
	}
}

func TestFireAndForgetThroughBackgroundTasks(t *testing.T) {
	m := started(t, config(t, "", plugin("rec", "Recorder", pre, "mode: fire_and_forget", "on_error: ignore", "config: {seconds: 0.01}")))
	_, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{ID: 1, Fail: true}, nil, nil)
	if err != nil || ctx != nil || bg == nil {
		t.Fatalf("ctx=%v bg=%v err=%v", ctx, bg, err)
	}
	errs, err := bg.Wait()
	if err != nil || len(errs) != 1 || errs[0].PluginName != "rec" || !strings.Contains(errs[0].Message, "recorder told to fail") {
		t.Fatalf("Wait = %+v, %v", errs, err)
	}
	if err := bg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bg.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := bg.Wait(); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("Wait after Close: %v", err)
	}
	_, _, later, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{ID: 2}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := later.Wait(); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("Wait after Shutdown: %v", err)
	}
}

func TestRoutesAndTagGroups(t *testing.T) {
	yaml := fmt.Sprintf(`
plugin_settings: {routing_enabled: true, plugin_dirs: [%q]}
global:
  policies:
    all: {plugins: [identity]}
    pii: {plugins: [pii-guard]}
plugins:
  - {name: identity, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 10, config: {tag: identity}}
  - {name: pii-guard, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 20, config: {tag: pii}}
  - {name: audit, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 100, config: {tag: audit}}
routes:
  - {tool: get_compensation, meta: {tags: [pii, hr]}, plugins: [audit]}
  - {tool: "*", plugins: [audit]}
`, pluginDir(t))
	m := started(t, yaml)
	ext := func(tool string) map[string]any {
		return map[string]any{"meta": map[string]any{"entity_type": "tool", "entity_name": tool}}
	}
	for _, tc := range []struct {
		ext  any
		want []string
	}{
		{ext("get_compensation"), []string{"identity", "pii", "audit"}},
		{ext("list_departments"), []string{"identity", "audit"}},
		{nil, []string{"identity", "pii", "audit"}}, // no entity: every plugin of the hook
	} {
		if got, _ := invokeTrace(t, m, tc.ext); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("extensions %v: ran %v, want %v", tc.ext, got, tc.want)
		}
	}
}

func TestRegisterFactory(t *testing.T) {
	m, err := NewPluginManagerDefault()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.RegisterFactory("tracer", "cpex_test_plugins:Trace"); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterFactory("tracer", "cpex_test_plugins:Allow"); !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("duplicate kind: %v", err)
	}
	if err := m.RegisterFactory("x", "not-a-path"); !errors.Is(err, ErrCpexInvalidInput) {
		t.Fatalf("bad target: %v", err)
	}
	if err := m.LoadConfig(config(t, "", plugin("t", "X", pre, "config: {tag: registered}"))); !errors.Is(err, ErrCpexConfig) {
		t.Fatalf("a bad kind loads: %v", err)
	}
	yaml := fmt.Sprintf("plugin_settings: {plugin_dirs: [%q]}\nplugins: [{name: t, kind: tracer, hooks: [tool_pre_invoke], config: {tag: registered}}]\n", pluginDir(t))
	if err := m.LoadConfig(yaml); err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	if got, _ := invokeTrace(t, m, nil); !reflect.DeepEqual(got, []string{"registered"}) {
		t.Fatalf("ran %v", got)
	}
}

func TestBadConfigsNameTheField(t *testing.T) {
	for yaml, want := range map[string]string{
		"plugins: [{name: a, kind: 'x:Y', mode: sideways}]":         "plugins[0].mode: expected one of",
		"routes: [{tool: a, prompt: b}]":                            "routes[0]: a route names exactly one of",
		"global: {policies: {all: {plugins: [ghost]}}}":             "global.policies.all.plugins[0]: no plugin named 'ghost'",
		"plugin_settings: {plugin_timeout: 0}":                      "plugin_settings.plugin_timeout",
		"plugins: [{name: a, kind: 'x:Y', colour: blue}]":           "plugins[0].colour: unknown field",
		"plugins: [{name: a, kind: 'x:Y', priority: high}]":         "plugins[0].priority",
		"plugins: [{name: a, kind: 'x:Y', hooks: [''], }]":          "plugins[0].hooks",
		"plugins: [{name: a, kind: 'x:Y'}, {name: a, kind: 'x:Y'}]": "plugins[1].name: duplicate plugin name 'a'",
	} {
		_, err := NewPluginManager(yaml)
		if !errors.Is(err, ErrCpexConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a config error containing %q", yaml, err, want)
		}
	}
}
