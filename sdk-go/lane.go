//go:build cgo

package cpex

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// The lane: calls into the library enter it one at a time. The embedded Python runs
// one thread at a time anyway (the GIL), and when several OS threads contend for the
// GIL each hand-off sleeps and wakes an OS thread; queued here instead, a waiting call
// is a parked goroutine and the hand-off costs next to nothing. A call still running
// after laneHandoff (a plugin waiting on I/O, a slow handler) lets the next call in,
// so a slow plugin never holds up the others for long; the in-flight bound
// (WithMaxInFlight) still caps the OS threads.
const laneHandoff = 200 * time.Microsecond

// The GIL is per process, so is the lane: one token (lane full: someone holds it),
// owned by the holder's ticket (laneOwner; 0 while the token is being passed on). A
// call that finds the lane taken waits for the token, or until the owner has held it
// for laneHandoff: then it takes the owner's place (a compare-and-swap of the ticket,
// the token staying in the lane) and the overtaken call leaves without giving back a
// token it no longer owns. So an uncontended call costs no timer; only a waiting one
// makes one.
var (
	lane       = make(chan struct{}, 1)
	laneOwner  atomic.Uint64
	laneTicket atomic.Uint64
	laneSince  atomic.Int64 // when the owner took the token (laneClock)
	laneStart  = time.Now()
)

func laneClock() int64 { return int64(time.Since(laneStart)) }

// enterLane waits for the lane and returns the function that leaves it.
func enterLane(goctx context.Context, op string) (func(), error) {
	select {
	case lane <- struct{}{}:
		return laneTake(), nil
	default:
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// laneTake stores the time before the ticket: an owner read here has its own
		// time (or a later owner's, which only makes the wait longer).
		owner := laneOwner.Load()
		wait := laneHandoff
		if owner != 0 {
			wait -= time.Duration(laneClock() - laneSince.Load())
			if wait <= 0 {
				ticket := laneTicket.Add(1)
				if laneOwner.CompareAndSwap(owner, ticket) {
					laneSince.Store(laneClock())
					return laneLeave(ticket), nil
				}
				continue // the owner left, or another call took its place
			}
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case lane <- struct{}{}:
			return laneTake(), nil
		case <-timer.C:
		case <-goctx.Done():
			return nil, fmt.Errorf("cpex: %s: waiting for the lane into the library: %w", op, goctx.Err())
		}
	}
}

// laneTake makes the caller, who just put the token in, its owner.
func laneTake() func() {
	ticket := laneTicket.Add(1)
	laneSince.Store(laneClock())
	laneOwner.Store(ticket)
	return laneLeave(ticket)
}

// laneLeave gives the token back if ticket still owns it.
func laneLeave(ticket uint64) func() {
	return func() {
		if laneOwner.CompareAndSwap(ticket, 0) {
			<-lane
		}
	}
}
