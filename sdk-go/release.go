package cpex

/*
#include "cpex.h"
*/
import "C"

import "sync"

// Handles dropped without Close / Shutdown are released here. Go runs every cleanup
// of the program on one goroutine, and a library call may wait for the GIL behind a
// slow plugin, so cleanups only enqueue; one dedicated goroutine makes the calls.
var releaser struct {
	once  sync.Once
	mu    sync.Mutex
	queue []func()
	wake  chan struct{}
}

func releaseLater(f func()) {
	releaser.once.Do(func() {
		releaser.wake = make(chan struct{}, 1)
		go runReleaser()
	})
	releaser.mu.Lock()
	releaser.queue = append(releaser.queue, f)
	releaser.mu.Unlock()
	select {
	case releaser.wake <- struct{}{}:
	default:
	}
}

func runReleaser() {
	for range releaser.wake {
		releaser.mu.Lock()
		batch := releaser.queue
		releaser.queue = nil
		releaser.mu.Unlock()
		for _, f := range batch {
			f()
		}
	}
}

// The cleanups of dropped objects: whoever swaps the handle out first releases it,
// so a cleanup never races an explicit Close / Shutdown.

func dropManager(st *managerState) {
	if ref := st.handle.Swap(nil); ref != nil {
		releaseLater(func() {
			_ = callShutdown(ref.p)
			st.releaseSink()
		})
	}
}

func dropContext(st *contextState) {
	if ref := st.handle.Swap(nil); ref != nil {
		releaseLater(func() { releaseContext(ref.p) })
	}
}

func dropPair(st pairStates) {
	dropContext(st.ctx)
	dropBackground(st.bg)
}

func dropBackground(st *backgroundState) {
	if ref := st.handle.Swap(nil); ref != nil {
		releaseLater(func() { releaseBackground(ref.p) })
	}
}

// releaseContext frees a context handle nobody will use; a nil handle is fine.
func releaseContext(h *C.cpex_context) {
	if h != nil {
		_ = callFreeContext(h)
	}
}

// releaseBackground frees a background handle nobody will use; a nil handle is fine.
func releaseBackground(h *C.cpex_background) {
	if h != nil {
		_ = callFreeBackground(h)
	}
}
