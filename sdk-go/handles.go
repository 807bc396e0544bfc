package cpex

/*
#include "cpex.h"
*/
import "C"

import (
	"runtime"
	"sync/atomic"
)

type contextState struct {
	handle atomic.Pointer[contextRef]
}

// ContextTable carries the per-plugin state of one request to its next hook. Pass it
// to the next InvokeByName (which consumes it) or Close it.
type ContextTable struct {
	state *contextState
}

func newContextTable(h *C.cpex_context) *ContextTable {
	if h == nil {
		return nil
	}
	st := &contextState{}
	st.handle.Store(&contextRef{h})
	c := &ContextTable{state: st}
	runtime.AddCleanup(c, dropContext, st)
	return c
}

// take removes the handle from the table (nil when already consumed or closed).
func (c *ContextTable) take() *C.cpex_context {
	if ref := c.state.handle.Swap(nil); ref != nil {
		return ref.p
	}
	return nil
}

// Close releases the table; closing twice, or after it was consumed, does nothing.
func (c *ContextTable) Close() error {
	if c == nil {
		return nil
	}
	h := c.take()
	if h == nil {
		return nil
	}
	return callFreeContext(h)
}

type backgroundState struct {
	handle atomic.Pointer[backgroundRef]
}

// BackgroundTasks are the fire-and-forget tasks an invoke started. Wait for their
// errors and/or Close it; the tasks finish either way.
type BackgroundTasks struct {
	state *backgroundState
}

func newBackgroundTasks(h *C.cpex_background) *BackgroundTasks {
	if h == nil {
		return nil
	}
	st := &backgroundState{}
	st.handle.Store(&backgroundRef{h})
	b := &BackgroundTasks{state: st}
	runtime.AddCleanup(b, dropBackground, st)
	return b
}

// Wait blocks until every task finished and returns the errors of those that failed.
func (b *BackgroundTasks) Wait() ([]PluginError, error) {
	ref := b.state.handle.Load()
	if ref == nil {
		return nil, &Error{Code: codeInvalidHandle, Message: "Wait: the background tasks were closed"}
	}
	raw, err := callWaitBackground(ref.p)
	if err != nil {
		return nil, err
	}
	var errs []PluginError
	if err := decode(raw, &errs, "background errors"); err != nil {
		return nil, err
	}
	return errs, nil
}

// Close releases the handle; closing twice does nothing.
func (b *BackgroundTasks) Close() error {
	if b == nil {
		return nil
	}
	ref := b.state.handle.Swap(nil)
	if ref == nil {
		return nil
	}
	return callFreeBackground(ref.p)
}

// The library's handle values live in these boxes because sync/atomic cannot hold a
// pointer to an incomplete C type directly.
type (
	managerRef    struct{ p *C.cpex_manager }
	contextRef    struct{ p *C.cpex_context }
	backgroundRef struct{ p *C.cpex_background }
)
