// Package cpexfirst is the other order of package together: libcpex starts the
// process's interpreter, then libkv joins it (a separate test binary, so a separate
// process).
package cpexfirst

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	kv "github.com/cpex-dev/cpex/examples/codegen/kvstore/go"
	cpex "github.com/cpex-dev/cpex/sdk-go"
)

func TestCpexStartsFirstThenKv(t *testing.T) {
	m, err := cpex.NewPluginManager("plugins: []\n")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	if n, err := m.PluginCount(); err != nil || n != 0 {
		t.Fatalf("plugin count: %d, %v", n, err)
	}
	store, err := kv.StoreNew()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i)
			if err := kv.Put(store, key, []byte(key)); err != nil {
				t.Error(err)
			}
			if _, err := m.HasHooksFor("tool_pre_invoke"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n, err := kv.Count(store); err != nil || n != 8 {
		t.Fatalf("count: %d, %v", n, err)
	}
	if err := kv.StoreFree(store); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Count(store); !errors.Is(err, kv.ErrKvInvalidHandle) {
		t.Fatalf("count after free: %v", err)
	}
}
