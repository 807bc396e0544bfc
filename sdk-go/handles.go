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
	// handle is nil while an invoke holds the table, and once it was consumed or closed.
	handle atomic.Pointer[contextRef]
	// closed is set by Close: a handle a failed invoke gives back afterwards is freed
	// rather than put back.
	closed atomic.Bool
	// consumed is set when an invoke succeeded with the table (for the error message
	// of a later invoke that passes it again).
	consumed atomic.Bool
}

// ContextTable carries the per-plugin state of one request to its next hook. Pass it
// to the next invoke of the request, or Close it. An invoke that succeeds consumes the
// table (the state goes on in the table that invoke returns); an invoke that fails,
// whatever the reason (the payload cannot be encoded, waiting for a slot is
// cancelled, the library returns an error), leaves it unchanged and usable: pass it
// again to retry, pass it to the next hook, or Close it. One invoke holds the table at
// a time: while it runs, another invoke passing the same table fails with
// ErrCpexInvalidHandle, as does one passing a table that was consumed or closed. An
// invoke abandoned because its context.Context ended keeps the table until it
// finishes in the background (see InvokeByNameContext).
//
// Only invokes create context tables: a zero ContextTable{} is refused by every invoke
// with ErrCpexInvalidHandle, and Close of a nil or zero table does nothing.
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

// take removes the handle from the table (nil when the table is nil or zero, held by
// an invoke, consumed or closed).
func (c *ContextTable) take() *C.cpex_context {
	if c == nil || c.state == nil {
		return nil
	}
	if ref := c.state.handle.Swap(nil); ref != nil {
		return ref.p
	}
	return nil
}

// acquire takes the handle for the invoke op: nil for a nil table (no context), an
// ErrCpexInvalidHandle naming op for a zero table or one that is held by another
// invoke, consumed or closed. The caller must either giveBack the handle or, when the
// library succeeded with it, markConsumed.
func (c *ContextTable) acquire(op string) (*C.cpex_context, error) {
	if c == nil {
		return nil, nil
	}
	if c.state == nil {
		return nil, &Error{Code: codeInvalidHandle, Message: op + ": the *ContextTable is a zero value, not a context table returned by an invoke"}
	}
	if h := c.take(); h != nil {
		return h, nil
	}
	why := "is already in use by another invoke (one invoke holds a context table at a time)"
	switch {
	case c.state.closed.Load():
		why = "was already closed"
	case c.state.consumed.Load():
		why = "was already consumed by an earlier invoke that succeeded"
	}
	return nil, &Error{Code: codeInvalidHandle, Message: op + ": the context table " + why}
}

// giveBack puts h back into the table after an invoke that failed (the library leaves
// the table valid and unchanged then), or frees it when the table was closed meanwhile.
// A nil table or handle is fine.
func (c *ContextTable) giveBack(h *C.cpex_context) {
	if c == nil || c.state == nil || h == nil {
		return
	}
	st := c.state
	st.handle.Store(&contextRef{h})
	// Close sets closed before it swaps the handle out, and this stores the handle
	// before it reads closed (both sequentially consistent): either Close finds the
	// handle, or this finds closed; whoever swaps it out first frees it.
	if st.closed.Load() {
		if ref := st.handle.Swap(nil); ref != nil {
			releaseContext(ref.p)
		}
	}
}

// markConsumed records that an invoke succeeded with the table's handle.
func (c *ContextTable) markConsumed() {
	if c != nil && c.state != nil {
		c.state.consumed.Store(true)
	}
}

// Close releases the table. Closing a nil or zero table, closing twice, after the
// table was consumed, or after the manager's Shutdown (which released it) does
// nothing. Closing a table that an invoke holds marks it closed: if that invoke
// fails, the table is freed instead of being put back.
func (c *ContextTable) Close() error {
	if c == nil || c.state == nil {
		return nil
	}
	c.state.closed.Store(true)
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
// errors and/or Close it; the tasks finish either way. An invoke that started no such
// task returns a nil *BackgroundTasks, on which Wait, WaitContext and Close are valid
// and return at once. Only invokes create them: Wait and WaitContext of a zero
// BackgroundTasks{} fail with ErrCpexInvalidHandle, and its Close does nothing.
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
// On a nil *BackgroundTasks (what an invoke that started no fire-and-forget task
// returns) it returns nil, nil at once: there is nothing to wait for. A zero
// BackgroundTasks{}, or one that was closed, fails with ErrCpexInvalidHandle.
func (b *BackgroundTasks) Wait() ([]PluginError, error) {
	return b.wait(context.Background(), "Wait")
}

// WaitContext is Wait giving up when goctx ends (the tasks go on). Like Wait, on a nil
// *BackgroundTasks it returns nil, nil at once, and a zero BackgroundTasks{} fails with
// ErrCpexInvalidHandle.
func (b *BackgroundTasks) WaitContext(goctx context.Context) ([]PluginError, error) {
	return b.wait(goctx, "WaitContext")
}

func (b *BackgroundTasks) wait(goctx context.Context, op string) ([]PluginError, error) {
	if b == nil {
		return nil, nil
	}
	if b.state == nil {
		return nil, &Error{Code: codeInvalidHandle, Message: op + ": the *BackgroundTasks is a zero value, not background tasks returned by an invoke"}
	}
	ref := b.state.handle.Load()
	if ref == nil {
		return nil, &Error{Code: codeInvalidHandle, Message: op + ": the background tasks were closed"}
	}
	type waited struct {
		raw []byte
		err error
	}
	w, err := await(goctx, func() waited {
		raw, err := callWaitBackground(ref.p)
		return waited{raw, err}
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("cpex: %s: %w", op, err)
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

// Close releases the handle; closing a nil or zero value, closing twice, or after the
// manager's Shutdown, does nothing.
func (b *BackgroundTasks) Close() error {
	if b == nil || b.state == nil {
		return nil
	}
	ref := b.state.handle.Swap(nil)
	if ref == nil {
		return nil
	}
	return ignoreReleased(callFreeBackground(ref.p))
}

// handlePair is an invoke's context table and background tasks in one allocation, with
// one cleanup for both: a cleanup costs about a microsecond over its life (registered,
// found by the sweep, run), and most invokes of a pipeline with a fire-and-forget
// plugin return both. The cleanup runs once neither is reachable: a table or tasks
// dropped while the other is kept are released with the other.
type handlePair struct {
	ctx ContextTable
	bg  BackgroundTasks
}

type pairStates struct {
	ctx *contextState
	bg  *backgroundState
}

// newHandles wraps the handles an invoke returned (nil for each that is NULL).
func newHandles(ch *C.cpex_context, bh *C.cpex_background) (*ContextTable, *BackgroundTasks) {
	if ch == nil || bh == nil {
		return newContextTable(ch), newBackgroundTasks(bh)
	}
	cs, bs := &contextState{}, &backgroundState{}
	cs.handle.Store(&contextRef{ch})
	bs.handle.Store(&backgroundRef{bh})
	pair := &handlePair{ctx: ContextTable{state: cs}, bg: BackgroundTasks{state: bs}}
	runtime.AddCleanup(pair, dropPair, pairStates{cs, bs})
	return &pair.ctx, &pair.bg
}

// The library's handle values live in these boxes because sync/atomic cannot hold a
// pointer to an incomplete C type directly.
type (
	managerRef    struct{ p *C.cpex_manager }
	contextRef    struct{ p *C.cpex_context }
	backgroundRef struct{ p *C.cpex_background }
)
