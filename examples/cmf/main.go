// The CMF demo: a Go host sends CMF messages through Python plugins: a tool policy
// that denies a forbidden tool call, and header injectors of which only the one
// holding write_headers gets its response headers through.
// Run it from examples/: go run ./cmf
package main

import (
	"fmt"
	"log"
	"os"
	"sort"
	"strings"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

func message(tool string) cpex.MessagePayload {
	return cpex.MessagePayload{Message: cpex.Message{
		SchemaVersion: "1.0",
		Role:          "assistant",
		Content: []cpex.ContentPart{
			cpex.NewTextPart("Calling " + tool + "."),
			cpex.NewToolCallPart(cpex.ToolCall{ToolCallID: "call-1", Name: tool, Arguments: map[string]any{"query": "quarterly report"}}),
		},
	}}
}

func headers(h map[string]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + h[k]
	}
	return strings.Join(parts, ", ")
}

func main() {
	configPath := "configs/cmf.yaml"
	if len(os.Args) > 1 {
		configPath = os.Args[1]
	}
	m, err := cpex.NewPluginManagerDefault()
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.LoadConfigFile(configPath); err != nil {
		log.Fatalf("load %s: %v", configPath, err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	names, _ := m.PluginNames()
	fmt.Printf("cpex demo: CMF messages (plugins: %s)\n", strings.Join(names, ", "))

	for i, tool := range []string{"search_docs", "delete_database"} {
		ext := &cpex.Extensions{HTTP: &cpex.HttpExtension{RequestHeaders: map[string]string{"host": "gateway.local"}}}
		res, ctx, bg, err := cpex.Invoke(m, "cmf.tool_pre_invoke", cpex.PayloadCMFMessage, message(tool), ext, nil)
		if err != nil {
			log.Fatalf("invoke: %v", err)
		}
		_ = ctx.Close()
		_ = bg.Close()
		if res.IsDenied() {
			v := res.Violation
			fmt.Printf("[%d] assistant calls %s -> DENIED by %s: %s (code %s)\n", i+1, tool, v.PluginName, v.Reason, v.Code)
			continue
		}
		fmt.Printf("[%d] assistant calls %s -> ALLOWED\n", i+1, tool)
		if res.ModifiedExtensions != nil && res.ModifiedExtensions.HTTP != nil {
			fmt.Printf("    response headers: %s\n", headers(res.ModifiedExtensions.HTTP.ResponseHeaders))
		}
		for _, e := range res.Errors {
			fmt.Printf("    refused: %s\n", e.Message)
		}
	}
}
