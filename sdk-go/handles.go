package cpex

/*
#include "cpex.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
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

// Close releases the table; closing twice, after it was consumed, or after the
// manager's Shutdown (which released it) does nothing.
func (c *ContextTable) Close() error {
	if c == nil {
		return nil
	}
	h := c.take()
	if h == nil {
		return nil
	}
	return ignoreReleased(callFreeContext(h))
}

// ignoreReleased treats "already released" as success: Close only promises that the
// handle is gone afterwards.
func ignoreReleased(err error) error {
	if errors.Is(err, ErrCpexInvalidHandle) {
		return nil
	}
	return err
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
	return b.WaitContext(context.Background())
}

// WaitContext is Wait giving up when goctx ends (the tasks go on).
func (b *BackgroundTasks) WaitContext(goctx context.Context) ([]PluginError, error) {
	ref := b.state.handle.Load()
	if ref == nil {
		return nil, &Error{Code: codeInvalidHandle, Message: "Wait: the background tasks were closed"}
	}
	type waited struct {
		raw []byte
		err error
	}
	var w waited
	if goctx.Done() == nil {
		w.raw, w.err = callWaitBackground(ref.p)
	} else {
		done := make(chan waited, 1)
		go func() {
			raw, err := callWaitBackground(ref.p)
			done <- waited{raw, err}
		}()
		select {
		case w = <-done:
		case <-goctx.Done():
			return nil, fmt.Errorf("cpex: Wait: %w", goctx.Err())
		}
	}
	runtime.KeepAlive(b) // its cleanup must not free the handle mid-wait
	raw, err := w.raw, w.err
	if err != nil {
		return nil, err
	}
	var errs []PluginError
	if err := decode(raw, &errs, "background errors"); err != nil {
		return nil, err
	}
	return errs, nil
}

// Close releases the handle; closing twice, or after the manager's Shutdown, does
// nothing.
func (b *BackgroundTasks) Close() error {
	if b == nil {
		return nil
	}
	ref := b.state.handle.Swap(nil)
	if ref == nil {
		return nil
	}
	return ignoreReleased(callFreeBackground(ref.p))
}

// The library's handle values live in these boxes because sync/atomic cannot hold a
// pointer to an incomplete C type directly.
type (
	managerRef    struct{ p *C.cpex_manager }
	contextRef    struct{ p *C.cpex_context }
	backgroundRef struct{ p *C.cpex_background }
)
