//go:build cgo

package cpex

import (
	"context"
	"fmt"
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

// The GIL is per process, so is the lane.
var lane = make(chan struct{}, 1)

// enterLane waits for the lane and returns the function that leaves it.
func enterLane(goctx context.Context, op string) (func(), error) {
	select {
	case lane <- struct{}{}:
	case <-goctx.Done():
		return nil, fmt.Errorf("cpex: %s: waiting for the lane into the library: %w", op, goctx.Err())
	}
	handoff := time.AfterFunc(laneHandoff, func() { <-lane })
	return func() {
		if handoff.Stop() {
			<-lane
		}
	}, nil
}
