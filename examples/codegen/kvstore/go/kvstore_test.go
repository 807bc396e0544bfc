package kvstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	kv "github.com/cpex-dev/cpex/examples/codegen/kvstore/go"
)

func newStore(t *testing.T) *kv.Store {
	t.Helper()
	s, err := kv.StoreNew()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantErr(t *testing.T, err, class error, message string) {
	t.Helper()
	var e *kv.Error
	if !errors.Is(err, class) || !errors.As(err, &e) {
		t.Fatalf("got %v, want %v", err, class)
	}
	if !strings.Contains(e.Message, message) {
		t.Fatalf("message %q lacks %q", e.Message, message)
	}
}

func TestPutGetCount(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	for _, k := range []string{"a", "b", "a"} {
		if err := kv.Put(s, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := kv.Get(s, "a"); err != nil || string(v) != "v-a" {
		t.Fatalf("get a: %q, %v", v, err)
	}
	if err := kv.Put(s, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := kv.Get(s, "empty"); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("an empty value is present and empty: %#v, %v", v, err)
	}
	if n, err := kv.Count(s); err != nil || n != 3 {
		t.Fatalf("count: %d, %v", n, err)
	}
}

func TestFailuresCarryClassAndMessage(t *testing.T) {
	s := newStore(t)
	_, err := kv.Get(s, "missing")
	wantErr(t, err, kv.ErrKvNotFound, "kv_get: key 'missing'")
	wantErr(t, kv.Put(s, "", []byte("x")), kv.ErrKvInvalidInput, "kv_put: key: must not be empty")
	wantErr(t, kv.Put(s, "\xff", nil), kv.ErrKvInvalidInput, "kv_put: key: not valid UTF-8")

	// Handles are checked tokens: nil, freed and consumed handles fail, never crash.
	wantErr(t, kv.Put(nil, "k", nil), kv.ErrKvInvalidHandle, "kv_put: store handle is NULL")
	if err := kv.StoreFree(s); err != nil {
		t.Fatal(err)
	}
	wantErr(t, kv.StoreFree(s), kv.ErrKvInvalidHandle, "was freed or consumed")
	_, err = kv.Count(s)
	wantErr(t, err, kv.ErrKvInvalidHandle, "kv_count: store: the store handle")
}

func TestConcurrentUse(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				k := fmt.Sprintf("%d/%d", i, j)
				if err := kv.Put(s, k, []byte(k)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := kv.Count(s); err != nil || n != 16*20 {
		t.Fatalf("count: %d, %v", n, err)
	}
}

func TestVersion(t *testing.T) {
	if err := kv.CheckVersion(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(kv.BuildInfo(), `"abi": "1.`) {
		t.Fatalf("build info: %s", kv.BuildInfo())
	}
}
