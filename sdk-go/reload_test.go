package cpex

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The hot-reload probe is the Stamp test plugin: it appends its config.gen to
// payload["stamps"], so a result tells which plugin set served it, and with config.log
// it writes "initialize / entered / served / shutdown <gen>" lines to a file.

const stampHooks = "[tool_pre_invoke, tool_post_invoke, reload.a, reload.b]"

type stamped struct {
	Stamps []int64 `msgpack:"stamps,omitempty"`
}

func stamp(name string, gen int, hooks string, cfg ...string) string {
	items := append([]string{fmt.Sprintf("gen: %d", gen)}, cfg...)
	return plugin(name, "Stamp", hooks, "config: {"+strings.Join(items, ", ")+"}")
}

// stampsOf is the stamps of an invoke's modified payload; nil when nothing modified it.
func stampsOf(t testing.TB, m *PluginManager, hook string, ctx *ContextTable) ([]int64, *TypedPipelineResult[stamped], *ContextTable, error) {
	t.Helper()
	res, out, bg, err := Invoke(m, hook, PayloadGeneric, stamped{}, nil, ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if bg != nil {
		bg.Close()
	}
	if res.ModifiedPayload == nil {
		return nil, res, out, nil
	}
	return res.ModifiedPayload.Stamps, res, out, nil
}

func mustStamps(t testing.TB, m *PluginManager, hook string) []int64 {
	t.Helper()
	got, _, ctx, err := stampsOf(t, m, hook, nil)
	if err != nil {
		t.Fatalf("%s: %v", hook, err)
	}
	if ctx != nil {
		ctx.Close()
	}
	return got
}

func logLines(t testing.TB, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// layout is the config of generation gen: two Stamp plugins on tool_pre_invoke and on
// reload.a (even generations) or reload.b (odd ones). A call served by one set is
// stamped [gen, gen] on a hook the set handles, and answered unchanged (by the C fast
// path: generic payload, no context) on the hook it does not.
func layout(t testing.TB, gen int) string {
	hook := "reload.a"
	if gen%2 == 1 {
		hook = "reload.b"
	}
	hooks := "[tool_pre_invoke, " + hook + "]"
	return config(t, "", stamp("s1", gen, hooks), stamp("s2", gen, hooks))
}

// judge says what is wrong with got as hook's answer from a call that began after
// generation lo was serving and ended before generation hi+1 was started; "" when it
// is one generation's whole answer.
func judge(hook string, got []int64, lo, hi int64) string {
	if got == nil {
		if hook == "tool_pre_invoke" {
			return fmt.Sprintf("%s: unchanged, but every generation has plugins on it", hook)
		}
		want := int64(1) // reload.a is unchanged in odd generations
		if hook == "reload.b" {
			want = 0
		}
		for g := lo; g <= hi; g++ {
			if g%2 == want {
				return ""
			}
		}
		return fmt.Sprintf("%s: unchanged, but generations %d..%d all have plugins on it (a stale fast path?)", hook, lo, hi)
	}
	if len(got) != 2 || got[0] != got[1] {
		return fmt.Sprintf("%s: stamps %v: not one set's answer", hook, got)
	}
	gen := got[0]
	if gen < lo || gen > hi {
		return fmt.Sprintf("%s: served by generation %d, outside %d..%d", hook, gen, lo, hi)
	}
	if hook != "tool_pre_invoke" && (hook == "reload.a") != (gen%2 == 0) {
		return fmt.Sprintf("%s: stamped by generation %d, which has no plugin on it", hook, gen)
	}
	return ""
}

// 8 goroutines invoke continuously while the test reloads between the two layouts
// many times: every call returns, without error, exactly one set's answer, and never
// that of a set replaced before the call began or started after it ended.
func TestReloadUnderConcurrentLoad(t *testing.T) {
	const workers, reloads = 8, 40
	handlesBefore, err := LiveHandles()
	if err != nil {
		t.Fatal(err)
	}
	m := started(t, layout(t, 0))
	var startedGen, completedGen, settled, calls atomic.Int64
	var stop atomic.Bool
	var mu sync.Mutex
	var failures []string
	fail := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, msg)
		}
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failures) > 0
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for _, hook := range []string{"tool_pre_invoke", "reload.a", "reload.b"} {
					lo := completedGen.Load()
					got, _, ctx, err := stampsOf(t, m, hook, nil)
					hi := startedGen.Load()
					calls.Add(1)
					if err != nil {
						fail(fmt.Sprintf("%s: %v", hook, err))
						return
					}
					if (ctx != nil) != (got != nil) { // Stamp keeps state
						fail(fmt.Sprintf("%s: stamps %v with context table %v", hook, got, ctx))
					}
					if ctx != nil {
						ctx.Close()
					}
					if msg := judge(hook, got, lo, hi); msg != "" {
						fail(msg)
					}
					if lo == hi {
						settled.Add(1)
					}
				}
			}
		}()
	}
	for gen := 1; gen <= reloads && !failed(); gen++ {
		startedGen.Store(int64(gen))
		if err := m.ReloadConfig(layout(t, gen)); err != nil {
			t.Fatalf("reload %d: %v", gen, err)
		}
		completedGen.Store(int64(gen))
		// Calls run on the new set alone as well, not only across the reload.
		target := settled.Load() + 3*workers
		waitFor(t, "calls after the reload", func() bool { return settled.Load() >= target || failed() })
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d calls, wrong answers:\n%s", calls.Load(), strings.Join(failures, "\n"))
	}
	if names, err := m.PluginNames(); err != nil || !reflect.DeepEqual(names, []string{"s1", "s2"}) {
		t.Fatalf("PluginNames = %v, %v", names, err)
	}
	// every context table and background handle of the old sets was released
	if after, err := LiveHandles(); err != nil || after != handlesBefore {
		t.Fatalf("live handles: %d before, %d after (%v)", handlesBefore, after, err)
	}
	t.Logf("%d calls across %d reloads", calls.Load(), reloads)
}

func TestReloadSwapsPluginsAndQueriesFollow(t *testing.T) {
	m := started(t, config(t, "", stamp("a", 1, stampHooks), stamp("b", 1, pre)))
	if got := mustStamps(t, m, "tool_pre_invoke"); !reflect.DeepEqual(got, []int64{1, 1}) {
		t.Fatalf("before: %v", got)
	}
	if err := m.ReloadConfig(config(t, "", stamp("c", 2, pre), plugin("k", "Custom", "[my.custom-hook]"))); err != nil {
		t.Fatal(err)
	}
	if got := mustStamps(t, m, "tool_pre_invoke"); !reflect.DeepEqual(got, []int64{2}) {
		t.Fatalf("after: %v", got)
	}
	if got := mustStamps(t, m, "reload.a"); got != nil {
		t.Fatalf("reload.a lost its plugins, still stamped %v", got)
	}
	names, err := m.PluginNames()
	if err != nil || !reflect.DeepEqual(names, []string{"c", "k"}) {
		t.Fatalf("PluginNames = %v, %v", names, err)
	}
	if n, err := m.PluginCount(); err != nil || n != 2 {
		t.Fatalf("PluginCount = %d, %v", n, err)
	}
	for hook, want := range map[string]bool{"my.custom-hook": true, "reload.a": false, "tool_pre_invoke": true} {
		if has, err := m.HasHooksFor(hook); err != nil || has != want {
			t.Fatalf("HasHooksFor(%q) = %v, %v", hook, has, err)
		}
	}
	if ok, err := m.IsInitialized(); err != nil || !ok {
		t.Fatalf("IsInitialized = %v, %v", ok, err)
	}
}

func TestReloadWithABadConfigKeepsTheOldServing(t *testing.T) {
	dir := t.TempDir()
	newLog := filepath.Join(dir, "new.log")
	m := started(t, config(t, "", stamp("a", 1, stampHooks)))
	cases := []struct {
		name, yaml string
		want       error
		message    string
	}{
		{"parse", "plugins: [", ErrCpexParse, "YAML syntax error"},
		{"field", config(t, "", plugin("x", "Stamp", pre, "mode: nope")), ErrCpexConfig, "plugins[0].mode"},
		{"import", config(t, "", "  - {name: x, kind: 'no_such_module_anywhere:Plugin', hooks: [tool_pre_invoke]}\n"), ErrCpexConfig, "cannot import module 'no_such_module_anywhere'"},
		{"initialize", config(t, "", stamp("x", 2, pre, "log: "+quoted(newLog)), stamp("y", 2, pre, "log: "+quoted(newLog), "fail_initialize: true")),
			ErrCpexPipeline, "plugin 'y': initialize raised ValueError: gen 2 cannot start"},
	}
	for _, c := range cases {
		err := m.ReloadConfig(c.yaml)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.message) {
			t.Fatalf("%s: err = %v, want %v with %q", c.name, err, c.want, c.message)
		}
		if got := mustStamps(t, m, "tool_pre_invoke"); !reflect.DeepEqual(got, []int64{1}) {
			t.Fatalf("%s: the old set stopped serving: %v", c.name, got)
		}
		if got := mustStamps(t, m, "reload.b"); !reflect.DeepEqual(got, []int64{1}) {
			t.Fatalf("%s: reload.b (fast path) = %v", c.name, got)
		}
		if names, err := m.PluginNames(); err != nil || !reflect.DeepEqual(names, []string{"a"}) {
			t.Fatalf("%s: PluginNames = %v, %v", c.name, names, err)
		}
	}
	// x was initialized, then shut down again when y failed.
	if got := logLines(t, newLog); !reflect.DeepEqual(got, []string{"initialize 2", "initialize 2", "shutdown 2"}) {
		t.Fatalf("new plugins' lifecycle = %v", got)
	}
}

func quoted(s string) string { return fmt.Sprintf("%q", s) }

func TestReloadInFlightCallsFinishOnTheOldSet(t *testing.T) {
	dir := t.TempDir()
	oldLog, newLog := filepath.Join(dir, "old.log"), filepath.Join(dir, "new.log")
	m := started(t, config(t, "", stamp("slow", 1, pre, "log: "+quoted(oldLog), "seconds: 1")))
	slow := make(chan []int64, 1)
	go func() {
		got, _, _, err := stampsOf(t, m, "tool_pre_invoke", nil)
		if err != nil {
			t.Errorf("slow call: %v", err)
		}
		slow <- got
	}()
	waitFor(t, "the slow call to enter its plugin", func() bool {
		return len(logLines(t, oldLog)) >= 2
	})
	reloaded := make(chan error, 1)
	go func() {
		reloaded <- m.ReloadConfig(config(t, "", stamp("quick", 2, stampHooks, "log: "+quoted(newLog))))
	}()
	// reload.a: the old set has no plugin on it, the new set stamps it.
	waitFor(t, "the new set to serve", func() bool {
		got := mustStamps(t, m, "reload.a")
		return reflect.DeepEqual(got, []int64{2})
	})
	select {
	case got := <-slow:
		t.Fatalf("the slow call ended (%v) before the swap; the test proves nothing", got)
	case err := <-reloaded:
		t.Fatalf("ReloadConfig returned (%v) while a call ran on the old set", err)
	default:
	}
	if got := <-slow; !reflect.DeepEqual(got, []int64{1}) {
		t.Fatalf("the in-flight call was served by %v, not the old set", got)
	}
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if got := logLines(t, oldLog); !reflect.DeepEqual(got, []string{"initialize 1", "entered 1", "served 1", "shutdown 1"}) {
		t.Fatalf("old plugins' lifecycle = %v", got)
	}
}

func TestReloadContextTables(t *testing.T) {
	keep := stamp("keep", 1, stampHooks)
	m := started(t, config(t, "", keep, stamp("gone", 1, stampHooks)))
	_, _, ctx, err := stampsOf(t, m, "tool_pre_invoke", nil)
	if err != nil || ctx == nil {
		t.Fatalf("first hook: ctx=%v err=%v", ctx, err)
	}
	// keep: same name, kind and config, so its state carries over; gone: dropped.
	if err := m.ReloadConfig(config(t, "", keep, stamp("new", 2, stampHooks))); err != nil {
		t.Fatal(err)
	}
	got, _, ctx2, err := stampsOf(t, m, "tool_post_invoke", ctx)
	if err != nil || !reflect.DeepEqual(got, []int64{1, 2}) || ctx2 == nil {
		t.Fatalf("across the reload: stamps=%v ctx=%v err=%v", got, ctx2, err)
	}
	// another config for "keep": its state cannot carry over, and the table survives
	if err := m.ReloadConfig(config(t, "", stamp("keep", 3, stampHooks))); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = stampsOf(t, m, "tool_post_invoke", ctx2)
	if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "plugin 'keep' holds state in it but was reloaded with another config") {
		t.Fatalf("stale table: err = %v", err)
	}
	got, res, ctx3, err := stampsOf(t, m, "tool_post_invoke", nil)
	if err != nil || !reflect.DeepEqual(got, []int64{3}) || fmt.Sprint(res.Metadata["calls"]) != "1" {
		t.Fatalf("without the table: %v %+v %v", got, res, err)
	}
	ctx3.Close()
	// The refused table was left usable: back on keep's old config, its state counts on.
	if err := m.ReloadConfig(config(t, "", keep)); err != nil {
		t.Fatal(err)
	}
	got, res, ctx4, err := stampsOf(t, m, "tool_post_invoke", ctx2)
	if err != nil || !reflect.DeepEqual(got, []int64{1}) || fmt.Sprint(res.Metadata["calls"]) != "3" {
		t.Fatalf("the refused table, reused: %v %+v %v", got, res, err)
	}
	ctx4.Close()
}

func TestReloadNeedsAnInitializedLiveManager(t *testing.T) {
	m, err := NewPluginManager(config(t, "", stamp("a", 1, pre)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ReloadConfig(config(t, "", stamp("a", 2, pre))); !errors.Is(err, ErrCpexPipeline) || !strings.Contains(err.Error(), "not initialized") {
		t.Fatalf("before Initialize: %v", err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := m.ReloadConfig(config(t, "", stamp("a", 2, pre))); err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := m.ReloadConfig(config(t, "", stamp("a", 3, pre))); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("after Shutdown: %v", err)
	}
	var nilManager *PluginManager
	if err := nilManager.ReloadConfigFile("x.yaml"); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("nil manager: %v", err)
	}
}

func TestReloadConfigFileTakesPluginDirsFromItsFolder(t *testing.T) {
	deploy := t.TempDir()
	for _, d := range []string{"conf", "my_plugins"} {
		if err := os.Mkdir(filepath.Join(deploy, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A module of its own, importable only through the relative plugin_dirs.
	write(filepath.Join(deploy, "my_plugins", "go_reload_file_plugins.py"),
		"from cpexrt import Plugin, modify\n\n\nclass FromFile(Plugin):\n"+
			"    def tool_pre_invoke(self, payload, ctx):\n        return modify({**payload, 'stamps': [99]})\n")
	conf := filepath.Join(deploy, "conf", "cpex.yaml")
	write(conf, "plugin_settings:\n  plugin_dirs: [../my_plugins]\nplugins:\n"+
		"  - {name: f, kind: 'go_reload_file_plugins:FromFile', hooks: [tool_pre_invoke]}\n")
	m := started(t, config(t, "", stamp("a", 1, pre)))
	if err := m.ReloadConfigFile(filepath.Join(deploy, "conf", "missing.yaml")); !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "cannot read the config file") {
		t.Fatalf("missing file: %v", err)
	}
	if got := mustStamps(t, m, "tool_pre_invoke"); !reflect.DeepEqual(got, []int64{1}) {
		t.Fatalf("after a failed reload: %v", got)
	}
	if err := m.ReloadConfigFile(conf); err != nil {
		t.Fatal(err)
	}
	if got := mustStamps(t, m, "tool_pre_invoke"); !reflect.DeepEqual(got, []int64{99}) {
		t.Fatalf("after reloading the file: %v", got)
	}
}

// Shutdown during a reload waits for it: every plugin initialized, of either set, is
// shut down exactly once, and the manager is gone afterwards.
func TestShutdownDuringAReload(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "lifecycle.log")
	lifecycle := func(tag string, seconds string) string {
		return plugin(tag, "LifecycleLog", pre, fmt.Sprintf("config: {tag: %s, log: %q, initialize_seconds: %s}", tag, logPath, seconds))
	}
	m, err := NewPluginManager(config(t, "", lifecycle("old", "0")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- m.ReloadConfig(config(t, "", lifecycle("new", "0.3"))) }()
	waitFor(t, "the new plugin's initialize to begin", func() bool { return len(logLines(t, logPath)) >= 2 })
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	err = <-reloaded
	if err != nil && !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("ReloadConfig racing Shutdown: %v", err)
	}
	want := []string{"initialize old", "initialize new", "shutdown old", "shutdown new"}
	if got := logLines(t, logPath); !reflect.DeepEqual(got, want) {
		t.Fatalf("lifecycle = %v, want %v", got, want)
	}
	if _, err := m.PluginCount(); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("after Shutdown: %v", err)
	}
}
