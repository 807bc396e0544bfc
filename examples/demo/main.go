// The walking-skeleton demo: a Go host invokes a Python plugin through libcpex.so. The
// plugin allows a call that names its user and denies one that does not.
package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

type toolCall struct {
	ToolName  string         `msgpack:"tool_name"`
	User      string         `msgpack:"user,omitempty"`
	Arguments map[string]any `msgpack:"arguments"`
}

func main() {
	// The plugins directory: the first argument, else ./plugins.
	pluginsArg := "plugins"
	if len(os.Args) > 1 {
		pluginsArg = os.Args[1]
	}
	dir, err := filepath.Abs(pluginsArg)
	if err != nil {
		log.Fatal(err)
	}
	config := fmt.Sprintf(`
plugin_settings:
  plugin_dirs: [%q]
plugins:
  - name: identity-checker
    kind: demo_plugins:IdentityChecker
    hooks: [tool_pre_invoke]
    mode: sequential
    priority: 10
`, dir)

	manager, err := cpex.NewPluginManager(config)
	if err != nil {
		log.Fatalf("load: %v", err)
	}
	defer manager.Shutdown()
	if err := manager.Initialize(); err != nil {
		log.Fatalf("initialize: %v", err)
	}
	names, _ := manager.PluginNames()
	fmt.Printf("plugins: %v\n", names)

	calls := []toolCall{
		{ToolName: "list_departments", User: "alice", Arguments: map[string]any{"limit": 10}},
		{ToolName: "list_departments", Arguments: map[string]any{"limit": 10}},
	}
	for i, call := range calls {
		result, ctx, bg, err := manager.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric, call, nil, nil)
		if err != nil {
			log.Fatalf("invoke: %v", err)
		}
		_ = ctx.Close()
		_ = bg.Close()
		who := call.User
		if who == "" {
			who = "(no user)"
		}
		if result.IsDenied() {
			v := result.Violation
			fmt.Printf("call %d: %s by %s -> DENIED by %s: %s [%s]\n", i+1, call.ToolName, who, v.PluginName, v.Reason, v.Code)
		} else {
			fmt.Printf("call %d: %s by %s -> ALLOWED (metadata %v)\n", i+1, call.ToolName, who, result.Metadata)
		}
	}
}
