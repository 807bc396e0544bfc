// A Go host outside the cpex repository, built against an installed cpexrt (README,
// "Install"): it loads cpex.yaml, asks about two tools and prints the answers.
package main

import (
	"encoding/json"
	"fmt"
	"log"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

func main() {
	_, _, info := cpex.LibraryVersion()
	var build struct {
		Layout string `json:"layout"`
	}
	if err := json.Unmarshal([]byte(info), &build); err != nil {
		log.Fatal(err)
	}
	fmt.Println("libcpex layout:", build.Layout)

	m, err := cpex.NewPluginManagerDefault()
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.LoadConfigFile("cpex.yaml"); err != nil {
		log.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	for _, tool := range []string{"search", "delete_everything"} {
		res, ctx, bg, err := cpex.Invoke(m, "tool_pre_invoke", cpex.PayloadGeneric, map[string]any{"tool_name": tool}, nil, nil)
		if err != nil {
			log.Fatal(err)
		}
		ctx.Close()
		bg.Close()
		if res.IsDenied() {
			fmt.Printf("%s: denied by %s (%s)\n", tool, res.Violation.PluginName, res.Violation.Code)
		} else {
			fmt.Printf("%s: allowed (plugins ran on Python at %v)\n", tool, res.Metadata["python_prefix"])
		}
	}
}
