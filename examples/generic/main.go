// The generic demo: a Go host invokes Python plugins (identity checker, PII guard,
// fire-and-forget audit logger) through libcpex.so in four scenarios (the expected output:
// examples/expected/generic.txt, checked by tests/demos).
// Run it from examples/: go run ./generic
package main

import (
	"fmt"
	"log"
	"os"
	"sort"
	"strings"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

type toolCall struct {
	ToolName     string         `msgpack:"tool_name"`
	User         string         `msgpack:"user,omitempty"`
	PIIClearance bool           `msgpack:"pii_clearance,omitempty"`
	Arguments    map[string]any `msgpack:"arguments,omitempty"`
}

func main() {
	configPath := "configs/generic.yaml"
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
	fmt.Printf("cpex demo: generic payloads (plugins: %s)\n", strings.Join(names, ", "))

	var background []*cpex.BackgroundTasks
	invoke := func(hook string, call toolCall, ctx *cpex.ContextTable) (*cpex.TypedPipelineResult[toolCall], *cpex.ContextTable) {
		ext := &cpex.Extensions{Meta: &cpex.MetaExtension{EntityType: "tool", EntityName: call.ToolName}}
		res, next, bg, err := cpex.Invoke(m, hook, cpex.PayloadGeneric, call, ext, ctx)
		if err != nil {
			log.Fatalf("%s %s: %v", hook, call.ToolName, err)
		}
		if bg != nil {
			background = append(background, bg)
		}
		return res, next
	}
	describe := func(res *cpex.TypedPipelineResult[toolCall]) string {
		if !res.IsDenied() {
			return "ALLOWED"
		}
		v := res.Violation
		return fmt.Sprintf("DENIED by %s: %s (code %s)", v.PluginName, v.Reason, v.Code)
	}
	args := map[string]any{"employee_id": "E-1001"}

	res, ctx := invoke("tool_pre_invoke", toolCall{ToolName: "get_compensation", User: "alice", Arguments: args}, nil)
	_ = ctx.Close()
	fmt.Printf("[1] get_compensation as alice, no clearance -> %s\n", describe(res))

	call := toolCall{ToolName: "get_compensation", User: "alice", PIIClearance: true, Arguments: args}
	res, ctx = invoke("tool_pre_invoke", call, nil)
	fmt.Printf("[2] get_compensation as alice, with clearance -> %s\n", describe(res))
	res, ctx = invoke("tool_post_invoke", call, ctx)
	_ = ctx.Close()
	fmt.Printf("    tool_post_invoke with the threaded context table -> %s\n", describe(res))

	res, ctx = invoke("tool_pre_invoke", toolCall{ToolName: "list_departments", User: "bob"}, nil)
	_ = ctx.Close()
	fmt.Printf("[3] list_departments as bob -> %s\n", describe(res))

	res, ctx = invoke("tool_pre_invoke", toolCall{ToolName: "list_departments"}, nil)
	_ = ctx.Close()
	fmt.Printf("[4] list_departments with no user -> %s\n", describe(res))

	var failures []string
	for _, bg := range background {
		errs, err := bg.Wait()
		if err != nil {
			log.Fatal(err)
		}
		for _, e := range errs {
			failures = append(failures, e.PluginName+": "+e.Message)
		}
		_ = bg.Close()
	}
	sort.Strings(failures)
	fmt.Printf("audit: %d background tasks finished, %d errors%s\n", len(background), len(failures), strings.Join(failures, "; "))
}
