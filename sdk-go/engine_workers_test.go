package cpex

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Engine workers (plugin_settings.engine_workers) from a Go host: answers, request
// state threaded to its worker, background waits, handles, goroutines calling at once,
// a worker that dies or hangs failing only its call, decision records, and workers
// dying with a host killed by SIGKILL. sdk-python/tests/test_engine_workers.py covers
// the Python host.

func engineWorkersConfig(t testing.TB, workers int, settings string, plugins ...string) string {
	return config(t, fmt.Sprintf("  engine_workers: %d\n%s", workers, settings), plugins...)
}

// engineWorkerChildren lists this process's live engine worker processes.
func engineWorkerChildren() []int64 {
	var found []int64
	for _, c := range childProcesses(engineWorker) {
		if c.state != "Z" {
			found = append(found, c.pid)
		}
	}
	return found
}

// inEngine is a plugin of cpex_isolation_plugins run in the engine's own process.
func inEngine(name, class string) string {
	return fmt.Sprintf("  - name: %s\n    kind: cpex_isolation_plugins:%s\n    hooks: [tool_pre_invoke]\n    on_error: ignore\n", name, class)
}

func TestEngineWorkersAnswerFromGo(t *testing.T) {
	before, _ := LiveHandles()
	m := startedIsolated(t, engineWorkersConfig(t, 2, "",
		plugin("deny", "DenyWhenBlocked", "[tool_pre_invoke]"),
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]"),
		plugin("rec", "Recorder", "[tool_pre_invoke]", "mode: fire_and_forget")))
	if n := len(engineWorkerChildren()); n != 2 {
		t.Fatalf("%d engine workers, want 2", n)
	}
	if n, err := m.EngineWorkers(); n != 2 || err != nil {
		t.Fatalf("EngineWorkers: %d, %v", n, err)
	}
	res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"id": 1}, nil, nil)
	if err != nil || !res.ContinueProcessing || ctx == nil || bg == nil {
		t.Fatalf("pre: %+v %v %v %v", res, ctx, bg, err)
	}
	if errs, err := bg.Wait(); err != nil || len(errs) != 0 {
		t.Fatalf("background: %v %v", errs, err)
	}
	_ = bg.Close()
	post, ctx2, bg2, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{"id": 1}, nil, ctx)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	if post.Metadata["calls"] != int64(2) {
		t.Fatalf("the post call did not see the pre call's state: metadata %v", post.Metadata)
	}
	if ctx2 != nil {
		_ = ctx2.Close()
	}
	if bg2 != nil {
		_ = bg2.Close()
	}
	denied, _, bg3, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"block": true, "fail": true}, nil, nil)
	if err != nil || denied.ContinueProcessing || denied.Violation == nil || denied.Violation.Code != "blocked" {
		t.Fatalf("deny: %+v %v", denied, err)
	}
	if bg3 != nil {
		_ = bg3.Close()
	}
	if after, _ := LiveHandles(); after != before {
		t.Fatalf("live handles %d after, %d before", after, before)
	}
}

func TestEngineWorkersServeGoroutinesAtOnce(t *testing.T) {
	m := startedIsolated(t, engineWorkersConfig(t, 2, "", plugin("deny", "DenyWhenBlocked", "[tool_pre_invoke]")))
	var wg sync.WaitGroup
	var denied, failed atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				res, ctx, bg, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"block": (i+g)%4 == 0}, nil, nil)
				if err != nil {
					failed.Add(1)
					continue
				}
				if !res.ContinueProcessing {
					denied.Add(1)
				}
				if ctx != nil {
					_ = ctx.Close()
				}
				if bg != nil {
					_ = bg.Close()
				}
			}
		}(g)
	}
	wg.Wait()
	if failed.Load() != 0 || denied.Load() != 8*50 {
		t.Fatalf("failed %d, denied %d (want 0, 400)", failed.Load(), denied.Load())
	}
}

func TestEngineWorkerDeathFailsItsCallFromGo(t *testing.T) {
	m := startedIsolated(t, engineWorkersConfig(t, 1, "", inEngine("c", "Crasher")))
	first := engineWorkerChildren()
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"how": "exit"}, nil, nil)
	if err == nil || !errors.Is(err, ErrCpexPanic) || !strings.Contains(err.Error(), "stopped during the call") {
		t.Fatalf("a dead engine worker gave %+v, %v; want the call failed", res, err)
	}
	if !eventually(15*time.Second, func() bool {
		now := engineWorkerChildren()
		if len(now) != 1 || now[0] == first[0] {
			return false
		}
		_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
		return err == nil
	}) {
		t.Fatalf("the engine worker was not replaced: %v", engineWorkerChildren())
	}
}

func TestEngineWorkerStuckInCReleasesTheGoCaller(t *testing.T) {
	m := startedIsolated(t, engineWorkersConfig(t, 1, "  invoke_timeout: 0.5\n", inEngine("sl", "Sleeper")))
	began := time.Now()
	_, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{"sleep": 30}, nil, nil)
	if !errors.Is(err, ErrCpexTimeout) {
		t.Fatalf("err %v, want ErrCpexTimeout", err)
	}
	if took := time.Since(began); took > 750*time.Millisecond+isolationSlack {
		t.Fatalf("the caller waited %v", took)
	}
}

func TestEngineWorkersDecisionRecordsFromGo(t *testing.T) {
	m := startedIsolated(t, engineWorkersConfig(t, 2, "", plugin("deny", "DenyWhenBlocked", "[tool_pre_invoke]")))
	var mu sync.Mutex
	var got []DecisionRecord
	if err := m.SetDecisionSink(func(r DecisionRecord) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		invokeTool(t, m, map[string]any{"block": i%2 == 0})
	}
	if !eventually(10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 10 }) {
		t.Fatalf("%d decision records, want 10", len(got))
	}
}

func TestEngineWorkersHostProcess(t *testing.T) {
	if os.Getenv("CPEX_ENGINE_WORKERS_HOST") != "1" {
		t.Skip("the helper host of TestEngineWorkersDieWithAGoHostKilledBySIGKILL")
	}
	m, err := NewPluginManager(engineWorkersConfig(t, 2, "", plugin("a", "Allow", "[tool_pre_invoke]")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, p := range engineWorkerChildren() {
		pids = append(pids, strconv.FormatInt(p, 10))
	}
	fmt.Println("PIDS " + strings.Join(pids, " "))
	time.Sleep(60 * time.Second)
}

func TestEngineWorkersDieWithAGoHostKilledBySIGKILL(t *testing.T) {
	host, pids := helperHostWorkers(t, "^TestEngineWorkersHostProcess$", "CPEX_ENGINE_WORKERS_HOST", 2)
	killHostCheckWorkers(t, host, pids)
}
