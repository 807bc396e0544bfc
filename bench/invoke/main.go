// Go invoke latency: median and p99 of InvokeByName for a hook with no plugins and a
// hook with one Python plugin, each against the floor of one bare cgo call into
// libcpex measured in the same run. Figures, not asserts: the machines are noisy.
package main

import (
	"flag"
	"fmt"
	"log"
	"path/filepath"
	"sort"
	"time"

	cpex "github.com/cpex-dev/cpex/sdk-go"
)

type stats struct{ median, p99 time.Duration }

func measure(n int, f func()) stats {
	for i := 0; i < n/10+1; i++ { // warm-up
		f()
	}
	samples := make([]time.Duration, n)
	for i := range samples {
		start := time.Now()
		f()
		samples[i] = time.Since(start)
	}
	sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
	return stats{samples[n/2], samples[n*99/100]}
}

func main() {
	n := flag.Int("n", 20000, "invokes per figure")
	plugins := flag.String("plugins", "../tests/plugins", "directory of cpex_test_plugins")
	flag.Parse()
	dir, err := filepath.Abs(*plugins)
	if err != nil {
		log.Fatal(err)
	}
	m, err := cpex.NewPluginManager(fmt.Sprintf(`
plugin_settings: {plugin_dirs: [%q]}
plugins:
  - {name: allow, kind: "cpex_test_plugins:Allow", hooks: [tool_pre_invoke]}
`, dir))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	payload := map[string]any{"tool_name": "list_departments", "user": "alice", "arguments": map[string]any{"limit": 10}}
	invoke := func(hook string) func() {
		return func() {
			res, ctx, bg, err := m.InvokeByName(hook, cpex.PayloadGeneric, payload, nil, nil)
			if err != nil || res.IsDenied() || ctx != nil || bg != nil {
				log.Fatalf("%s: unexpected result %+v, %v", hook, res, err)
			}
		}
	}
	floor := measure(*n, func() { cpex.LibraryVersion() })
	fmt.Printf("%-34s %10s %10s %8s\n", "go figure", "median", "p99", "÷floor")
	row := func(name string, s stats) {
		fmt.Printf("%-34s %10v %10v %8.1f\n", name, s.median, s.p99, float64(s.median)/float64(floor.median))
	}
	row("floor: bare cgo call", floor)
	row("invoke, hook with no plugins", measure(*n, invoke("tool_post_invoke")))
	row("invoke, hook with one plugin", measure(*n, invoke("tool_pre_invoke")))
}
