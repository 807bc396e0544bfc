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
// is a parked goroutine and the hand-off costs next to nothing. A call seen running
// for laneHandoff by a waiting call (a plugin waiting on I/O, a slow handler) lets
// that call in, so a slow plugin never holds up the others for long; the in-flight bound
// (WithMaxInFlight) still caps the OS threads.
const laneHandoff = 200 * time.Microsecond

// The GIL is per process, so is the lane: one token (lane full: someone holds it),
// owned by the holder's ticket (laneOwner; 0 while the token is being passed on). A
// call that finds the lane taken waits for the token, or until it has seen the same
// owner hold it for laneHandoff: then it takes the owner's place (a compare-and-swap
// of the ticket, the token staying in the lane) and the overtaken call leaves without
// giving back a token it no longer owns. So an uncontended call costs no timer and no
// clock reading; only a waiting one makes a timer.
var (
	lane       = make(chan struct{}, 1)
	laneOwner  atomic.Uint64
	laneTicket atomic.Uint64
)

// enterLane waits for the lane and returns the function that leaves it.
func enterLane(goctx context.Context, op string) (func(), error) {
	ticket, err := enterLaneTicket(goctx, op)
	if err != nil {
		return nil, err
	}
	return laneLeave(ticket), nil
}

// enterLaneTicket is enterLane returning the caller's ticket, to leave with
// leaveLane(ticket): no function value to allocate on every invoke.
func enterLaneTicket(goctx context.Context, op string) (uint64, error) {
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
	var seen uint64 // the owner this call has been waiting behind, since seenAt
	var seenAt time.Time
	deadline, hasDeadline := goctx.Deadline()
	for {
		owner := laneOwner.Load()
		now := time.Now()
		// A call whose context ended never takes over (the deadline is read, not only
		// Err: a context's timer may not have run yet when this call's has).
		err := goctx.Err()
		if err == nil && hasDeadline && !now.Before(deadline) {
			err = context.DeadlineExceeded
		}
		if err != nil {
			return 0, fmt.Errorf("cpex: %s: waiting for the lane into the library: %w", op, err)
		}
		if owner != seen || owner == 0 {
			seen, seenAt = owner, now
		}
		wait := laneHandoff - now.Sub(seenAt)
		if owner != 0 && wait <= 0 {
			ticket := laneTicket.Add(1)
			if laneOwner.CompareAndSwap(owner, ticket) {
				return ticket, nil
			}
			continue // the owner left, or another call took its place
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
		}
	}
}

// laneTake makes the caller, who just put the token in, its owner, and returns its
// ticket.
func laneTake() uint64 {
	ticket := laneTicket.Add(1)
	laneOwner.Store(ticket)
	return ticket
}

// laneLeave is the function that leaves the lane with ticket (leaveLane).
func laneLeave(ticket uint64) func() {
	return func() { leaveLane(ticket) }
}

// leaveLane gives the token back if ticket still owns it.
func leaveLane(ticket uint64) {
	if laneOwner.CompareAndSwap(ticket, 0) {
		<-lane
	}
}
