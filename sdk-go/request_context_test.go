package cpex

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The request's global context (InvokeOptions.Request) reaches the plugins: cpexrt
// plugins as PluginContext.request (RequestEcho reports it), py-cpex plugins as their
// global_context. The options form keeps every rule of the other invokes.

// requestEchoConfig: RequestEcho on both tool hooks, after a sleeper for the tool "slow".
func requestEchoConfig(t *testing.T) string {
	return config(t, "",
		plugin("sleeper", "AsyncSleeper", pre, "priority: 1", "conditions: [{tools: [slow]}]", "config: {seconds: 0.5}"),
		plugin("echo", "RequestEcho", "[tool_pre_invoke, tool_post_invoke]", "priority: 10"))
}

// requestEchoed is the request RequestEcho saw, as a map (nil when it saw none).
func requestEchoed(t *testing.T, res *PipelineResult) map[string]any {
	t.Helper()
	got, ok := res.Metadata["request"]
	if !ok {
		t.Fatalf("no request in the metadata %v", res.Metadata)
	}
	if got == nil {
		return nil
	}
	m, ok := got.(map[string]any)
	if !ok {
		t.Fatalf("request = %T %v; want a map", got, got)
	}
	return m
}

func TestInvokeByNameWithPassesTheRequest(t *testing.T) {
	m := started(t, requestEchoConfig(t))
	cases := []struct {
		name string
		user any
	}{
		{"user string", "alice@example.com"},
		{"user map", map[string]any{"id": "bob", "roles": []any{"admin", "ops"}, "level": int64(3)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &GlobalContext{
				RequestID:   "req-42",
				User:        tc.user,
				TenantID:    "acme",
				ServerID:    "mcp-1",
				ContentType: "application/json",
				Metadata:    map[string]any{"trace": "abc", "hops": int64(2)},
			}
			res, ctx, bg, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric,
				map[string]any{"name": "echo"}, InvokeOptions{Request: req})
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.Close()
			defer bg.Close()
			got := requestEchoed(t, res)
			want := map[string]any{
				"request_id":   "req-42",
				"user":         tc.user,
				"tenant_id":    "acme",
				"server_id":    "mcp-1",
				"content_type": "application/json",
				"metadata":     map[string]any{"trace": "abc", "hops": int64(2)},
			}
			for k, v := range want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("request[%q] = %#v; want %#v (whole: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

// Without a Request the old call runs: plugins see no request.
func TestInvokeWithoutARequest(t *testing.T) {
	m := started(t, requestEchoConfig(t))
	for name, run := range map[string]func() (*PipelineResult, error){
		"InvokeByNameWith": func() (*PipelineResult, error) {
			res, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{})
			return res, err
		},
		"InvokeByName": func() (*PipelineResult, error) {
			res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			return res, err
		},
		"InvokeWith": func() (*PipelineResult, error) {
			res, _, _, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{Extensions: (*Extensions)(nil)})
			if err != nil {
				return nil, err
			}
			return &res.PipelineResult, nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := run()
			if err != nil {
				t.Fatal(err)
			}
			if got := requestEchoed(t, res); got != nil {
				t.Fatalf("request = %v; want none", got)
			}
		})
	}
}

// The request travels with the extensions and the context table: the post hook of the
// request sees its own request and the state the pre hook left.
func TestRequestWithExtensionsAndContextTable(t *testing.T) {
	m := started(t, config(t, "",
		plugin("writer", "ExtensionWriter", pre, "config: {tag: w}"),
		plugin("echo", "RequestEcho", "[tool_pre_invoke, tool_post_invoke]", "priority: 10")))
	req := &GlobalContext{RequestID: "req-7", User: "carol"}
	first, ctx, _, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, toolCall{ToolName: "x"},
		InvokeOptions{Extensions: entity("x"), Request: req})
	if err != nil || ctx == nil {
		t.Fatalf("pre: ctx=%v err=%v", ctx, err)
	}
	if first.ModifiedExtensions == nil || first.ModifiedExtensions.Custom["w"] != true || first.ModifiedExtensions.Meta.EntityName != "x" {
		t.Fatalf("modified extensions = %+v", first.ModifiedExtensions)
	}
	if got := requestEchoed(t, &first.PipelineResult); got["request_id"] != "req-7" || got["user"] != "carol" {
		t.Fatalf("pre saw %v", got)
	}
	post, next, _, err := m.InvokeByNameWith(context.Background(), "tool_post_invoke", PayloadGeneric, map[string]any{},
		InvokeOptions{Request: req, Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if got := requestEchoed(t, post); got["request_id"] != "req-7" || post.Metadata["calls"] != int64(2) {
		t.Fatalf("post saw %v, calls %v", got, post.Metadata["calls"])
	}
	_, _, _, err = m.InvokeByNameWith(context.Background(), "tool_post_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{Request: req, Context: ctx})
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("the consumed table again: %v", err)
	}
}

// A request the library refuses, or one the SDK cannot encode, fails the invoke and
// leaves the context table unchanged and usable.
func TestBadRequestKeepsTheContextTable(t *testing.T) {
	m := started(t, requestEchoConfig(t))
	cases := []struct {
		name     string
		req      *GlobalContext
		sentinel error
		message  string
	}{
		{"empty request_id", &GlobalContext{User: "alice"}, ErrCpexInvalidInput, "request.request_id"},
		{"unencodable user", &GlobalContext{RequestID: "r", User: make(chan int)}, ErrCpexInvalidInput, "InvokeByNameWith: request: cannot encode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
			if err != nil || ctx == nil {
				t.Fatalf("first hook: ctx=%v err=%v", ctx, err)
			}
			for i := 0; i < 2; i++ {
				res, next, bg, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, map[string]any{},
					InvokeOptions{Request: tc.req, Context: ctx})
				if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.message) {
					t.Fatalf("attempt %d: got %v; want %v naming %q", i+1, err, tc.sentinel, tc.message)
				}
				if res != nil || next != nil || bg != nil {
					t.Fatalf("a failed invoke returned %v %v %v", res, next, bg)
				}
			}
			_, _, _, err = InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, map[string]any{}, InvokeOptions{Request: tc.req, Context: ctx})
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("InvokeWith: got %v; want %v", err, tc.sentinel)
			}
			res, next, _, err := m.InvokeByNameWith(context.Background(), "tool_post_invoke", PayloadGeneric, map[string]any{},
				InvokeOptions{Request: &GlobalContext{RequestID: "ok"}, Context: ctx})
			if err != nil {
				t.Fatalf("post hook with the kept table: %v", err)
			}
			defer next.Close()
			if res.Metadata["calls"] != int64(2) {
				t.Fatalf("calls = %v; want 2 (the failed invokes left the table unchanged)", res.Metadata["calls"])
			}
		})
	}
}

// goctx's deadline holds for the options form, and the abandoned invoke gives the
// table back when it fails... or consumes it when it succeeds, as InvokeByNameContext.
func TestInvokeByNameWithHonoursTheDeadline(t *testing.T) {
	m := startedWith(t, requestEchoConfig(t), WithMaxInFlight(1))
	_, ctx, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil || ctx == nil {
		t.Fatalf("first hook: ctx=%v err=%v", ctx, err)
	}
	goctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, _, err = m.InvokeByNameWith(goctx, "tool_pre_invoke", PayloadGeneric, map[string]any{},
		InvokeOptions{Extensions: entity("slow"), Request: &GlobalContext{RequestID: "r"}, Context: ctx})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "InvokeByNameWith") {
		t.Fatalf("err = %v", err)
	}
	if waited := time.Since(start); waited > 400*time.Millisecond {
		t.Fatalf("returned after %v", waited)
	}
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	wantInUse(t, err)
	settle(t, m) // the abandoned invoke succeeded in the background: the table is consumed
	_, _, _, err = m.InvokeByName("tool_post_invoke", PayloadGeneric, map[string]any{}, nil, ctx)
	if !errors.Is(err, ErrCpexInvalidHandle) || !strings.Contains(err.Error(), "already consumed") {
		t.Fatalf("got %v; want ErrCpexInvalidHandle, already consumed", err)
	}
}

// json tags name the fields of a payload struct in the options form too.
func TestInvokeWithJSONTaggedPayload(t *testing.T) {
	type call struct {
		ToolName string   `json:"tool_name"`
		Trace    []string `json:"trace,omitempty"`
	}
	m := started(t, config(t, "", plugin("tracer", "Trace", pre, "config: {tag: t}")))
	res, _, _, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, call{ToolName: "x"},
		InvokeOptions{Request: &GlobalContext{RequestID: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ModifiedPayload == nil || res.ModifiedPayload.ToolName != "x" || !reflect.DeepEqual(res.ModifiedPayload.Trace, []string{"t"}) {
		t.Fatalf("modified payload = %+v", res.ModifiedPayload)
	}
}

// A plugin written for py-cpex (the published cpex-pii-filter) runs with the request
// as its global_context and redacts the tool's arguments; the typed result keeps the
// other arguments' types.
func TestInvokeWithAPyCpexPlugin(t *testing.T) {
	m := started(t, `
plugins:
  - name: pii
    kind: cpex_pii_filter.pii_filter.PIIFilterPlugin
    hooks: [tool_pre_invoke]
    mode: enforce
    config: {block_on_detection: false}
`)
	payload := ToolPreInvokePayload{Name: "send_email", Args: map[string]any{"to": "john@example.com", "count": 3}}
	res, ctx, bg, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric, payload, InvokeOptions{
		Request: &GlobalContext{RequestID: "req-pii", User: "alice", TenantID: "acme", ServerID: "mail"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	defer bg.Close()
	if res.IsDenied() {
		t.Fatalf("denied: %+v", res.Violation)
	}
	got := res.ModifiedPayload
	if got == nil {
		t.Fatalf("no modified payload: %+v", res.PipelineResult)
	}
	if got.Name != "send_email" || got.Args["to"] != "[REDACTED]" {
		t.Fatalf("modified payload = %+v; want args.to redacted", got)
	}
	if got.Args["count"] != int64(3) {
		t.Fatalf("args.count = %#v; want the integer 3", got.Args["count"])
	}
	if payload.Args["to"] != "john@example.com" {
		t.Fatalf("the caller's payload changed: %v", payload.Args)
	}
}

// The published cpex-rate-limiter counts per user from the request's global context. It
// catches its own errors and allows the call, so only a denial proves it sees the
// request as py-cpex gives it: two calls per user pass, the third is denied with the
// plugin's violation and HTTP status, and another user has a bucket of their own.
func TestThePublishedRateLimiterSeesTheUser(t *testing.T) {
	m := started(t, `
plugins:
  - name: RateLimiter
    kind: cpex_rate_limiter.rate_limiter.RateLimiterPlugin
    hooks: [tool_pre_invoke]
    mode: enforce
    config: {by_user: "2/m", by_tenant: null}
`)
	call := func(user string) *TypedPipelineResult[ToolPreInvokePayload] {
		t.Helper()
		res, ctx, bg, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric,
			ToolPreInvokePayload{Name: "search", Args: map[string]any{"q": "x"}},
			InvokeOptions{Request: &GlobalContext{RequestID: "req-" + user, User: user}})
		if err != nil {
			t.Fatal(err)
		}
		_ = ctx.Close()
		_ = bg.Close()
		return res
	}
	for _, user := range []string{"alice", "bob"} {
		for i := 0; i < 2; i++ {
			if res := call(user); res.IsDenied() {
				t.Fatalf("%s call %d denied: %+v", user, i+1, res.Violation)
			}
		}
		res := call(user)
		if !res.IsDenied() || res.Violation.Code != "RATE_LIMIT" || res.Violation.PluginName != "RateLimiter" {
			t.Fatalf("%s's third call: %+v; want denied RATE_LIMIT by RateLimiter", user, res.Violation)
		}
		if res.Violation.HTTPStatusCode == nil || *res.Violation.HTTPStatusCode != 429 {
			t.Fatalf("%s's third call: http status %v; want 429", user, res.Violation.HTTPStatusCode)
		}
	}
}

// The published cpex-sql-sanitizer denies a DROP in a tool's arguments and lets a
// parameterised SELECT through.
func TestThePublishedSQLSanitizerDecides(t *testing.T) {
	m := started(t, `
plugins:
  - name: SQLSanitizer
    kind: cpex_sql_sanitizer.sql_sanitizer.SQLSanitizerPlugin
    hooks: [tool_pre_invoke]
    mode: enforce
    config: {}
`)
	for query, denied := range map[string]bool{"DROP TABLE users": true, "SELECT name FROM t WHERE id = 1": false} {
		res, ctx, bg, err := InvokeWith(context.Background(), m, "tool_pre_invoke", PayloadGeneric,
			ToolPreInvokePayload{Name: "db", Args: map[string]any{"query": query}}, InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = ctx.Close()
		_ = bg.Close()
		if res.IsDenied() != denied || (denied && res.Violation.Code != "SQL_SANITIZER") {
			t.Fatalf("%q: denied=%v violation=%+v; want denied=%v", query, res.IsDenied(), res.Violation, denied)
		}
	}
}
