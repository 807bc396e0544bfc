package cpex

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A failed Initialize rolls back the plugins already initialized.

func TestInitializeRollsBackInReverseOrder(t *testing.T) {
	log := filepath.Join(t.TempDir(), "lifecycle.log")
	entry := func(tag, extra string) string {
		return plugin(tag, "LifecycleLog", pre, fmt.Sprintf("config: {tag: %s, log: %q%s}", tag, log, extra))
	}
	m, err := NewPluginManager(config(t, "", entry("p1", ""), entry("p2", ""), entry("p3", ", fail_initialize: true")))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	err = m.Initialize()
	if !errors.Is(err, ErrCpexPipeline) || !strings.Contains(err.Error(), "plugin 'p3': initialize raised ValueError: p3 cannot start") {
		t.Fatalf("Initialize: %v, want a pipeline error naming p3", err)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"initialize p1", "initialize p2", "initialize p3", "shutdown p2", "shutdown p1"}
	if got := strings.Split(strings.TrimSpace(string(data)), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("lifecycle steps %v, want %v", got, want)
	}
	if ok, err := m.IsInitialized(); err != nil || ok {
		t.Fatalf("IsInitialized after a failed Initialize = %v, %v", ok, err)
	}
}
