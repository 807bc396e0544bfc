//go:build cgo

package cpex

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// refusedWriteResult is the shape of the CMF demo's result (examples/configs/cmf.yaml):
// the third plugin's extensions write refused, one error record with details.fields.
func refusedWriteResult(tb testing.TB) []byte {
	tb.Helper()
	raw, err := encode(PipelineResult{
		ContinueProcessing: true,
		PayloadType:        1,
		Errors: []PluginError{{
			PluginName: "cmf-tagger",
			Message:    "may not write security.labels (no write_labels capability); none of its changes were applied",
			Code:       "extension_write_refused",
			Details:    map[string]any{"fields": []any{"security.labels"}},
		}},
	}, "result")
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

func BenchmarkDecodeRefusedWriteResult(b *testing.B) {
	raw := refusedWriteResult(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := decodeResult(raw, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// mp encodes v with the SDK's encoder (test helper).
func mp(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := encode(v, "test")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// The generated decoders of record-valued fields (decodeRecords, decodeRecordPtr)
// give exactly what the msgpack library's reflection gives for the same bytes.
func TestRecordDecodersMatchReflection(t *testing.T) {
	errA := map[string]any{"plugin_name": "a", "message": "m", "code": "c", "details": map[string]any{"fields": []any{"x", "y"}}}
	errB := map[string]any{"plugin_name": "b", "message": "n", "later": []byte{1, 2}}
	lists := map[string]any{
		"nil":         nil,
		"empty":       []any{},
		"one":         []any{errA},
		"two":         []any{errA, errB},
		"nil element": []any{errA, nil},
	}
	for name, list := range lists {
		raw := mp(t, list)
		var viaReflection, generated []PluginError
		if err := newDecoder(bytes.NewReader(raw)).Decode(&viaReflection); err != nil {
			t.Fatalf("%s: reflection: %v", name, err)
		}
		d := newDecoder(bytes.NewReader(raw))
		if err := decodeRecords(d, &generated); err != nil {
			t.Fatalf("%s: generated: %v", name, err)
		}
		if !reflect.DeepEqual(viaReflection, generated) {
			t.Fatalf("%s: generated %#v, reflection %#v", name, generated, viaReflection)
		}
		if (viaReflection == nil) != (generated == nil) {
			t.Fatalf("%s: nil-ness differs", name)
		}
	}
	for name, v := range map[string]any{"nil": nil, "set": map[string]any{"code": "c", "reason": "r", "details": map[string]any{"k": int64(1)}}} {
		raw := mp(t, v)
		var viaReflection, generated *PluginViolation
		if err := newDecoder(bytes.NewReader(raw)).Decode(&viaReflection); err != nil {
			t.Fatalf("%s: reflection: %v", name, err)
		}
		generated = &PluginViolation{Code: "stale"} // a set pointer is overwritten, as reflection does
		if v == nil {
			if err := decodeRecordPtr(newDecoder(bytes.NewReader(raw)), &generated); err != nil || generated != nil {
				t.Fatalf("nil violation: got %#v, %v", generated, err)
			}
			continue
		}
		generated = nil
		if err := decodeRecordPtr(newDecoder(bytes.NewReader(raw)), &generated); err != nil {
			t.Fatalf("%s: generated: %v", name, err)
		}
		if !reflect.DeepEqual(viaReflection, generated) {
			t.Fatalf("%s: generated %#v, reflection %#v", name, generated, viaReflection)
		}
	}
	// The whole demo result, and its re-encoding: the same bytes.
	raw := refusedWriteResult(t)
	got, err := decodeResult(raw, 1)
	if err != nil {
		t.Fatal(err)
	}
	if again := mp(t, *got); !bytes.Equal(again, raw) {
		t.Fatalf("re-encoded %x, was %x", again, raw)
	}
	if got.Errors[0].Details["fields"].([]any)[0] != "security.labels" {
		t.Fatalf("details: %#v", got.Errors[0].Details)
	}
}

// A malformed record list or record is an error naming the field and the element.
func TestRecordDecodersRefuseMalformed(t *testing.T) {
	base := map[string]any{"continue_processing": true, "payload_modified": false, "extensions_modified": false, "payload_type": 1}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return mp(t, m)
	}
	truncated := with("errors", []any{map[string]any{"plugin_name": "a", "message": "m"}})
	truncated = truncated[:len(truncated)-3]
	cases := []struct {
		name string
		raw  []byte
		want string
	}{
		{"errors not a list", with("errors", "no"), "PipelineResult.errors: "},
		{"element not a map", with("errors", []any{"no"}), "PipelineResult.errors: [0]: PluginError: "},
		{"element missing a field", with("errors", []any{map[string]any{"plugin_name": "a", "message": "m"}, map[string]any{"plugin_name": "b"}}), "PipelineResult.errors: [1]: PluginError: missing a required field (plugin_name, message)"},
		{"element field of the wrong type", with("errors", []any{map[string]any{"plugin_name": 3, "message": "m"}}), "PipelineResult.errors: [0]: PluginError.plugin_name: "},
		{"violation not a map", with("violation", []any{1}), "PipelineResult.violation: PluginViolation: "},
		{"violation missing a field", with("violation", map[string]any{"code": "c"}), "PipelineResult.violation: PluginViolation: missing a required field (code, reason)"},
		{"truncated", truncated, "pipeline result: cannot decode the library's MessagePack: "},
	}
	for _, c := range cases {
		_, err := decodeResult(c.raw, 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
		// The pooled decoder is reset after a failure: a good result decodes next.
		if _, err := decodeResult(refusedWriteResult(t), 1); err != nil {
			t.Fatalf("%s: the next decode failed: %v", c.name, err)
		}
	}
}

// decodeKey gives exactly DecodeString's value or error, and leaves the decoder where
// DecodeString would, for every shape of key: the fast path (a short str read from a
// *bytes.Reader) and each case it hands back (a long str, str16, bin, nil, not a
// string, truncated, another reader).
func TestDecodeKeyMatchesDecodeString(t *testing.T) {
	long := strings.Repeat("k", maxFastKey+1)
	str16 := append([]byte{msgpcode.Str16, 0, 3}, "abc"...)
	inputs := map[string][]byte{
		"fixstr":      mp(t, "plugin_name"),
		"empty":       mp(t, ""),
		"str8 fits":   mp(t, strings.Repeat("s", maxFastKey)),
		"str8 long":   mp(t, long),
		"str16":       str16,
		"bin":         mp(t, []byte("bin")),
		"nil":         {msgpcode.Nil},
		"int":         mp(t, 7),
		"truncated":   mp(t, "plugin_name")[:5],
		"str8 no len": {msgpcode.Str8},
		"nothing":     {},
		"str8 cut":    {msgpcode.Str8, 4, 'a'},
	}
	for name, raw := range inputs {
		raw = append(raw, 0xc3) // a true after the key: both must stop at it
		want, wantErr := newDecoder(bytes.NewReader(raw)).DecodeString()
		for _, r := range []io.Reader{bytes.NewReader(raw), bufio.NewReader(bytes.NewReader(raw))} {
			d := newDecoder(r)
			var buf [maxFastKey]byte
			got, err := decodeKey(d, buf[:])
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("%s (%T): error %v, DecodeString's %v", name, r, err, wantErr)
			}
			if err != nil {
				continue
			}
			if string(got) != want {
				t.Fatalf("%s (%T): %q, DecodeString's %q", name, r, got, want)
			}
			if next, err := d.DecodeBool(); err != nil || !next {
				t.Fatalf("%s (%T): not left at the next value: %v %v", name, r, next, err)
			}
		}
	}
	// A field name longer than the fast path still reaches Extra, whole.
	raw := mp(t, map[string]any{"plugin_name": "a", "message": "m", long: 1})
	var e PluginError
	if err := decode(raw, &e, "test"); err != nil || len(e.Extra) != 1 || e.Extra[0].Key != long {
		t.Fatalf("long key: %#v, %v", e.Extra, err)
	}
}

func BenchmarkDecodeCMFMessage(b *testing.B) {
	raw, err := encode(MessagePayload{Message: Message{
		SchemaVersion: "1.0",
		Role:          "assistant",
		Content: []ContentPart{
			NewTextPart("Calling search_docs."),
			NewToolCallPart(ToolCall{ToolCallID: "call-1", Name: "search_docs", Arguments: map[string]any{"query": "quarterly report"}}),
		},
	}}, "message")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var m MessagePayload
		if err := decode(raw, &m, "message"); err != nil {
			b.Fatal(err)
		}
	}
}

// A union part's tag is found among any keys (long ones too) by the pooled peekTag; a
// malformed tag or part is an error naming the field.
func TestUnionPartDecodeOnPooledDecoders(t *testing.T) {
	long := strings.Repeat("x", maxFastKey+5)
	var p ContentPart
	if err := decode(mp(t, map[string]any{long: 1, "content_type": "text", "text": "hi"}), &p, "part"); err != nil {
		t.Fatal(err)
	}
	if p.ContentType != "text" || p.Text != "hi" || len(p.Extra) != 1 || p.Extra[0].Key != long {
		t.Fatalf("part %+v", p)
	}
	for name, c := range map[string]struct {
		raw  []byte
		want string
	}{
		"tag not a string": {mp(t, map[string]any{"content_type": 3, "text": "hi"}), "ContentPart: content_type: "},
		"not a map":        {mp(t, []any{1}), "ContentPart: "},
		"truncated":        {mp(t, map[string]any{"content_type": "text", "text": "hi"})[:8], "ContentPart: "},
	} {
		var p ContentPart
		err := decode(c.raw, &p, "part")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}
