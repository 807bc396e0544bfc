package cpex

import (
	"bytes"
	"reflect"
	"sort"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Values keep their types across the boundary: bytes stay bytes (also inside maps
// and lists), integers stay integers, on the way in and back.
func TestBytesAndIntegersSurviveTheRoundTrip(t *testing.T) {
	m := started(t, config(t, "", traceAt("t", 10)))
	payload := map[string]any{
		"raw":    []byte{0, 1, 2},
		"nested": map[string]any{"blob": []byte("hi"), "list": []any{[]byte{9}, int64(7)}},
		"count":  3,
	}
	var res *TypedPipelineResult[map[string]any]
	res, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, payload, nil, nil)
	if err != nil || res.ModifiedPayload == nil {
		t.Fatalf("%v %+v", err, res)
	}
	got := *res.ModifiedPayload
	if raw, ok := got["raw"].([]byte); !ok || !bytes.Equal(raw, []byte{0, 1, 2}) {
		t.Fatalf("raw = %#v", got["raw"])
	}
	nested := got["nested"].(map[string]any)
	if blob, ok := nested["blob"].([]byte); !ok || string(blob) != "hi" {
		t.Fatalf("nested.blob = %#v", nested["blob"])
	}
	list := nested["list"].([]any)
	if b, ok := list[0].([]byte); !ok || b[0] != 9 {
		t.Fatalf("nested.list[0] = %#v", list[0])
	}
	if n, ok := list[1].(int64); !ok || n != 7 {
		t.Fatalf("nested.list[1] = %#v", list[1])
	}
	if n, ok := got["count"].(int64); !ok || n != 3 {
		t.Fatalf("count = %#v", got["count"])
	}
	var anyValue any
	raw, _ := encode([]any{[]byte{5}}, "v")
	if err := decode(raw, &anyValue, "v"); err != nil {
		t.Fatal(err)
	}
	if b, ok := anyValue.([]any)[0].([]byte); !ok || b[0] != 5 {
		t.Fatalf("top-level list: %#v", anyValue)
	}
}

// A host's own struct keeps bytes as bytes in a cpex.Map field, also as direct values
// of the map (a plain map[string]any field is decoded by the msgpack library, which
// makes those strings).
func TestMapFieldsOfAHostsStructKeepBytes(t *testing.T) {
	type call struct {
		Name string `msgpack:"name"`
		Args Map    `msgpack:"args"`
	}
	m := started(t, config(t, "", traceAt("t", 10)))
	in := call{Name: "x", Args: Map{"raw": []byte{0, 0xff}, "n": 3, "inner": map[string]any{"b": []byte{1}}}}
	res, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, in, nil, nil)
	if err != nil || res.ModifiedPayload == nil {
		t.Fatalf("%v %+v", err, res)
	}
	got := res.ModifiedPayload.Args
	if raw, ok := got["raw"].([]byte); !ok || !bytes.Equal(raw, []byte{0, 0xff}) {
		t.Fatalf("args.raw = %#v; want []byte", got["raw"])
	}
	if n, ok := got["n"].(int64); !ok || n != 3 {
		t.Fatalf("args.n = %#v; want int64", got["n"])
	}
	if b, ok := got["inner"].(map[string]any)["b"].([]byte); !ok || b[0] != 1 {
		t.Fatalf("args.inner.b = %#v", got["inner"])
	}
	var null struct {
		Args Map `msgpack:"args"`
	}
	raw, _ := encode(map[string]any{"args": nil}, "v")
	if err := decode(raw, &null, "v"); err != nil || null.Args != nil {
		t.Fatalf("nil args: %v %#v", err, null.Args)
	}
	raw, _ = encode(map[string]any{"args": []any{1}}, "v")
	if err := decode(raw, &null, "v"); err == nil {
		t.Fatal("a list decoded into a Map")
	}
}

// A record's typed map field (map<string,DataPolicy> here) encodes with its keys
// sorted, so the same record gives the same bytes every time.
func TestRecordMapsEncodeSorted(t *testing.T) {
	policies := map[string]DataPolicy{}
	for _, k := range []string{"j", "c", "a", "h", "e", "b", "i", "d", "g", "f"} {
		policies[k] = DataPolicy{}
	}
	rec := SecurityExtension{Data: policies}
	first, err := encode(rec, "security")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		again, _ := encode(rec, "security")
		if !bytes.Equal(again, first) {
			t.Fatalf("run %d encoded the same record differently", i)
		}
	}
}

// A record's map<string,any> field (ToolCall.Arguments) is written without reflection
// for its common shapes: the bytes are the reflective path's (the keys sorted at every
// depth, nested maps of other types, nil maps and scalars as msgpack writes them).
func TestUntypedMapFieldsEncodeAsTheReflectivePathDoes(t *testing.T) {
	args := map[string]any{
		"z": "text", "a": int64(-3), "m": map[string]any{"y": []any{"s", map[string]any{"k2": 1, "k1": nil}}, "b": true},
		"typed": map[string]int{"q": 2, "p": 1}, "nilmap": map[string]any(nil), "bytes": []byte{1, 2}, "f": 1.5,
	}
	for _, value := range []any{args, map[string]any{}, map[string]any(nil), "s", []any{args}} {
		var fast, slow bytes.Buffer
		if err := encodeSorted(newEncoder(&fast), value); err != nil {
			t.Fatal(err)
		}
		if err := reflectiveSorted(newEncoder(&slow), value); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast.Bytes(), slow.Bytes()) {
			t.Fatalf("%v encoded differently without reflection\n got %x\nwant %x", value, fast.Bytes(), slow.Bytes())
		}
	}
	call, err := encode(ToolCall{ToolCallID: "c", Name: "n", Arguments: args}, "call")
	if err != nil {
		t.Fatal(err)
	}
	var back ToolCall
	if err := decode(call, &back, "call"); err != nil || len(back.Arguments) != len(args) {
		t.Fatalf("decoded %+v: %v", back, err)
	}
}

// reflectiveSorted is encodeSorted by reflection alone, at every depth (its way before
// the switch on the common shapes).
func reflectiveSorted(enc *msgpack.Encoder, value any) error {
	rv := reflect.ValueOf(value)
	switch rv.Kind() {
	case reflect.Map:
		if rv.IsNil() || rv.Type().Key().Kind() != reflect.String {
			return enc.Encode(value)
		}
		keys := rv.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		if err := enc.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := enc.EncodeString(k.String()); err != nil {
				return err
			}
			if err := reflectiveSorted(enc, rv.MapIndex(k).Interface()); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if rv.IsNil() || rv.Type().Elem().Kind() == reflect.Uint8 {
			return enc.Encode(value)
		}
		if err := enc.EncodeArrayLen(rv.Len()); err != nil {
			return err
		}
		for i := 0; i < rv.Len(); i++ {
			if err := reflectiveSorted(enc, rv.Index(i).Interface()); err != nil {
				return err
			}
		}
		return nil
	}
	return enc.Encode(value)
}
