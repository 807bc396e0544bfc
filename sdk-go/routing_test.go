package cpex

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Route patterns and calls without an entity, seen from a Go host.

func TestRoutePatternsAndCallsWithoutAnEntity(t *testing.T) {
	yaml := fmt.Sprintf(`
plugin_settings: {routing_enabled: true, plugin_dirs: [%q]}
global:
  policies:
    all: {plugins: [identity]}
    pii: {plugins: [pii-guard]}
plugins:
  - {name: identity, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 10, config: {tag: identity}}
  - {name: pii-guard, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 20, config: {tag: pii}}
  - {name: getters, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 30, config: {tag: getters}}
routes:
  - {tool: "get_*", plugins: [getters]}
`, pluginDir(t))
	m := started(t, yaml)
	run := func(ext *Extensions) []string {
		t.Helper()
		res, ctx, bg, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, traced{Trace: []string{}}, ext, nil)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		_ = ctx.Close()
		_ = bg.Close()
		if res.ModifiedPayload == nil {
			return []string{}
		}
		return res.ModifiedPayload.Trace
	}
	tool := func(name string) *Extensions {
		return &Extensions{Meta: &MetaExtension{EntityType: "tool", EntityName: name}}
	}
	for _, tc := range []struct {
		what string
		ext  *Extensions
		want []string
	}{
		{"get_user matches get_*", tool("get_user"), []string{"identity", "getters"}},
		{"get_ matches get_* (* matches nothing too)", tool("get_"), []string{"identity", "getters"}},
		{"list_users matches no route", tool("list_users"), []string{"identity"}},
		{"no meta: every plugin", nil, []string{"identity", "pii", "getters"}},
		{"meta without an entity: every plugin", &Extensions{Meta: &MetaExtension{Tags: []string{"x"}}}, []string{"identity", "pii", "getters"}},
	} {
		if got := run(tc.ext); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ran %v, want %v", tc.what, got, tc.want)
		}
	}

	_, err := NewPluginManager("routes: [{tool: a}, {tool: b}, {tool: 'get_[ab]*'}]")
	want := "routes[2].tool: pattern 'get_[ab]*' uses '[', which route patterns do not support (only * and ? are wildcards)"
	if !errors.Is(err, ErrCpexConfig) || !strings.Contains(err.Error(), want) {
		t.Fatalf("an unsupported pattern: %v, want a config error containing %q", err, want)
	}
}
