package cpex

import (
	"bytes"
	"reflect"
	"sort"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Structs tagged for encoding/json only go over under their json names: a field
// without a msgpack tag falls back to its json tag, with `-` and omitempty honoured,
// in nested structs too; a msgpack tag always wins.

type jsonArgs struct {
	Query string `json:"query"`
	Limit int    `json:"limit,omitempty"`
}

type jsonCall struct {
	ToolName  string   `json:"tool_name"`
	Block     bool     `json:"block,omitempty"`
	Trace     []string `json:"trace,omitempty"`
	Arguments jsonArgs `json:"arguments"`
	Secret    string   `json:"-"`
	Untagged  string
}

type bothTags struct {
	ToolName string `msgpack:"tool_name" json:"name"`
	Hidden   string `msgpack:"-" json:"hidden"`
	Shown    string `msgpack:"shown" json:"-"`
	Options  string `msgpack:",omitempty" json:"options_json"` // a msgpack tag of options only still wins
}

// keysOf decodes a MessagePack map and returns its keys, sorted.
func keysOf(t *testing.T, data []byte) ([]string, map[string]any) {
	t.Helper()
	var m map[string]any
	if err := decode(data, &m, "test map"); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, m
}

func TestJSONTagsAreTheFallbackOfTheCodec(t *testing.T) {
	data, err := encode(jsonCall{ToolName: "search", Arguments: jsonArgs{Query: "q"}, Secret: "s", Untagged: "u"}, "payload")
	if err != nil {
		t.Fatal(err)
	}
	keys, m := keysOf(t, data)
	if want := []string{"Untagged", "arguments", "tool_name"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys = %v; want %v (block and trace empty under omitempty, Secret skipped by json:\"-\")", keys, want)
	}
	if args, _ := m["arguments"].(map[string]any); !reflect.DeepEqual(args, map[string]any{"query": "q"}) {
		t.Fatalf("nested struct = %#v; want its json names and limit omitted", m["arguments"])
	}

	data, err = encode(bothTags{ToolName: "x", Hidden: "h", Shown: "s"}, "payload")
	if err != nil {
		t.Fatal(err)
	}
	if keys, _ := keysOf(t, data); !reflect.DeepEqual(keys, []string{"shown", "tool_name"}) {
		t.Fatalf("keys with both tags = %v; want the msgpack names only", keys)
	}

	var back jsonCall
	in := map[string]any{"tool_name": "t", "block": true, "trace": []string{"a"}, "arguments": map[string]any{"query": "q", "limit": 3}, "Secret": "no"}
	raw, err := encode(in, "map")
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(raw, &back, "json-tagged struct"); err != nil {
		t.Fatal(err)
	}
	want := jsonCall{ToolName: "t", Block: true, Trace: []string{"a"}, Arguments: jsonArgs{Query: "q", Limit: 3}}
	if !reflect.DeepEqual(back, want) {
		t.Fatalf("decoded %+v; want %+v", back, want)
	}
}

// The generated records encode themselves field by field: the fallback does not change
// a byte of them (the vectors test checks every shared vector; this checks the codec
// against msgpack's own, tag-less configuration on a record with nested records).
func TestJSONFallbackLeavesTheGeneratedRecordsAlone(t *testing.T) {
	ext := Extensions{Custom: map[string]any{"k": "v"}, Meta: &MetaExtension{EntityType: "tool", EntityName: "x", Tags: []string{"a"}}}
	ours, err := encode(ext, "extensions")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	plain := msgpack.NewEncoder(&buf)
	plain.UseCompactInts(true)
	plain.SetSortMapKeys(true)
	if err := plain.Encode(ext); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, buf.Bytes()) {
		t.Fatalf("the json fallback changed a generated record's bytes\n got %x\nwant %x", ours, buf.Bytes())
	}
}

func TestJSONTaggedPayloadThroughAnInvoke(t *testing.T) {
	m := started(t, config(t, "",
		plugin("guard", "DenyWhenBlocked", pre, "priority: 1"),
		plugin("tracer", "Trace", pre, "priority: 2", "config: {tag: t1}")))

	// The plugin reads payload["tool_name"] and payload["block"].
	res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, jsonCall{ToolName: "rm", Block: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsDenied() || res.Violation.Details["tool"] != "rm" {
		t.Fatalf("the plugin did not see tool_name / block: %+v %+v", res, res.Violation)
	}

	// The tracer returns {**payload, trace: [...]}: the keys it saw come back.
	call := jsonCall{ToolName: "search", Arguments: jsonArgs{Query: "q", Limit: 5}, Secret: "never sent"}
	raw, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, call, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, seen := keysOf(t, raw.ModifiedPayload)
	if want := []string{"Untagged", "arguments", "tool_name", "trace"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("the plugin saw the keys %v; want %v", keys, want)
	}
	if seen["tool_name"] != "search" {
		t.Fatalf("tool_name = %#v", seen["tool_name"])
	}

	// The modified payload decodes back into the json-tagged struct.
	typed, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, call, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := jsonCall{ToolName: "search", Trace: []string{"t1"}, Arguments: jsonArgs{Query: "q", Limit: 5}}
	if typed.ModifiedPayload == nil || !reflect.DeepEqual(*typed.ModifiedPayload, want) {
		t.Fatalf("typed modified payload = %+v; want %+v", typed.ModifiedPayload, want)
	}
	out, err := DeserializePayload[jsonCall](raw.ModifiedPayload)
	if out == nil || err != nil || out.ToolName != "search" || !reflect.DeepEqual(out.Trace, []string{"t1"}) {
		t.Fatalf("DeserializePayload = %+v, %v", out, err)
	}

	// With both tags, the msgpack one names the field.
	both, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, bothTags{ToolName: "ls", Hidden: "h", Shown: "s"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if keys, _ := keysOf(t, both.PipelineResult.ModifiedPayload); !reflect.DeepEqual(keys, []string{"shown", "tool_name", "trace"}) {
		t.Fatalf("the plugin saw the keys %v of a struct with both tags", keys)
	}
	if got := *both.ModifiedPayload; got != (bothTags{ToolName: "ls", Shown: "s"}) {
		t.Fatalf("typed modified payload with both tags = %+v", got)
	}
}
