package cpex_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"strings"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

func exampleConfig() string {
	dir, err := filepath.Abs("../tests/plugins")
	if err != nil {
		log.Fatal(err)
	}
	return fmt.Sprintf(`
plugin_settings: {plugin_dirs: [%q]}
plugins:
  - name: guard
    kind: cpex_test_plugins:DenyWhenBlocked
    hooks: [tool_pre_invoke]
  - name: tracer
    kind: cpex_test_plugins:Trace
    hooks: [tool_pre_invoke]
    priority: 200
    config: {tag: traced}
`, dir)
}

type toolCall struct {
	ToolName string   `msgpack:"tool_name"`
	Block    bool     `msgpack:"block"`
	Trace    []string `msgpack:"trace,omitempty"`
}

func ExamplePluginManager_InvokeByName() {
	m, err := cpex.NewPluginManager(exampleConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric, toolCall{ToolName: "rm", Block: true}, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ctx.Close()
	defer bg.Close()
	fmt.Println(res.IsDenied(), res.Violation.PluginName, res.Violation.Code)
	// Output: true guard blocked
}

func ExampleInvoke() {
	m, err := cpex.NewPluginManager(exampleConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	res, _, _, err := cpex.Invoke(m, "tool_pre_invoke", cpex.PayloadGeneric, toolCall{ToolName: "ls"}, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.IsDenied(), res.ModifiedPayload.ToolName, res.ModifiedPayload.Trace)
	// Output: false ls [traced]
}

func ExampleNewToolCallPart() {
	msg := cpex.MessagePayload{Message: cpex.Message{
		SchemaVersion: "1.0",
		Role:          "assistant",
		Content: []cpex.ContentPart{
			cpex.NewTextPart("Let me look that up."),
			cpex.NewToolCallPart(cpex.ToolCall{ToolCallID: "call-1", Name: "search_docs"}),
		},
	}}
	for _, part := range msg.Message.Content {
		fmt.Println(part.ContentType, part.Known())
	}
	// Output:
	// text true
	// tool_call true
}

func ExampleInvokeWith() {
	dir, err := filepath.Abs("../tests/plugins")
	if err != nil {
		log.Fatal(err)
	}
	m, err := cpex.NewPluginManager(fmt.Sprintf(`
plugin_settings: {plugin_dirs: [%q]}
plugins:
  - name: echo
    kind: cpex_test_plugins:RequestEcho
    hooks: [tool_pre_invoke]
`, dir))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	call := cpex.ToolPreInvokePayload{Name: "search", Args: map[string]any{"q": "cpex"}}
	res, ctx, bg, err := cpex.InvokeWith(context.Background(), m, "tool_pre_invoke", cpex.PayloadGeneric, call, cpex.InvokeOptions{
		Request: &cpex.GlobalContext{RequestID: "req-1", User: "alice", TenantID: "acme"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ctx.Close() // or pass it on: InvokeOptions{Context: ctx} in the request's next hook
	defer bg.Close()
	seen := res.Metadata["request"].(map[string]any)
	fmt.Println(res.IsDenied(), seen["request_id"], seen["user"], seen["tenant_id"])
	// Output: false req-1 alice acme
}

func ExamplePluginManager_ReloadConfig() {
	m, err := cpex.NewPluginManager(exampleConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	// A config that fails (here: a plugin kind that cannot be imported) changes nothing.
	broken := exampleConfig() + "  - {name: extra, kind: 'no_such_package:Plugin', hooks: [tool_pre_invoke]}\n"
	fmt.Println(errors.Is(m.ReloadConfig(broken), cpex.ErrCpexConfig))
	names, _ := m.PluginNames()
	fmt.Println(names)
	// A good one replaces the plugins for every call that begins after the swap.
	retraced := strings.Replace(exampleConfig(), "tag: traced", "tag: retraced", 1)
	if err := m.ReloadConfig(retraced); err != nil {
		log.Fatal(err)
	}
	res, _, _, err := cpex.Invoke(m, "tool_pre_invoke", cpex.PayloadGeneric, toolCall{ToolName: "ls"}, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.ModifiedPayload.Trace)
	// Output:
	// true
	// [guard tracer]
	// [retraced]
}
