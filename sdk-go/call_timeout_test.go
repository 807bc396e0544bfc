package cpex

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// InvokeOptions.Timeout: the library stops the plugins once the call ran that long and
// the call fails closed with ErrCpexTimeout, whatever the plugins' on_error.
func TestACallPastItsTimeoutFailsClosed(t *testing.T) {
	m := started(t, config(t, "",
		plugin("count", "Counter", pre),
		plugin("slow", "AsyncSleeper", pre, "on_error: ignore", "conditions: [{tools: [slow]}]", "config: {seconds: 30}")))
	res, ctx, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, map[string]any{"tool_name": "x"}, nil, nil)
	if err != nil || res.IsDenied() || ctx == nil {
		t.Fatalf("pre = %+v, %v, %v", res, ctx, err)
	}
	start := time.Now()
	slow := &Extensions{Meta: &MetaExtension{EntityType: "tool", EntityName: "slow"}}
	_, _, _, err = InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, map[string]any{"tool_name": "slow"},
		InvokeOptions{Extensions: slow, Context: ctx, Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrCpexTimeout) || !strings.Contains(err.Error(), "limit of 0.1s (the call's timeout) in plugin 'slow'") {
		t.Fatalf("err = %v", err)
	}
	// A generous bound: the feature is a deadline, the machine is shared.
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("returned after %v", waited)
	}
	// The failed call left the context table usable.
	if _, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{"tool_name": "x"},
		InvokeOptions{Context: ctx, Timeout: time.Minute, Request: &GlobalContext{RequestID: "r-1"}}); err != nil {
		t.Fatalf("retry with the context table: %v", err)
	}
}

func TestACallWithinItsTimeoutIsUnchanged(t *testing.T) {
	m := started(t, config(t, "", plugin("guard", "DenyWhenBlocked", pre)))
	for _, timeout := range []time.Duration{0, time.Nanosecond * 1500000, time.Minute} {
		res, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric,
			map[string]any{"tool_name": "x", "block": true}, InvokeOptions{Timeout: timeout})
		if err != nil || !res.IsDenied() || res.Violation.Code != "blocked" {
			t.Fatalf("timeout %v: %+v, %v", timeout, res, err)
		}
	}
}

func TestANegativeTimeoutIsRefused(t *testing.T) {
	m := started(t, config(t, "", plugin("a", "Allow", pre)))
	_, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{Timeout: -time.Second})
	if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "Timeout: expected a positive duration") {
		t.Fatalf("err = %v", err)
	}
}
