//go:build cgo

package cpex

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// laneIsFree fails the test unless nobody holds the lane.
func laneIsFree(t *testing.T) {
	t.Helper()
	if len(lane) != 0 || laneOwner.Load() != 0 {
		t.Fatalf("the lane is still held: %d token(s), owner %d", len(lane), laneOwner.Load())
	}
}

// quietLane waits for calls earlier tests left running (abandoned by their context)
// to leave the lane, so each test starts from a free lane.
func quietLane(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(lane) != 0 || laneOwner.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("calls of earlier tests still hold the lane")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustEnter(t *testing.T) func() {
	t.Helper()
	leave, err := enterLane(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return leave
}

func TestLaneEnteredAndLeftAlone(t *testing.T) {
	quietLane(t)
	for i := 0; i < 1000; i++ {
		mustEnter(t)()
	}
	laneIsFree(t)
}

func TestLaneWaiterGetsTheTokenWhenTheHolderLeaves(t *testing.T) {
	quietLane(t)
	leave := mustEnter(t)
	got := make(chan func())
	go func() { l, _ := enterLane(context.Background(), "test"); got <- l }()
	leave() // a waiter either takes the token or overtakes; either way it gets in
	second := <-got
	if len(lane) != 1 || laneOwner.Load() == 0 {
		t.Fatalf("the waiter got in without holding the lane: %d token(s), owner %d", len(lane), laneOwner.Load())
	}
	second()
	laneIsFree(t)
}

func TestLaneHolderPastTheHandoffLetsTheNextIn(t *testing.T) {
	quietLane(t)
	stuck := mustEnter(t)
	got := make(chan func())
	go func() { l, _ := enterLane(context.Background(), "test"); got <- l }()
	var next func()
	select {
	case next = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("a call stayed shut out by a holder past the hand-off")
	}
	// The overtaken holder no longer owns the token: leaving must not take it from
	// the call inside now.
	stuck()
	if len(lane) != 1 {
		t.Fatal("the overtaken holder gave back a token it no longer owned")
	}
	next()
	laneIsFree(t)
}

func TestLaneWaitEndsWithItsContext(t *testing.T) {
	quietLane(t)
	leave := mustEnter(t)
	defer func() { leave(); laneIsFree(t) }()
	// The waiter's context ends before the hand-off: it gives up, and never takes over
	// (the context is checked before every take-over, so this holds on a stalled machine).
	goctx, cancel := context.WithTimeout(context.Background(), laneHandoff/4)
	defer cancel()
	got, err := enterLane(goctx, "Invoke")
	if got != nil {
		got()
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for the lane") {
		t.Fatalf("want the context's error, naming the lane; got %v", err)
	}
	if laneOwner.Load() == 0 || len(lane) != 1 {
		t.Fatal("a waiter that gave up took the lane from its holder")
	}
}

func TestLaneManyCallersLeaveItFree(t *testing.T) {
	quietLane(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				leave := mustEnter(t)
				if (i+g)%50 == 0 {
					time.Sleep(2 * laneHandoff) // some holders are overtaken
				}
				leave()
			}
		}(g)
	}
	wg.Wait()
	laneIsFree(t)
}
