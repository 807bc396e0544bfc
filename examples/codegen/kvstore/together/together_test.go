// Package together loads libcpex and libkv, two libraries made by cpex_codegen, into one
// Go process: each exports only its own prefix (cpex_*, kv_*), so nothing clashes, and
// both run on the process's one embedded Python interpreter.
package together

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kv "github.com/cpex-dev/cpex/examples/codegen/kvstore/go"
	cpex "github.com/cpex-dev/cpex/sdk-go"
)

func cpexConfig(t *testing.T) string {
	dir, err := filepath.Abs("../../../../tests/plugins")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
plugin_settings: {plugin_dirs: [%q]}
plugins:
  - name: guard
    kind: cpex_test_plugins:DenyWhenBlocked
    hooks: [tool_pre_invoke]
`, dir)
}

func TestBothLibrariesInOneProcess(t *testing.T) {
	// Each library answers its own version and build info.
	major, minor, info := cpex.LibraryVersion()
	if major != cpex.ABIVersionMajor || minor < cpex.ABIVersionMinor {
		t.Fatalf("libcpex reports ABI %d.%d", major, minor)
	}
	if err := kv.CheckVersion(); err != nil {
		t.Fatal(err)
	}
	kvABI := fmt.Sprintf(`"abi": "%d.%d"`, kv.ABIVersionMajor, kv.ABIVersionMinor)
	cpexABI := fmt.Sprintf(`"abi": "%d.%d"`, major, minor)
	if !strings.Contains(kv.BuildInfo(), kvABI) || !strings.Contains(info, cpexABI) {
		t.Fatalf("build info: libkv %s, libcpex %s", kv.BuildInfo(), info)
	}

	// kv first: it may start the interpreter, cpex then shares it (and the other way
	// round in a process that starts with cpex).
	store, err := kv.StoreNew()
	if err != nil {
		t.Fatal(err)
	}
	m, err := cpex.NewPluginManager(cpexConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}

	// Interleaved, concurrent calls into both libraries.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i)
			if err := kv.Put(store, key, []byte(key)); err != nil {
				errs <- err
				return
			}
			res, _, _, err := m.InvokeByName("tool_pre_invoke", cpex.PayloadGeneric,
				map[string]any{"tool_name": key, "block": i%2 == 0}, nil, nil)
			if err != nil {
				errs <- err
				return
			}
			if res.ContinueProcessing == (i%2 == 0) {
				errs <- fmt.Errorf("%s: continue_processing %t", key, res.ContinueProcessing)
				return
			}
			got, err := kv.Get(store, key)
			if err != nil || string(got) != key {
				errs <- fmt.Errorf("get %s: %q, %v", key, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := kv.Count(store); err != nil || n != 8 {
		t.Fatalf("count: %d, %v", n, err)
	}

	// Each library's errors are its own, with their messages.
	_, err = kv.Get(store, "nope")
	var kvErr *kv.Error
	if !errors.Is(err, kv.ErrKvNotFound) || !errors.As(err, &kvErr) || kvErr.Message != "kv_get: key 'nope'" {
		t.Fatalf("kv error: %#v", err)
	}
	if err := m.LoadConfig("plugins: ["); !errors.Is(err, cpex.ErrCpexParse) {
		t.Fatalf("cpex error: %v", err)
	}

	if err := kv.StoreFree(store); err != nil {
		t.Fatal(err)
	}
	if err := kv.StoreFree(store); !errors.Is(err, kv.ErrKvInvalidHandle) || !errors.As(err, &kvErr) || kvErr.Message == "" {
		t.Fatalf("second free: %v", err)
	}
}
