package cpex

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Isolated plugins (isolation: process / thread) from a Go host: hard deadlines,
// crash survival, the stats, lifecycle, a host killed with SIGKILL, and two plugins
// pinning different versions of one package. sdk-python/tests/test_isolation.py
// covers the engine and the Python host.

// isolationSlack bounds a deadline in these tests: the feature's bound is timeout +
// 50 ms (measured in bench/), the suite allows more on a loaded machine.
const isolationSlack = time.Second

func isolatedPlugin(name, class string, extra ...string) string {
	s := fmt.Sprintf("  - name: %s\n    kind: cpex_isolation_plugins:%s\n    hooks: [tool_pre_invoke]\n", name, class)
	fields := append([]string{"isolation: process", "on_error: ignore"}, extra...)
	for _, e := range fields {
		if strings.HasPrefix(e, "isolation:") && e != fields[0] {
			s = strings.Replace(s, "    "+fields[0]+"\n", "", 1)
		}
		s += "    " + e + "\n"
	}
	return s
}

func isolationConfig(t testing.TB, timeout string, plugins ...string) string {
	cache, err := filepath.Abs("../build/venv-cache")
	if err != nil {
		t.Fatal(err)
	}
	return config(t, fmt.Sprintf("  plugin_timeout: %s\n  venv_cache_dir: %q\n", timeout, cache), plugins...)
}

// TestMain checks, after every test of the package, that no cpex worker process of
// this one is left (alive or zombie).
func TestMain(m *testing.M) {
	code := m.Run()
	if !eventually(10*time.Second, func() bool { return len(workerChildren()) == 0 }) {
		fmt.Fprintf(os.Stderr, "cpex worker processes left behind by the tests: %v\n", workerChildren())
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// The command-line marks of cpex worker processes: isolated plugins' and engine workers'.
const (
	isolationWorker = "cpexrt.engine.worker"
	engineWorker    = "cpexrt._boundary.engine_worker"
)

type childProcess struct {
	pid   int64
	state string // "Z" for a zombie
}

// childProcesses lists this process's children whose command line holds one of marks.
func childProcesses(marks ...string) []childProcess {
	entries, _ := os.ReadDir("/proc")
	var found []childProcess
	for _, e := range entries {
		pid, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 2 || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		for _, mark := range marks {
			if strings.Contains(string(cmdline), mark) {
				found = append(found, childProcess{pid, fields[0]})
				break
			}
		}
	}
	return found
}

// workerChildren lists this process's children that are cpex workers (zombies too).
func workerChildren() []string {
	var found []string
	for _, c := range childProcesses(isolationWorker, engineWorker) {
		found = append(found, strconv.FormatInt(c.pid, 10)+":"+c.state)
	}
	return found
}

func processAlive(pid int64) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0] != "Z"
}

func eventually(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ok()
}

// startedIsolated starts a manager whose cleanup shuts it down and then checks that
// no worker (and no zombie) of this process is left.
func startedIsolated(t *testing.T, yaml string) *PluginManager {
	t.Helper()
	m, err := NewPluginManager(yaml)
	if err != nil {
		t.Fatalf("NewPluginManager: %v", err)
	}
	t.Cleanup(func() {
		_ = m.Shutdown()
		if !eventually(10*time.Second, func() bool { return len(workerChildren()) == 0 }) {
			t.Errorf("workers left behind: %v", workerChildren())
		}
	})
	if err := m.Initialize(); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	return m
}

func statsOf(t *testing.T, m *PluginManager, name string) PluginStats {
	t.Helper()
	stats, err := m.PluginStats()
	if err != nil {
		t.Fatalf("PluginStats: %v", err)
	}
	for _, s := range stats {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stats for %q in %+v", name, stats)
	return PluginStats{}
}

func workersReady(t *testing.T, m *PluginManager, name string) bool {
	s := statsOf(t, m, name)
	return s.Alive == s.Workers && s.Busy == 0
}

func invokeTool(t *testing.T, m *PluginManager, payload map[string]any) *PipelineResult {
	t.Helper()
	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, payload, nil, nil)
	if err != nil {
		t.Fatalf("InvokeByName: %v", err)
	}
	if ctx != nil {
		_ = ctx.Close()
	}
	if bg != nil {
		_ = bg.Close()
	}
	return res
}

func TestIsolatedPluginBlockedInCReleasesTheGoCallerAtItsDeadline(t *testing.T) {
	for _, mode := range []string{"process", "thread"} {
		t.Run(mode, func(t *testing.T) {
			m := startedIsolated(t, isolationConfig(t, "0.5", isolatedPlugin("sl", "Sleeper", "isolation: "+mode)))
			began := time.Now()
			res := invokeTool(t, m, map[string]any{"sleep": 5})
			if took := time.Since(began); took > 500*time.Millisecond+isolationSlack {
				t.Fatalf("the call took %v; the plugin's timeout is 0.5s", took)
			}
			if len(res.Errors) != 1 || res.Errors[0].Code != "plugin_timeout" || res.Errors[0].PluginName != "sl" {
				t.Fatalf("errors %+v, want sl's plugin_timeout", res.Errors)
			}
			s := statsOf(t, m, "sl")
			if s.Isolation != mode || s.Timeouts != 1 {
				t.Fatalf("stats %+v", s)
			}
			if mode == "thread" && s.Stuck != 1 {
				t.Fatalf("stuck %d, want 1 (the abandoned call is still sleeping)", s.Stuck)
			}
		})
	}
}

func TestIsolatedWorkerCrashesAreThePluginsErrorFromGo(t *testing.T) {
	cases := []struct{ how, extra, want string }{
		{"exit", "", "exited with status 3"},
		{"segv", "", "was killed by SIGSEGV"},
		{"hog", "max_memory_mb: 512", "passed its memory limit (max_memory_mb 512)"},
	}
	for _, c := range cases {
		t.Run(c.how, func(t *testing.T) {
			extra := []string{}
			if c.extra != "" {
				extra = append(extra, c.extra)
			}
			m := startedIsolated(t, isolationConfig(t, "5", isolatedPlugin("c", "Crasher", extra...)))
			res := invokeTool(t, m, map[string]any{"how": c.how})
			if len(res.Errors) != 1 || res.Errors[0].Code != "worker_crashed" || !strings.Contains(res.Errors[0].Message, c.want) {
				t.Fatalf("errors %+v, want c's worker_crashed with %q", res.Errors, c.want)
			}
			if !eventually(10*time.Second, func() bool { return workersReady(t, m, "c") }) {
				t.Fatalf("no replacement worker: %+v", statsOf(t, m, "c"))
			}
			if s := statsOf(t, m, "c"); s.Crashes != 1 || s.Restarts != 1 || s.Circuit != "closed" {
				t.Fatalf("stats %+v", s)
			}
			if res := invokeTool(t, m, map[string]any{}); len(res.Errors) != 0 {
				t.Fatalf("after the restart: %+v", res.Errors)
			}
		})
	}
}

func TestIsolatedWorkerKilledFromOutsideMidCall(t *testing.T) {
	m := startedIsolated(t, isolationConfig(t, "10", isolatedPlugin("sl", "Sleeper")))
	pid := statsOf(t, m, "sl").Pids[0]
	time.AfterFunc(300*time.Millisecond, func() { _ = syscall.Kill(int(pid), syscall.SIGKILL) })
	res := invokeTool(t, m, map[string]any{"sleep": 5})
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, fmt.Sprintf("its worker (pid %d) was killed by SIGKILL", pid)) {
		t.Fatalf("errors %+v", res.Errors)
	}
}

func TestIsolatedIdleWorkerKilledFromOutsideFailsTheNextCallNotTheHost(t *testing.T) {
	m := startedIsolated(t, isolationConfig(t, "5", isolatedPlugin("n", "NoOp")))
	pid := statsOf(t, m, "n").Pids[0]
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// The request is written to a dead worker: the plugin's error, never a SIGPIPE.
	res := invokeTool(t, m, map[string]any{})
	if len(res.Errors) != 1 || res.Errors[0].Code != "worker_crashed" ||
		!strings.Contains(res.Errors[0].Message, fmt.Sprintf("its worker (pid %d) was killed by SIGKILL", pid)) {
		t.Fatalf("errors %+v", res.Errors)
	}
	if !eventually(10*time.Second, func() bool { return workersReady(t, m, "n") }) {
		t.Fatalf("no replacement: %+v", statsOf(t, m, "n"))
	}
}

func TestIsolatedShutdownDrainsCallsInFlight(t *testing.T) {
	m, err := NewPluginManager(isolationConfig(t, "5", isolatedPlugin("sl", "Sleeper", "on_error: fail")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	pids := statsOf(t, m, "sl").Pids
	var wg sync.WaitGroup
	var res *PipelineResult
	var callErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, _, _, callErr = m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"sleep": 0.5}, nil, nil)
	}()
	time.Sleep(200 * time.Millisecond)
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if callErr != nil || res == nil || res.Metadata["slept"] != 0.5 {
		t.Fatalf("the call in flight: %+v, %v", res, callErr)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Fatalf("worker %d alive after Shutdown", pid)
		}
	}
	if left := workerChildren(); len(left) != 0 {
		t.Fatalf("workers left: %v", left)
	}
}

// The helper process of TestIsolatedWorkersDieWithAGoHostKilledBySIGKILL.
func TestIsolationHostProcess(t *testing.T) {
	if os.Getenv("CPEX_ISOLATION_HOST") != "1" {
		t.Skip("the helper host of TestIsolatedWorkersDieWithAGoHostKilledBySIGKILL")
	}
	m, err := NewPluginManager(isolationConfig(t, "120", isolatedPlugin("sl", "Sleeper"), isolatedPlugin("n", "NoOp", "workers: 2")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	stats, _ := m.PluginStats()
	var pids []string
	for _, s := range stats {
		for _, p := range s.Pids {
			pids = append(pids, strconv.FormatInt(p, 10))
		}
	}
	fmt.Println("PIDS " + strings.Join(pids, " "))
	_, _, _, _ = m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"sleep": 60}, nil, nil)
}

func TestIsolatedWorkersDieWithAGoHostKilledBySIGKILL(t *testing.T) {
	host, pids := helperHostWorkers(t, "^TestIsolationHostProcess$", "CPEX_ISOLATION_HOST", 3)
	time.Sleep(300 * time.Millisecond) // one worker is mid-call
	killHostCheckWorkers(t, host, pids)
}

// helperHostWorkers starts this test binary running only the test run, with env set
// to 1, and reads the worker pids it prints on its "PIDS " line; the test fails
// unless there are want of them.
func helperHostWorkers(t *testing.T, run, env string, want int) (*exec.Cmd, []int64) {
	t.Helper()
	host := exec.Command(os.Args[0], "-test.run="+run, "-test.v")
	host.Env = append(os.Environ(), env+"=1")
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int64
	scanner := bufio.NewScanner(out)
	for scanner.Scan() {
		if line, ok := strings.CutPrefix(scanner.Text(), "PIDS "); ok {
			for _, f := range strings.Fields(line) {
				pid, _ := strconv.ParseInt(f, 10, 64)
				pids = append(pids, pid)
			}
			break
		}
	}
	if len(pids) != want {
		_ = host.Process.Kill()
		_ = host.Wait()
		t.Fatalf("the helper host reported workers %v, want %d", pids, want)
	}
	return host, pids
}

// killHostCheckWorkers kills the helper host with SIGKILL; its workers must end with it.
func killHostCheckWorkers(t *testing.T, host *exec.Cmd, pids []int64) {
	t.Helper()
	_ = host.Process.Signal(syscall.SIGKILL)
	_ = host.Wait()
	if !eventually(5*time.Second, func() bool {
		for _, pid := range pids {
			if processAlive(pid) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("workers %v outlived their host", pids)
	}
}

func TestIsolatedPluginsPinDifferentVersionsOfOnePackageFromGo(t *testing.T) {
	m := startedIsolated(t, isolationConfig(t, "30",
		isolatedPlugin("new", "SixVersion", "requirements: ['six==1.16.0']", "on_error: fail", "config: {key: six_new}"),
		isolatedPlugin("old", "SixVersion", "requirements: ['six==1.15.0']", "on_error: fail", "config: {key: six_old}"),
	))
	res := invokeTool(t, m, map[string]any{})
	if res.Metadata["six_new"] != "1.16.0" || res.Metadata["six_old"] != "1.15.0" || len(res.Errors) != 0 {
		t.Fatalf("six versions seen: %v (errors %+v), want new 1.16.0 and old 1.15.0", res.Metadata, res.Errors)
	}
	for _, name := range []string{"new", "old"} {
		if s := statsOf(t, m, name); s.Alive != 1 || s.Crashes != 0 {
			t.Fatalf("%s: %+v", name, s)
		}
	}
}
