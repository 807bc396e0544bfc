package cpex

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// The failure suite (docs/architecture.md, "Errors"): every bad input gets its own
// error class and a message naming the culprit, and the manager keeps working
// afterwards.

func failureManager(t *testing.T) *PluginManager {
	return started(t, config(t, "  plugin_timeout: 0.3\n",
		plugin("guard", "DenyWhenBlocked", pre),
		plugin("raiser", "Raises", pre, "conditions: [{tools: [boom]}]"),
		plugin("spinner", "Spinner", pre, "conditions: [{tools: [hang]}]"),
		plugin("garbage", "Garbage", pre, "conditions: [{tools: [junk]}]"),
		plugin("policy", "CmfToolPolicy", "[cmf.tool_pre_invoke]")))
}

func entity(tool string) *Extensions {
	return &Extensions{Meta: &MetaExtension{EntityType: "tool", EntityName: tool}}
}

func stillWorks(t *testing.T, m *PluginManager) {
	t.Helper()
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "ok"}, nil, nil)
	if err != nil || res.IsDenied() {
		t.Fatalf("the manager stopped working: %v %+v", err, res)
	}
	res, _, _, err = m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "no", Block: true}, nil, nil)
	if err != nil || !res.IsDenied() {
		t.Fatalf("the manager stopped denying: %v %+v", err, res)
	}
}

func TestEveryBadInputGetsItsErrorAndTheManagerGoesOn(t *testing.T) {
	m := failureManager(t)
	valid, _ := encode(map[string]any{"tool_name": "x", "arguments": map[string]any{"q": "long enough to truncate"}}, "p")
	cases := []struct {
		name     string
		run      func() error
		sentinel error
		message  string
	}{
		{"null payload with a length", func() error { return invokeNullPayload(m, 12) }, ErrCpexInvalidInput, "payload is NULL but payload_len is 12"},
		{"zero-length payload", func() error { _, err := invokeRaw(m, "tool_pre_invoke", 0, nil, nil); return err }, ErrCpexInvalidInput, "payload: empty"},
		{"non-UTF-8 hook", func() error {
			_, _, _, err := m.InvokeByName("tool\xff\xfe", PayloadGeneric, toolCall{}, nil, nil)
			return err
		}, ErrCpexInvalidInput, "hook: not valid UTF-8"},
		{"unknown payload type", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", 42, toolCall{}, nil, nil)
			return err
		}, ErrCpexInvalidInput, "unknown payload type 42"},
		{"truncated MessagePack", func() error { _, err := invokeRaw(m, "tool_pre_invoke", 0, valid[:len(valid)-5], nil); return err }, ErrCpexParse, "payload"},
		{"random bytes", func() error { _, err := invokeRaw(m, "tool_pre_invoke", 0, []byte{0xc1, 0x00, 0xff}, nil); return err }, ErrCpexParse, "payload"},
		{"trailing bytes", func() error {
			_, err := invokeRaw(m, "tool_pre_invoke", 0, append(append([]byte{}, valid...), 0x01), nil)
			return err
		}, ErrCpexParse, "trailing bytes"},
		{"random extensions", func() error { _, err := invokeRaw(m, "tool_pre_invoke", 0, valid, []byte{0x92}); return err }, ErrCpexParse, "extensions"},
		{"extensions not a map", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{}, []int{1, 2}, nil)
			return err
		}, ErrCpexInvalidInput, "extensions: expected a map"},
		{"generic payload not a map", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, "just a string", nil, nil)
			return err
		}, ErrCpexInvalidInput, "must be a map"},
		{"CMF payload of the wrong shape", func() error {
			_, _, _, err := m.InvokeByName("cmf.tool_pre_invoke", PayloadCMFMessage, map[string]any{"message": map[string]any{"schema_version": "1", "content": []any{}}}, nil, nil)
			return err
		}, ErrCpexInvalidInput, "payload.message.role"},
		{"plugin raises", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{}, entity("boom"), nil)
			return err
		}, ErrCpexPipeline, "plugin 'raiser' raised RuntimeError"},
		{"plugin hangs", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{}, entity("hang"), nil)
			return err
		}, ErrCpexTimeout, "plugin 'spinner' timed out"},
		{"plugin returns garbage", func() error {
			_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, toolCall{}, entity("junk"), nil)
			return err
		}, ErrCpexPipeline, "plugin 'garbage' returned int"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v; want %v containing %q", err, tc.sentinel, tc.message)
			}
			stillWorks(t, m)
		})
	}
}

func TestBadConfigsFailTheLoadNotTheManager(t *testing.T) {
	m, err := NewPluginManagerDefault()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	for yaml, want := range map[string]struct {
		sentinel error
		message  string
	}{
		"plugins: [": {ErrCpexParse, "YAML syntax error"},
		"plugins: [{name: a, kind: 'x:Y', shade: blue}]":            {ErrCpexConfig, "plugins[0].shade: unknown field"},
		"plugins: [{name: a, kind: 'x:Y', mode: maybe}]":            {ErrCpexConfig, "plugins[0].mode: expected one of"},
		"plugins: [{name: a, kind: 'x:Y'}, {name: a, kind: 'x:Y'}]": {ErrCpexConfig, "duplicate plugin name 'a'"},
		"plugins: [{name: a, kind: 'no_such_mod_zz:A'}]":            {ErrCpexConfig, "cannot import module 'no_such_mod_zz'"},
		config(t, "", plugin("a", "Allow", "[prompt_pre_fetch]")):   {ErrCpexConfig, "plugins[0].hooks[0]: plugin 'a'"},
	} {
		if err := m.LoadConfig(yaml); !errors.Is(err, want.sentinel) || !strings.Contains(err.Error(), want.message) {
			t.Errorf("%q: got %v; want %v containing %q", yaml, err, want.sentinel, want.message)
		}
	}
	if err := m.LoadConfig(config(t, "", plugin("guard", "DenyWhenBlocked", pre))); err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	stillWorks(t, m)
}

// Shutdown racing 16 goroutines that invoke, thread contexts and wait: every call
// either works or fails with ErrCpexInvalidHandle; nothing hangs or crashes.
func TestShutdownRacingSixteenGoroutinesThatInvokeAndWait(t *testing.T) {
	m := started(t, config(t, "",
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]"),
		plugin("rec", "Recorder", pre, "mode: fire_and_forget", "config: {seconds: 0.001}")))
	var wg sync.WaitGroup
	errs := make(chan error, 16*200)
	start := make(chan struct{})
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 200; i++ {
				_, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, traced{ID: i}, nil, nil)
				if err == nil {
					_, ctx, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, traced{ID: i}, nil, ctx)
				}
				if err == nil && bg != nil {
					_, err = bg.Wait()
				}
				_ = ctx.Close()
				_ = bg.Close()
				if err != nil && !errors.Is(err, ErrCpexInvalidHandle) {
					errs <- err
				}
			}
		}()
	}
	close(start)
	if err := m.Shutdown(); err != nil {
		t.Error(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("racing Shutdown: %v", err)
	}
	if n, err := LiveHandles(); err != nil || n != 0 {
		t.Fatalf("handles left after Shutdown: %d, %v", n, err)
	}
}
