package cpex

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
)

// N goroutines × M requests, each a pre and a post hook threading its context table
// and waiting for its fire-and-forget tasks; every result is checked, and no handle is
// left behind. (The long leak run is bench/run.py --long.)
func TestStressThreadedRequests(t *testing.T) {
	const goroutines, requests = 16, 60
	m := started(t, config(t, "",
		plugin("count", "Counter", "[tool_pre_invoke, tool_post_invoke]"),
		plugin("tracer", "Trace", pre, "priority: 200", "config: {tag: t}"),
		plugin("guard", "DenyWhenBlocked", pre, "priority: 5"),
		plugin("rec", "SyncRecorder", pre, "mode: fire_and_forget")))
	before, err := LiveHandles()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*requests)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < requests; r++ {
				if err := request(m, g*requests+r); err != nil {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if after, _ := LiveHandles(); after != before {
		t.Fatalf("live handles went from %d to %d", before, after)
	}
}

func request(m *PluginManager, id int) error {
	blocked := id%5 == 0
	res, ctx, bg, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, traced{Trace: []string{}, ID: id, Block: blocked}, nil, nil)
	if err != nil {
		return fmt.Errorf("%d: pre: %w", id, err)
	}
	defer bg.Close()
	if res.IsDenied() != blocked {
		return fmt.Errorf("%d: denied=%v", id, res.IsDenied())
	}
	if !blocked && (res.ModifiedPayload == nil || res.ModifiedPayload.ID != id || !reflect.DeepEqual(res.ModifiedPayload.Trace, []string{"t"})) {
		return fmt.Errorf("%d: modified payload %+v", id, res.ModifiedPayload)
	}
	if bg == nil {
		return fmt.Errorf("%d: no background tasks", id)
	}
	if failed, err := bg.Wait(); err != nil || len(failed) != 0 {
		return fmt.Errorf("%d: background: %v %v", id, failed, err)
	}
	if blocked {
		if ctx != nil { // the guard denied before the counter kept any state
			return fmt.Errorf("%d: a context table for a denied request", id)
		}
		return nil
	}
	if ctx == nil {
		return fmt.Errorf("%d: no context table", id)
	}
	post, next, _, err := m.InvokeByName("tool_post_invoke", PayloadGeneric, traced{ID: id}, nil, ctx)
	if err != nil {
		return fmt.Errorf("%d: post: %w", id, err)
	}
	defer next.Close()
	if calls := post.Metadata["calls"]; calls != int64(2) {
		return fmt.Errorf("%d: the context did not carry the count: %v", id, post.Metadata)
	}
	return nil
}
