package cpex

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fail closed, from the Go host: a plugin's failure is its own, under its on_error,
// and nothing it changed leaks (README: "When a plugin fails"). The Python host runs
// the same adversaries in sdk-python/tests/test_fail_closed.py.

var searchCall = map[string]any{"tool_name": "search", "user": "alice"}

func searchMeta() *Extensions {
	return &Extensions{Meta: &MetaExtension{EntityType: "tool", EntityName: "search"}}
}

func adversary(returns, onError string, extra ...string) string {
	return plugin("adv", "Adversary", pre, append([]string{
		"on_error: " + onError, "priority: 50", fmt.Sprintf("config: {returns: %s, size: 500}", returns),
	}, extra...)...)
}

func traceAt(tag string, priority int) string {
	return plugin(tag, "Trace", pre, fmt.Sprintf("priority: %d", priority), fmt.Sprintf("config: {tag: %s}", tag))
}

func TestUnencodableResultsFailThePluginUnderOnErrorFail(t *testing.T) {
	for _, tc := range []struct{ returns, code string }{
		{"set", "modified_payload_unencodable"},
		{"object", "modified_payload_unencodable"},
		{"int_keys", "modified_payload_invalid"},
		{"bad_extensions", "modified_extensions_unencodable"},
		{"metadata", "metadata_unencodable"},
		{"not_bool", "invalid_result"},
		{"refused_write", "extension_write_refused"},
	} {
		m := started(t, config(t, "", adversary(tc.returns, "fail")))
		res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, searchMeta(), nil)
		if !errors.Is(err, ErrCpexPipeline) || res != nil {
			t.Fatalf("%s: want a pipeline error and no result, got %v %+v", tc.returns, err, res)
		}
		msg := err.Error()
		if !strings.Contains(msg, "plugin 'adv'") || !strings.Contains(msg, "(code "+tc.code+")") || strings.Contains(msg, "<ffi>") {
			t.Fatalf("%s: the error must name the plugin and the code: %v", tc.returns, err)
		}
	}
}

func TestUnencodableResultsAreDiscardedWholeUnderIgnore(t *testing.T) {
	type traced struct {
		ToolName string   `msgpack:"tool_name"`
		User     string   `msgpack:"user"`
		Trace    []string `msgpack:"trace,omitempty"`
		Changed  string   `msgpack:"changed_by,omitempty"`
	}
	for _, tc := range []struct{ returns, code string }{
		{"set", "modified_payload_unencodable"},
		{"bad_extensions", "modified_extensions_unencodable"},
		{"refused_write", "extension_write_refused"},
	} {
		m := started(t, config(t, "", traceAt("before", 10), adversary(tc.returns, "ignore"), traceAt("after", 90)))
		res, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, traced{ToolName: "search", User: "alice"}, searchMeta(), nil)
		if err != nil || res.IsDenied() {
			t.Fatalf("%s: %v %+v", tc.returns, err, res)
		}
		if len(res.Errors) != 1 || res.Errors[0].PluginName != "adv" || res.Errors[0].Code != tc.code {
			t.Fatalf("%s: errors %+v", tc.returns, res.Errors)
		}
		want := traced{ToolName: "search", User: "alice", Trace: []string{"before", "after"}}
		if !res.PayloadModified || res.ModifiedPayload == nil || !reflect.DeepEqual(*res.ModifiedPayload, want) {
			t.Fatalf("%s: the pipeline must go on with the previous value: %+v", tc.returns, res.ModifiedPayload)
		}
		if res.ExtensionsModified || res.ModifiedExtensions != nil {
			t.Fatalf("%s: extensions changed: %+v", tc.returns, res.ModifiedExtensions)
		}
	}
}

func TestADenyWithAnUnencodableViolationStillDenies(t *testing.T) {
	m := started(t, config(t, "", adversary("deny_bad_details", "ignore")))
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil)
	if err != nil || !res.IsDenied() || res.Violation.PluginName != "adv" {
		t.Fatalf("want a deny by adv: %v %+v", err, res)
	}
	if len(res.Errors) != 1 || res.Errors[0].Code != "violation_unencodable" {
		t.Fatalf("errors %+v", res.Errors)
	}
}

func TestBaseExceptionsAreThePluginsErrors(t *testing.T) {
	for _, name := range []string{"SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError", "CustomBaseException"} {
		for _, afterAwait := range []bool{false, true} {
			cfg := fmt.Sprintf("config: {raise: %s, after_await: %t}", name, afterAwait)
			m := started(t, config(t, "", plugin("base", "RaisesBase", pre, cfg)))
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil)
			if !errors.Is(err, ErrCpexPipeline) || !strings.Contains(err.Error(), "plugin 'base' raised "+name) {
				t.Fatalf("%s (after await %t): %v", name, afterAwait, err)
			}
			soft := started(t, config(t, "", plugin("soft", "RaisesBase", pre, cfg, "on_error: ignore"), traceAt("after", 90)))
			for i := 0; i < 2; i++ { // the runtime keeps serving
				res, _, _, err := soft.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil)
				if err != nil || res.IsDenied() || len(res.Errors) != 1 || res.Errors[0].PluginName != "soft" || !res.PayloadModified {
					t.Fatalf("%s (after await %t): %v %+v", name, afterAwait, err, res)
				}
			}
		}
	}
}

func TestInPlaceEditsReachNoLaterPluginAndNotTheHost(t *testing.T) {
	for _, mode := range []string{"sequential", "transform", "audit", "concurrent", "fire_and_forget"} {
		// The vandal rewrites user mallory to alice in place; the gate lets only alice through.
		m := started(t, config(t, "",
			plugin("vandal", "Vandal", pre, "mode: "+mode, "priority: 1", "config: {user: alice}"),
			plugin("gate", "UserGate", pre, "mode: concurrent", "priority: 99", "config: {allowed: alice}")))
		res, _, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"tool_name": "search", "user": "mallory"}, searchMeta(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !res.IsDenied() || res.Violation.PluginName != "gate" {
			t.Fatalf("%s: an in-place edit decided the call: %+v", mode, res)
		}
		seen := res.Violation.Details
		if seen["user"] != "mallory" || seen["entity_name"] != "search" || seen["custom"] != nil || seen["nested"] != nil {
			t.Fatalf("%s: the gate saw another plugin's edits: %v", mode, seen)
		}
		if res.PayloadModified || res.ExtensionsModified || res.ModifiedPayload != nil || res.ModifiedExtensions != nil {
			t.Fatalf("%s: the host was given an edit made in place: %+v", mode, res)
		}
		if _, err := bg.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPayloadModifiedIsExplicit(t *testing.T) {
	m := started(t, config(t, "", plugin("a", "Allow", pre)))
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil)
	if err != nil || res.PayloadModified || res.ExtensionsModified {
		t.Fatalf("%v %+v", err, res)
	}
	m = started(t, config(t, "", traceAt("t", 10)))
	res, _, _, err = m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil)
	if err != nil || !res.PayloadModified || res.ExtensionsModified || res.ModifiedPayload == nil {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestSizeLimitsRefuseBeforeDecoding(t *testing.T) {
	m := started(t, config(t, "  max_payload_bytes: 200\n  max_extensions_bytes: 100\n  max_collection_entries: 8\n", plugin("a", "Allow", pre)))
	for _, hook := range []string{"tool_pre_invoke", "nobody_handles_this"} { // the second is answered by the C fast path when valid
		for _, tc := range []struct {
			payload, ext any
			message      string
		}{
			{map[string]any{"blob": strings.Repeat("x", 300)}, nil, "payload: 3"},
			{searchCall, map[string]any{"custom": map[string]any{"blob": strings.Repeat("x", 150)}}, "over the limit of 100 (plugin_settings.max_extensions_bytes)"},
			{map[string]any{"items": []int{1, 2, 3, 4, 5, 6, 7, 8, 9}}, nil, "9 entries, over the limit of 8 (plugin_settings.max_collection_entries)"},
		} {
			_, _, _, err := m.InvokeByName(hook, PayloadGeneric, tc.payload, tc.ext, nil)
			if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("%s: want invalid input with %q, got %v", hook, tc.message, err)
			}
		}
	}
	// The default: 10 MiB.
	d := started(t, config(t, "", plugin("a", "Allow", pre)))
	_, _, _, err := d.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"blob": make([]byte, 11<<20)}, nil, nil)
	if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "over the limit of 10485760 (plugin_settings.max_payload_bytes); refused before decoding") {
		t.Fatalf("an 11 MiB payload: %v", err)
	}
}

func TestAMessageWithoutSchemaVersionDecodesAs20(t *testing.T) {
	raw, err := encode(map[string]any{"role": "user", "content": []any{}}, "message")
	if err != nil {
		t.Fatal(err)
	}
	var msg Message
	if err := decode(raw, &msg, "message"); err != nil || msg.SchemaVersion != "2.0" {
		t.Fatalf("%v %+v", err, msg)
	}
}

func TestLoadConfigFileTakesRelativePluginDirsFromTheFilesFolder(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "deploy", "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(conf, pluginDir(t))
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("plugin_settings:\n  plugin_dirs: [%q]\nplugins:\n%s", rel, plugin("a", "Allow", pre))
	path := filepath.Join(conf, "cpex.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // anywhere but the config's folder or the tests' own
	m, err := NewPluginManagerDefault()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.LoadConfigFile(path); err != nil {
		t.Fatalf("LoadConfigFile with plugin_dirs %q relative to %s: %v", rel, conf, err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, searchCall, nil, nil); err != nil || res.Metadata["seen_by"] != "allow" {
		t.Fatalf("%v %+v", err, res)
	}
}
