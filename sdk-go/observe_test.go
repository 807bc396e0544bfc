package cpex

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Observability from a Go host: the engine's spans join the host's trace, its log
// records reach a *slog.Logger, decision records reach a Go callback or a file, and a
// plugin in mode: permissive (shadow mode) is recorded without being enforced.

// The payload carries a secret no log line or decision record may show.
const secret = "s3cr3t-payload-value"

type observed struct {
	Trace  []string `msgpack:"trace"`
	Block  bool     `msgpack:"block,omitempty"`
	Secret string   `msgpack:"secret"`
}

// observedPipeline: a sequential modifier, a plugin that fails under on_error ignore,
// and a shadow (permissive) plugin that denies.
func observedPipeline(t *testing.T, settings string, extra ...string) string {
	return config(t, settings, append([]string{
		plugin("tr", "Trace", pre, "config: {tag: a}"),
		plugin("boom", "Raises", pre, "on_error: ignore"),
		plugin("shadow", "DenyWhenBlocked", pre, "mode: permissive"),
	}, extra...)...)
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

type exportedSpan struct {
	Name         string         `msgpack:"name"`
	TraceID      string         `msgpack:"trace_id"`
	SpanID       string         `msgpack:"span_id"`
	ParentSpanID string         `msgpack:"parent_span_id"`
	Status       string         `msgpack:"status"`
	Attributes   map[string]any `msgpack:"attributes"`
}

type metricPoint struct {
	Name       string         `msgpack:"name"`
	Attributes map[string]any `msgpack:"attributes"`
	Value      float64        `msgpack:"value"`
}

// exported asks the otel_probe plugin (in the embedded interpreter, with
// opentelemetry-sdk's in-memory exporter and reader) for what the engine produced.
func exported(t *testing.T, m *PluginManager) ([]exportedSpan, []metricPoint) {
	t.Helper()
	res, _, _, err := m.InvokeByName("otel_export", PayloadGeneric, map[string]any{}, nil, nil)
	if err != nil {
		t.Fatalf("otel_export: %v", err)
	}
	var out struct {
		Spans   []exportedSpan `msgpack:"spans"`
		Metrics []metricPoint  `msgpack:"metrics"`
	}
	raw, err := msgpack.Marshal(res.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(raw, &out, "otel export"); err != nil {
		t.Fatal(err)
	}
	return out.Spans, out.Metrics
}

func TestSpansJoinTheHostsTrace(t *testing.T) {
	probe := "  - name: probe\n    kind: otel_probe:OtelProbe\n    hooks: [otel_export]\n"
	m := started(t, observedPipeline(t, "", probe))
	defer m.Shutdown()
	traceID, parentID := randomHex(t, 16), randomHex(t, 8)
	res, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric,
		observed{Trace: []string{}, Block: true, Secret: secret},
		InvokeOptions{Request: &GlobalContext{RequestID: "req-otel", Traceparent: "00-" + traceID + "-" + parentID + "-01", Tracestate: "gw=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.ContinueProcessing {
		t.Fatalf("a permissive plugin's deny was enforced: %+v", res.Violation)
	}
	spans, points := exported(t, m)
	var invoke *exportedSpan
	children := map[string]exportedSpan{}
	for i, s := range spans {
		if s.TraceID != traceID {
			continue
		}
		if s.Name == "cpex.invoke tool_pre_invoke" {
			invoke = &spans[i]
		}
	}
	if invoke == nil {
		t.Fatalf("no cpex.invoke span in the host's trace %s; spans: %+v", traceID, spans)
	}
	if invoke.ParentSpanID != parentID {
		t.Fatalf("invoke span's parent = %s, want the host's span %s", invoke.ParentSpanID, parentID)
	}
	if invoke.Attributes["cpex.request.id"] != "req-otel" || invoke.Attributes["cpex.decision"] != "modify" {
		t.Fatalf("invoke span attributes = %v", invoke.Attributes)
	}
	for _, s := range spans {
		if s.TraceID == traceID && s.ParentSpanID == invoke.SpanID {
			children[s.Name] = s
		}
	}
	if len(children) != 3 {
		t.Fatalf("want 3 plugin spans under the invoke span, got %v", children)
	}
	tr, boom, shadow := children["cpex.plugin tr"], children["cpex.plugin boom"], children["cpex.plugin shadow"]
	if tr.Attributes["cpex.decision"] != "modify" || tr.Attributes["cpex.plugin.mode"] != "sequential" {
		t.Fatalf("tr span = %+v", tr)
	}
	if boom.Attributes["error.type"] != "plugin_error" || boom.Status != "ERROR" {
		t.Fatalf("boom span = %+v", boom)
	}
	if shadow.Attributes["cpex.decision"] != "deny" || shadow.Attributes["cpex.enforced"] != false ||
		shadow.Attributes["cpex.violation.code"] != "blocked" || shadow.Attributes["cpex.plugin.mode"] != "permissive" {
		t.Fatalf("shadow span = %+v", shadow)
	}
	want := map[string]bool{"cpex.plugin.denials/shadow": false, "cpex.plugin.errors/boom": false, "cpex.plugin.duration/tr": false}
	for _, p := range points {
		key := p.Name + "/" + fmt.Sprint(p.Attributes["cpex.plugin.name"])
		if _, ok := want[key]; ok && p.Value >= 1 && p.Attributes["cpex.hook"] == "tool_pre_invoke" {
			want[key] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no metric point %s; points: %+v", k, points)
		}
	}
}

func TestTraceparentIsChecked(t *testing.T) {
	m := started(t, observedPipeline(t, ""))
	defer m.Shutdown()
	_, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}},
		InvokeOptions{Request: &GlobalContext{RequestID: "r", Traceparent: "not-a-traceparent"}})
	if !errors.Is(err, ErrCpexInvalidInput) || !strings.Contains(err.Error(), "request.traceparent") {
		t.Fatalf("err = %v, want ErrCpexInvalidInput naming request.traceparent", err)
	}
}

// capture is a slog.Handler keeping every record.
type capture struct {
	mu      sync.Mutex
	records []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, r.Clone())
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func attrs(r slog.Record) map[string]string {
	out := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

func TestSetLoggerReceivesTheEnginesRecords(t *testing.T) {
	c := &capture{}
	if err := SetLogger(slog.New(c)); err != nil {
		t.Fatal(err)
	}
	defer SetLogger(nil)
	m := started(t, observedPipeline(t, ""))
	if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}, Block: true, Secret: secret}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPluginManager("plugins:\n  - {name: x, kind: cpex_test_plugins:Allow, mode: loud}\n"); !errors.Is(err, ErrCpexConfig) {
		t.Fatalf("bad config: err = %v", err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// SetLogger(nil) returns once the queued records were handed over.
	if err := SetLogger(nil); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var failure, shadow, refused, initialized bool
	for _, r := range c.records {
		a := attrs(r)
		for k, v := range a {
			if strings.Contains(v, secret) || strings.Contains(r.Message, secret) {
				t.Fatalf("a log record shows payload contents: %s %s=%s", r.Message, k, v)
			}
		}
		switch {
		case a["logger"] == "cpexrt.engine.executor" && a["code"] == "plugin_error":
			failure = r.Level == slog.LevelWarn && a["plugin"] == "boom" && a["hook"] == "tool_pre_invoke" && a["on_error"] == "ignore"
		case a["logger"] == "cpexrt.engine.executor" && a["code"] == "not_enforced":
			shadow = r.Level == slog.LevelInfo && a["plugin"] == "shadow" && a["violation_code"] == "blocked"
		case a["logger"] == "cpexrt.engine" && strings.Contains(r.Message, "config was refused"):
			refused = r.Level == slog.LevelError && strings.Contains(r.Message, "plugins[0].mode")
		case a["logger"] == "cpexrt.engine" && strings.HasPrefix(r.Message, "initialized 3 plugins"):
			initialized = r.Level == slog.LevelInfo && !r.Time.IsZero()
		}
	}
	if !failure || !shadow || !refused || !initialized {
		var lines []string
		for _, r := range c.records {
			lines = append(lines, fmt.Sprintf("%s %s %v", r.Level, r.Message, attrs(r)))
		}
		t.Fatalf("failure=%v shadow=%v refused=%v initialized=%v; records:\n%s", failure, shadow, refused, initialized, strings.Join(lines, "\n"))
	}
}

func TestSetLoggerLevelFiltersInTheEngine(t *testing.T) {
	c := &capture{}
	if err := SetLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))); err != nil {
		t.Fatal(err)
	}
	if got := pythonLevel(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))); got != 40 {
		t.Fatalf("pythonLevel(Error) = %d, want 40", got)
	}
	if err := SetLogger(slog.New(c)); err != nil { // replaces the first
		t.Fatal(err)
	}
	if err := SetLogger(nil); err != nil {
		t.Fatal(err)
	}
	m := started(t, observedPipeline(t, ""))
	defer m.Shutdown()
	if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := SetLogger(slog.New(c)); err != nil {
		t.Fatal(err)
	}
	if err := SetLogger(nil); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.records {
		if a := attrs(r); a["plugin"] == "boom" {
			t.Fatalf("a record made while no logger was set reached one: %s %v", r.Message, a)
		}
	}
}

type decisions struct {
	mu      sync.Mutex
	records []DecisionRecord
}

func (d *decisions) add(r DecisionRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records = append(d.records, r)
}

func TestDecisionRecordsToAGoCallback(t *testing.T) {
	m := started(t, observedPipeline(t, ""))
	var got decisions
	if err := m.SetDecisionSink(got.add); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric,
			observed{Trace: []string{}, Block: true, Secret: secret},
			InvokeOptions{Request: &GlobalContext{RequestID: fmt.Sprintf("req-%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Shutdown(); err != nil { // delivers what is queued
		t.Fatal(err)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(got.records) != 3 {
		t.Fatalf("%d records, want 3: %+v", len(got.records), got.records)
	}
	for i, r := range got.records {
		if r.RequestID != fmt.Sprintf("req-%d", i) || r.Hook != "tool_pre_invoke" || r.Decision != "modify" || r.Time == 0 {
			t.Fatalf("record %d = %+v", i, r)
		}
		if len(r.Plugins) != 3 {
			t.Fatalf("record %d plugins = %+v", i, r.Plugins)
		}
		tr, boom, shadow := r.Plugins[0], r.Plugins[1], r.Plugins[2]
		if tr.Plugin != "tr" || tr.Verdict != "modify" || !tr.Enforced || len(tr.ModifiedFields) != 1 || tr.ModifiedFields[0] != "payload.trace" || tr.ModifiedValues != nil {
			t.Fatalf("tr = %+v", tr)
		}
		if boom.Plugin != "boom" || boom.Verdict != "error" || boom.ErrorCode != "plugin_error" {
			t.Fatalf("boom = %+v", boom)
		}
		if shadow.Plugin != "shadow" || shadow.Mode != "permissive" || shadow.Verdict != "deny" || shadow.Enforced || shadow.ViolationCode != "blocked" {
			t.Fatalf("shadow = %+v", shadow)
		}
	}
	if err := m.SetDecisionSink(got.add); !errors.Is(err, ErrCpexInvalidHandle) {
		t.Fatalf("SetDecisionSink after Shutdown: err = %v", err)
	}
}

func TestDecisionRecordOfAFailedInvoke(t *testing.T) {
	m := started(t, config(t, "", plugin("tr", "Trace", pre, "config: {tag: a}"), plugin("boom", "Raises", pre)))
	defer m.Shutdown()
	var got decisions
	if err := m.SetDecisionSink(got.add); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}}, nil, nil); !errors.Is(err, ErrCpexPipeline) {
		t.Fatalf("err = %v", err)
	}
	if err := m.SetDecisionSink(nil); err != nil { // hands over what is queued
		t.Fatal(err)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(got.records) != 1 {
		t.Fatalf("records = %+v", got.records)
	}
	r := got.records[0]
	if r.Decision != "error" || r.Error != "PipelineError" || len(r.Plugins) != 2 || r.Plugins[1].Verdict != "error" || r.Plugins[1].ErrorCode != "plugin_error" {
		t.Fatalf("record = %+v", r)
	}
}

func TestDecisionRecordsToAFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	m := started(t, observedPipeline(t, fmt.Sprintf("decision_records:\n  file: %q\n", path)))
	for i := range 2 {
		_, _, _, err := m.InvokeByNameWith(context.Background(), "tool_pre_invoke", PayloadGeneric,
			observed{Trace: []string{}, Secret: secret}, InvokeOptions{Request: &GlobalContext{RequestID: fmt.Sprintf("f-%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if strings.Contains(scanner.Text(), secret) {
			t.Fatalf("a decision record shows payload contents: %s", scanner.Text())
		}
		var r map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, fmt.Sprint(r["request_id"]))
	}
	if strings.Join(ids, ",") != "f-0,f-1" {
		t.Fatalf("request ids in the file = %v", ids)
	}
	// A file that cannot be opened fails the load, naming the field.
	_, err = NewPluginManager(observedPipeline(t, fmt.Sprintf("decision_records:\n  file: %q\n", filepath.Join(dir, "missing", "x.jsonl"))))
	if !errors.Is(err, ErrCpexConfig) || !strings.Contains(err.Error(), "decision_records.file") {
		t.Fatalf("err = %v", err)
	}
}

func TestAPanickingDecisionSinkLosesTheRecordNotTheProcess(t *testing.T) {
	c := &capture{}
	if err := SetLogger(slog.New(c)); err != nil {
		t.Fatal(err)
	}
	defer SetLogger(nil)
	m := started(t, observedPipeline(t, ""))
	defer m.Shutdown()
	if err := m.SetDecisionSink(func(DecisionRecord) { panic("sink down") }); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	var got decisions
	if err := m.SetDecisionSink(got.add); err != nil { // hands the two records to the panicking sink first
		t.Fatal(err)
	}
	if _, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, observed{Trace: []string{}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.SetDecisionSink(nil); err != nil {
		t.Fatal(err)
	}
	if len(got.records) != 1 {
		t.Fatalf("records after the panicking sink was replaced: %d, want 1", len(got.records))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	panics := 0
	for _, r := range c.records {
		if strings.Contains(r.Message, "decision sink panicked") {
			panics++
		}
	}
	if panics != 2 {
		t.Fatalf("%d panics logged, want 2", panics)
	}
}
