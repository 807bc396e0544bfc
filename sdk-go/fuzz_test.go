package cpex

import (
	"errors"
	"sync"
	"testing"
)

// Fuzz targets over the bytes and text a host hands the library: whatever they are,
// the call returns a result or an error of the input's class (never an internal
// error, never a crash). Seeds live in testdata/fuzz; CI runs each target briefly.

var fuzzTarget struct {
	once sync.Once
	m    *PluginManager
	err  error
}

func fuzzManager(t *testing.T) *PluginManager {
	fuzzTarget.once.Do(func() {
		m, err := NewPluginManager(config(t, "",
			plugin("guard", "DenyWhenBlocked", pre),
			plugin("probe", "ExtensionProbe", pre, "priority: 200", "capabilities: [read_headers, read_labels, read_subject]")))
		if err == nil {
			err = m.Initialize()
		}
		fuzzTarget.m, fuzzTarget.err = m, err
	})
	if fuzzTarget.err != nil {
		t.Fatal(fuzzTarget.err)
	}
	return fuzzTarget.m
}

func inputError(err error) bool {
	return errors.Is(err, ErrCpexParse) || errors.Is(err, ErrCpexInvalidInput)
}

func FuzzInvokePayload(f *testing.F) {
	valid, _ := encode(toolCall{ToolName: "x", Block: true}, "seed")
	f.Add(valid)
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0xc1})
	f.Add(valid[:len(valid)-2])
	f.Fuzz(func(t *testing.T, payload []byte) {
		m := fuzzManager(t)
		if _, err := invokeRaw(m, "tool_pre_invoke", PayloadGeneric, payload, nil); err != nil && !inputError(err) {
			t.Fatalf("payload %x: %v", payload, err)
		}
	})
}

func FuzzInvokeExtensions(f *testing.F) {
	ext, _ := encode(Extensions{
		HTTP:     &HttpExtension{RequestHeaders: map[string]string{"a": "b"}},
		Security: &SecurityExtension{Labels: []string{"pii"}, Subject: &SubjectExtension{ID: "u"}},
	}, "seed")
	f.Add(ext)
	f.Add([]byte{0x81, 0xa4, 'm', 'e', 't', 'a', 0x90})
	f.Add([]byte{0x92})
	f.Fuzz(func(t *testing.T, extensions []byte) {
		m := fuzzManager(t)
		payload, _ := encode(toolCall{ToolName: "x"}, "payload")
		if _, err := invokeRaw(m, "tool_pre_invoke", PayloadGeneric, payload, extensions); err != nil && !inputError(err) {
			t.Fatalf("extensions %x: %v", extensions, err)
		}
	})
}

func FuzzConfig(f *testing.F) {
	f.Add("plugins: []")
	f.Add("plugins: [{name: a, kind: 'x:Y', mode: sideways}]")
	f.Add("plugin_settings: {plugin_timeout: -1}\nroutes: [{tool: '*'}]")
	f.Add("global: {policies: {all: {plugins: [ghost]}}}")
	f.Add("- [")
	f.Fuzz(func(t *testing.T, yaml string) {
		m, err := NewPluginManager(yaml)
		if err != nil {
			if !errors.Is(err, ErrCpexParse) && !errors.Is(err, ErrCpexConfig) && !errors.Is(err, ErrCpexInvalidInput) && !errors.Is(err, ErrCpexPipeline) {
				t.Fatalf("config %q: %v", yaml, err)
			}
			return
		}
		if err := m.Shutdown(); err != nil {
			t.Fatalf("config %q: shutdown: %v", yaml, err)
		}
	})
}
