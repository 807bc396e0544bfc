// The Go figures of the benchmarks (targets: docs/architecture.md, "Performance
// targets"): invoke latency (no plugins, the demo pipeline), 8 goroutines against one,
// cold start, and a long run's memory and handles. Prints JSON for bench/run.py, which
// adds the baselines and ratios; -table prints a table.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
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

// Figures are in microseconds unless named otherwise.
type figures map[string]float64

var inflight = flag.Int("inflight", cpex.DefaultMaxInFlight, "calls in flight (WithMaxInFlight)")

func manager(examples string) *cpex.PluginManager {
	return managerWith(examples, 0)
}

// managerWith is the demo pipeline's manager; with engine workers (workers > 0) its
// engine runs in that many processes (plugin_settings.engine_workers).
func managerWith(examples string, workers int) *cpex.PluginManager {
	m, err := cpex.NewPluginManagerDefault(cpex.WithMaxInFlight(*inflight))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(examples, "configs", "generic.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	text := strings.Replace(string(cfg), "plugin_dirs: [../plugins]", fmt.Sprintf("plugin_dirs: [%q]", filepath.Join(examples, "plugins")), 1)
	if workers > 0 {
		text = strings.Replace(text, "plugin_settings:\n", fmt.Sprintf("plugin_settings:\n  engine_workers: %d\n", workers), 1)
		if !strings.Contains(text, "engine_workers") {
			log.Fatal("generic.yaml has no plugin_settings section to add engine_workers to")
		}
	}
	if err := m.LoadConfig(text); err != nil {
		log.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	return m
}

// pipeline is one demo-pipeline invoke: identity checker, PII guard, fire-and-forget
// audit logger (its handle released, the task left to finish).
func pipeline(m *cpex.PluginManager) {
	res, ctx, bg, err := cpex.Invoke(m, "tool_pre_invoke", cpex.PayloadGeneric, payload, ext, nil)
	if err != nil || res.IsDenied() {
		log.Fatalf("pipeline: %v %+v", err, res)
	}
	_ = ctx.Close()
	_ = bg.Close()
}

// fileManager loads and initializes a config file (relative plugin_dirs are taken from
// its folder).
func fileManager(path string) *cpex.PluginManager {
	m, err := cpex.NewPluginManagerDefault(cpex.WithMaxInFlight(*inflight))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.LoadConfigFile(path); err != nil {
		log.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	return m
}

// The CMF demo's message (examples/cmf): an assistant's text and a tool call, with the
// request's HTTP headers in the extensions.
var (
	cmfMessage = cpex.MessagePayload{Message: cpex.Message{
		SchemaVersion: "1.0",
		Role:          "assistant",
		Content: []cpex.ContentPart{
			cpex.NewTextPart("Calling search_docs."),
			cpex.NewToolCallPart(cpex.ToolCall{ToolCallID: "call-1", Name: "search_docs", Arguments: map[string]any{"query": "quarterly report"}}),
		},
	}}
	cmfExt = &cpex.Extensions{HTTP: &cpex.HttpExtension{RequestHeaders: map[string]string{"host": "gateway.local"}}}
)

// cmfPipeline is one CMF demo invoke: tool policy (allows), header injectors.
func cmfPipeline(m *cpex.PluginManager) {
	res, ctx, bg, err := cpex.Invoke(m, "cmf.tool_pre_invoke", cpex.PayloadCMFMessage, cmfMessage, cmfExt, nil)
	if err != nil || res.IsDenied() {
		log.Fatalf("cmf pipeline: %v %+v", err, res)
	}
	_ = ctx.Close()
	_ = bg.Close()
}

// piiManager runs the published cpex-pii-filter (a py-cpex plugin), its stanza as
// py-cpex's docs write it.
func piiManager() *cpex.PluginManager {
	m, err := cpex.NewPluginManager(`
plugins:
  - name: pii
    kind: cpex_pii_filter.pii_filter.PIIFilterPlugin
    hooks: [tool_pre_invoke]
    mode: enforce
    config: {block_on_detection: false}
`)
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		log.Fatal(err)
	}
	return m
}

// piiCall is one tool call with PII in its arguments, redacted by the plugin.
func piiCall(m *cpex.PluginManager) {
	call := map[string]any{"name": "send_email", "args": map[string]any{"to": "john@example.com", "body": "My SSN is 123-45-6789, call 555-123-4567"}}
	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric, call, nil, nil)
	if err != nil || res.IsDenied() || !res.PayloadModified {
		log.Fatalf("pii: %v %+v", err, res)
	}
	_ = ctx.Close()
	_ = bg.Close()
}

func noPlugins(m *cpex.PluginManager) {
	res, _, _, err := m.InvokeByName("resource_post_fetch", cpex.PayloadGeneric, payload, nil, nil)
	if err != nil || res.IsDenied() {
		log.Fatalf("no plugins: %v", err)
	}
}

func samples(n int, f func()) []time.Duration {
	for i := 0; i < n/10+1; i++ {
		f()
	}
	out := make([]time.Duration, n)
	for i := range out {
		start := time.Now()
		f()
		out[i] = time.Since(start)
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func pct(s []time.Duration, p int) float64 { return us(s[len(s)*p/100]) }

// concurrent runs total invokes over g goroutines: throughput (invokes/s) and the
// p50 / p99 of single invokes.
func concurrent(m *cpex.PluginManager, g, total int) (float64, float64, float64) {
	var wg sync.WaitGroup
	per := total / g
	all := make([][]time.Duration, g)
	start := time.Now()
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := make([]time.Duration, per)
			for j := range s {
				t := time.Now()
				pipeline(m)
				s[j] = time.Since(t)
			}
			all[i] = s
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var merged []time.Duration
	for _, s := range all {
		merged = append(merged, s...)
	}
	sort.Slice(merged, func(a, b int) bool { return merged[a] < merged[b] })
	return float64(per*g) / elapsed.Seconds(), pct(merged, 50), pct(merged, 99)
}

// throughputRounds prints calls/s of the demo pipeline in-process and with the engine in
// worker processes, 1 and 8 goroutines each, in alternating rounds (a noisy machine
// moves every figure of a round alike, so compare within a round).
func throughputRounds(dir string, rounds, workers, n int) {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	in := managerWith(dir, 0)
	out := managerWith(dir, workers)
	for i := 0; i < 2000; i++ {
		pipeline(in)
		pipeline(out)
	}
	fmt.Printf("cores %d, engine workers %d, %d calls per figure\n", runtime.NumCPU(), workers, n)
	for r := 0; r < rounds; r++ {
		in1, _, _ := concurrent(in, 1, n)
		in8, _, _ := concurrent(in, 8, n)
		w1, _, _ := concurrent(out, 1, n)
		w8, _, p99 := concurrent(out, 8, n)
		fmt.Printf("round %d: in-process 1: %.0f/s, 8: %.0f/s | workers 1: %.0f/s, 8: %.0f/s (p99 %.0f us) | workers 8 / in-process 1: %.2f\n",
			r+1, in1, in8, w1, w8, p99, w8/in1)
	}
	_ = in.Shutdown()
	_ = out.Shutdown()
}

func rssKB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return v
		}
	}
	return 0
}

// processCPU is the process's user and system time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perCall is d spread over calls, in µs.
func perCall(d time.Duration, calls int) float64 {
	return float64(d.Nanoseconds()) / float64(calls) / 1000
}

// cpuPerCall prints the process CPU and wall time per call of call (the demo pipeline;
// with -pii the cpex-pii-filter call, with -cmf the CMF demo pipeline), minimum and
// median over batches of 500 calls: the whole process's CPU, the runtime's threads
// included, which a noisy machine's wall clock hides.
func cpuPerCall(m *cpex.PluginManager, calls int, label string, call func(*cpex.PluginManager)) {
	cpuPerCallG(m, calls, label, call, 1)
}

// cpuPerCallG is cpuPerCall with each batch's calls spread over g goroutines (-goroutines).
func cpuPerCallG(m *cpex.PluginManager, calls int, label string, call func(*cpex.PluginManager), g int) {
	for i := 0; i < 2000; i++ {
		call(m)
	}
	const batch = 500
	var walls, cpus, kids []float64
	kidsStart := childrenCPU()
	selfSwitches, kidSwitches := switches(), childrenSwitches()
	for done := 0; done < calls; done += batch {
		c0, k0, w0 := processCPU(), childrenCPU(), time.Now()
		if g <= 1 {
			for i := 0; i < batch; i++ {
				call(m)
			}
		} else {
			var wg sync.WaitGroup
			for k := 0; k < g; k++ {
				wg.Add(1)
				go func(k int) {
					defer wg.Done()
					for i := k; i < batch; i += g {
						call(m)
					}
				}(k)
			}
			wg.Wait()
		}
		walls = append(walls, float64(time.Since(w0).Nanoseconds())/batch/1000)
		cpus = append(cpus, float64((processCPU()-c0).Nanoseconds())/batch/1000)
		kids = append(kids, float64((childrenCPU()-k0).Nanoseconds())/batch/1000)
	}
	sort.Float64s(walls)
	sort.Float64s(cpus)
	sort.Float64s(kids)
	fmt.Printf("%s cpu_us min %.2f med %.2f | wall_us min %.2f med %.2f", label, cpus[0], cpus[len(cpus)/2], walls[0], walls[len(walls)/2])
	if kids[len(kids)-1] > 0 {
		// engine workers: their CPU, read from /proc in clock ticks (coarse per batch,
		// so also their mean over the whole run)
		total := float64((childrenCPU() - kidsStart).Nanoseconds()) / float64(len(kids)*batch) / 1000
		fmt.Printf(" | workers cpu_us med %.2f mean %.2f", kids[len(kids)/2], total)
		// context switches per call (voluntary: the thread slept; involuntary: it was
		// preempted), of this process's threads and of the workers' threads
		s, k := switches(), childrenSwitches()
		n := float64(len(kids) * batch)
		fmt.Printf(" | switches/call host %.2f+%.2f workers %.2f+%.2f", float64(s[0]-selfSwitches[0])/n,
			float64(s[1]-selfSwitches[1])/n, float64(k[0]-kidSwitches[0])/n, float64(k[1]-kidSwitches[1])/n)
	}
	fmt.Println()
}

// switches is this process's voluntary and involuntary context switches so far (all
// its threads).
func switches() [2]int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return [2]int64{ru.Nvcsw, ru.Nivcsw}
}

// children is this process's live children (engine workers), each with its pid and
// the fields of /proc/<pid>/stat after the command's closing parenthesis.
func children() map[string][]string {
	out := map[string][]string{}
	entries, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 12 && fields[1] == self {
			out[e.Name()] = fields
		}
	}
	return out
}

// childrenSwitches is the voluntary and involuntary context switches of the threads of
// this process's live children (engine workers), from /proc.
func childrenSwitches() [2]int64 {
	var out [2]int64
	for pid := range children() {
		tasks, _ := os.ReadDir("/proc/" + pid + "/task")
		for _, t := range tasks {
			status, err := os.ReadFile("/proc/" + pid + "/task/" + t.Name() + "/status")
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(status), "\n") {
				if f := strings.Fields(line); len(f) == 2 {
					v, _ := strconv.ParseInt(f[1], 10, 64)
					switch f[0] {
					case "voluntary_ctxt_switches:":
						out[0] += v
					case "nonvoluntary_ctxt_switches:":
						out[1] += v
					}
				}
			}
		}
	}
	return out
}

// childrenCPU is the CPU time of this process's live children (engine workers), from
// /proc: user and system clock ticks.
func childrenCPU() time.Duration {
	var ticks int64
	for _, fields := range children() {
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		k, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += u + k
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// longRun is the long run's figures: RSS after start-up and warm-up, its growth over
// long demo-pipeline invokes, and the handles left.
func longRun(m *cpex.PluginManager, long int) figures {
	out := figures{}
	for i := 0; i < 20000; i++ { // reach steady state before the first reading
		pipeline(m)
	}
	runtime.GC()
	before := rssKB()
	for i := 0; i < long; i++ {
		pipeline(m)
	}
	runtime.GC()
	time.Sleep(200 * time.Millisecond)
	after := rssKB()
	out["go_long_invokes"] = float64(long)
	out["go_long_rss_start_mb"] = before / 1024
	out["go_long_rss_growth_mb"] = (after - before) / 1024
	out["go_long_rss_mb"] = after / 1024
	live, err := cpex.LiveHandles()
	if err != nil {
		log.Fatal(err)
	}
	out["go_long_live_handles"] = float64(live)
	return out
}

func main() {
	n := flag.Int("n", 20000, "invokes per latency figure")
	long := flag.Int("long", 0, "invokes of the long run (RSS growth, handles left), in a fresh process; 0 skips it")
	cpuCalls := flag.Int("cpu", 0, "only the demo pipeline's process CPU per call over this many calls, in batches of 500 (an A/B of two builds, run alternately)")
	label := flag.String("label", "", "with -cpu: the label printed before the figures")
	cpuPII := flag.Bool("pii", false, "with -cpu: the cpex-pii-filter call (a py-cpex plugin redacting a tool call) instead of the demo pipeline")
	cpuWorkers := flag.Int("workers", 0, "with -cpu: the demo pipeline with the engine in this many worker processes (engine_workers); their CPU is printed too")
	latency := flag.Bool("latency", false, "with -label: only the demo pipeline's and the no-audit pipeline's p50 / p99 over -n invokes each, in rounds of 1000 alternating between them (an A/B of two builds)")
	cpuCMF := flag.Bool("cmf", false, "with -cpu: the CMF demo pipeline (examples/configs/cmf.yaml) instead of the generic one")
	longOnly := flag.Bool("longrun", false, "internal: only the long run of -long invokes, in this process, printed as JSON")
	examples := flag.String("examples", "../examples", "the examples directory (configs, plugins)")
	cold := flag.Bool("cold", false, "internal: start, invoke once, print the elapsed time since -t0")
	t0 := flag.Int64("t0", 0, "internal: the parent's clock at exec, unix ns")
	cpuG := flag.Int("goroutines", 1, "with -cpu: each batch's calls spread over this many goroutines")
	tput := flag.Int("throughput", 0, "only the throughput figures, this many alternating rounds: in-process with 1 and 8 goroutines, and with the engine in -workers processes (default: one per core) with 1 and 8")
	isolationPlugins := flag.String("isolation", "", "only the isolation figures: a no-op plugin from this plugin directory, in-process and isolated (bench/isolation.py)")
	flag.Parse()
	if *isolationPlugins != "" {
		if err := json.NewEncoder(os.Stdout).Encode(isolationFigures(*n, *isolationPlugins)); err != nil {
			log.Fatal(err)
		}
		return
	}
	dir, err := filepath.Abs(*examples)
	if err != nil {
		log.Fatal(err)
	}
	if *cold {
		m := manager(dir)
		pipeline(m)
		fmt.Println(time.Since(time.Unix(0, *t0)).Milliseconds())
		return
	}
	if *cpuCalls > 0 && *cpuPII {
		m := piiManager()
		cpuPerCall(m, *cpuCalls, *label, piiCall)
		_ = m.Shutdown()
		return
	}
	if *tput > 0 {
		throughputRounds(dir, *tput, *cpuWorkers, *n)
		return
	}
	if *cpuCalls > 0 {
		if *cpuCMF {
			m := fileManager(filepath.Join(dir, "configs", "cmf.yaml"))
			cpuPerCall(m, *cpuCalls, *label, cmfPipeline)
			_ = m.Shutdown()
			return
		}
		m := managerWith(dir, *cpuWorkers)
		cpuPerCallG(m, *cpuCalls, *label, pipeline, *cpuG)
		_ = m.Shutdown()
		return
	}
	if *latency {
		m, noAudit := manager(dir), fileManager(filepath.Join(dir, "..", "bench", "configs", "generic-no-audit.yaml"))
		var with, without []time.Duration
		for done := 0; done < *n; done += 1000 {
			with = append(with, samples(1000, func() { pipeline(m) })...)
			without = append(without, samples(1000, func() { pipeline(noAudit) })...)
		}
		for _, s := range [][]time.Duration{with, without} {
			sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
		}
		fmt.Printf("%s demo p50 %.2f p99 %.2f | no-audit p50 %.2f p99 %.2f\n", *label, pct(with, 50), pct(with, 99), pct(without, 50), pct(without, 99))
		_ = noAudit.Shutdown()
		_ = m.Shutdown()
		return
	}
	if *longOnly {
		m := manager(dir)
		if err := json.NewEncoder(os.Stdout).Encode(longRun(m, *long)); err != nil {
			log.Fatal(err)
		}
		_ = m.Shutdown()
		return
	}

	m := manager(dir)
	defer m.Shutdown()
	out := figures{}
	s := samples(*n, func() { noPlugins(m) })
	out["go_no_plugins_p50"], out["go_no_plugins_p99"] = pct(s, 50), pct(s, 99)
	s = samples(*n, func() { pipeline(m) })
	out["go_pipeline_p50"], out["go_pipeline_p99"] = pct(s, 50), pct(s, 99)
	noAudit := fileManager(filepath.Join(dir, "..", "bench", "configs", "generic-no-audit.yaml"))
	s = samples(*n, func() { pipeline(noAudit) })
	out["go_pipeline_noaudit_p50"], out["go_pipeline_noaudit_p99"] = pct(s, 50), pct(s, 99)
	_ = noAudit.Shutdown()
	cmf := fileManager(filepath.Join(dir, "configs", "cmf.yaml"))
	s = samples(*n, func() { cmfPipeline(cmf) })
	out["go_cmf_p50"], out["go_cmf_p99"] = pct(s, 50), pct(s, 99)
	_ = cmf.Shutdown()
	pii := piiManager()
	s = samples(*n/4, func() { piiCall(pii) })
	out["go_pii_p50"], out["go_pii_p99"] = pct(s, 50), pct(s, 99)
	_ = pii.Shutdown()
	c0 := processCPU()
	out["go_1_throughput"], _, _ = concurrent(m, 1, *n)
	out["go_1_cpu_us"] = perCall(processCPU()-c0, *n)
	out["go_8_throughput"], out["go_8_p50"], out["go_8_p99"] = concurrent(m, 8, *n)
	// The engine in one worker process per core (plugin_settings.engine_workers).
	cores := runtime.NumCPU()
	workers := managerWith(dir, cores)
	for i := 0; i < 2000; i++ {
		pipeline(workers)
	}
	s = samples(*n, func() { pipeline(workers) })
	out["go_workers_pipeline_p50"], out["go_workers_pipeline_p99"] = pct(s, 50), pct(s, 99)
	out["go_workers_1_throughput"], _, _ = concurrent(workers, 1, *n)
	c0, k0 := processCPU(), childrenCPU()
	out["go_workers_8_throughput"], out["go_workers_8_p50"], out["go_workers_8_p99"] = concurrent(workers, 8, *n)
	// CPU per call of the host process and of the workers (from /proc, in clock ticks):
	// with the cores, the most calls/s the machine could give this design.
	out["go_workers_8_host_cpu_us"] = perCall(processCPU()-c0, *n/8*8)
	out["go_workers_8_workers_cpu_us"] = perCall(childrenCPU()-k0, *n/8*8)
	out["cores"] = float64(cores)
	_ = workers.Shutdown()

	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	var colds []float64
	for i := 0; i < 5; i++ {
		start := time.Now()
		raw, err := exec.Command(self, "-cold", "-examples", dir, "-t0", strconv.FormatInt(start.UnixNano(), 10)).Output()
		if err != nil {
			log.Fatalf("cold start: %v", err)
		}
		ms, _ := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
		colds = append(colds, ms)
	}
	sort.Float64s(colds)
	out["go_cold_start_ms"] = colds[len(colds)/2]

	if *long > 0 {
		// In a process of its own that loads only the demo pipeline: the figure is what
		// a gateway running that pipeline holds, not what this bench's other managers
		// and plugins (py-cpex, the PII filter, the CMF records) left behind.
		raw, err := exec.Command(self, "-longrun", "-long", strconv.Itoa(*long), "-examples", dir).Output()
		if err != nil {
			log.Fatalf("long run: %v", err)
		}
		var longFigures figures
		if err := json.Unmarshal(raw, &longFigures); err != nil {
			log.Fatalf("long run: %v (%q)", err, raw)
		}
		for k, v := range longFigures {
			out[k] = v
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
}

// isolationFigures: a no-op plugin's invoke from Go, in-process and in a worker
// process (isolation: process), same run.
func isolationFigures(n int, plugins string) figures {
	out := figures{}
	for _, isolation := range []string{"none", "process"} {
		cfg := fmt.Sprintf("plugin_settings: {plugin_dirs: [%q]}\nplugins:\n"+
			"  - {name: p, kind: 'cpex_isolation_plugins:NoOp', hooks: [tool_pre_invoke], isolation: %s}\n", plugins, isolation)
		m, err := cpex.NewPluginManager(cfg)
		if err != nil {
			log.Fatal(err)
		}
		if err := m.Initialize(); err != nil {
			log.Fatal(err)
		}
		s := samples(n, func() {
			res, _, _, err := m.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric, payload, nil, nil)
			if err != nil || res.IsDenied() || len(res.Errors) != 0 {
				log.Fatalf("no-op (%s): %v %+v", isolation, err, res)
			}
		})
		out["go_noop_"+isolation+"_p50"], out["go_noop_"+isolation+"_p99"] = pct(s, 50), pct(s, 99)
		_ = m.Shutdown()
	}
	return out
}
