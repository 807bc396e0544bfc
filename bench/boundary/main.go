// A small A/B bench of the Go boundary: the demo pipeline (bench/go's pipeline():
// cpex.Invoke of tool_pre_invoke with the demo payload, ctx.Close, bg.Close), process
// CPU per call from getrusage, wall median over batches.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

type toolCall struct {
	ToolName     string         `msgpack:"tool_name"`
	User         string         `msgpack:"user"`
	PIIClearance bool           `msgpack:"pii_clearance"`
	Arguments    map[string]any `msgpack:"arguments"`
}

var (
	payload = toolCall{ToolName: "get_compensation", User: "alice", PIIClearance: true, Arguments: map[string]any{"employee_id": "E-1001"}}
	ext     = &cpex.Extensions{Meta: &cpex.MetaExtension{EntityType: "tool", EntityName: "get_compensation"}}
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	n := flag.Int("n", 20000, "calls")
	examples := flag.String("examples", "../../examples", "examples folder")
	label := flag.String("label", "", "label")
	flag.Parse()
	m, err := cpex.NewPluginManagerDefault()
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(*examples, "configs", "generic.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	text := strings.Replace(string(cfg), "plugin_dirs: [../plugins]", fmt.Sprintf("plugin_dirs: [%q]", filepath.Join(*examples, "plugins")), 1)
	if err := m.LoadConfig(text); err != nil {
		log.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	call := func() {
		res, ctx, bg, err := cpex.Invoke(m, "tool_pre_invoke", cpex.PayloadGeneric, payload, ext, nil)
		if err != nil || res.IsDenied() {
			log.Fatalf("pipeline: %v %+v", err, res)
		}
		_ = ctx.Close()
		_ = bg.Close()
	}
	for i := 0; i < 2000; i++ {
		call()
	}
	const batch = 500
	var walls, cpus []float64
	for done := 0; done < *n; done += batch {
		c0, w0 := cpu(), time.Now()
		for i := 0; i < batch; i++ {
			call()
		}
		walls = append(walls, float64(time.Since(w0).Nanoseconds())/batch/1000)
		cpus = append(cpus, float64((cpu()-c0).Nanoseconds())/batch/1000)
	}
	sort.Float64s(walls)
	sort.Float64s(cpus)
	fmt.Printf("%s cpu_us min %.2f med %.2f | wall_us min %.2f med %.2f\n", *label, cpus[0], cpus[len(cpus)/2], walls[0], walls[len(walls)/2])
}
