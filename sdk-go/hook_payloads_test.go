package cpex

import (
	"reflect"
	"sort"
	"testing"
)

// hookPayloadAsMap decodes MessagePack as a generic map, as a plugin or py-cpex sees it.
func hookPayloadAsMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := decode(data, &m, "payload as a map"); err != nil {
		t.Fatal(err)
	}
	return m
}

func hookPayloadKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isGoInteger(v any) bool {
	switch v.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return true
	}
	return false
}

// The typed payload goes over under py-cpex's field names, its args as they were.
func TestToolPreInvokePayloadHasPyCpexWireNames(t *testing.T) {
	data, err := encode(ToolPreInvokePayload{Name: "search", Args: map[string]any{"q": "x", "n": 3}}, "payload")
	if err != nil {
		t.Fatal(err)
	}
	m := hookPayloadAsMap(t, data)
	if keys := hookPayloadKeys(m); !reflect.DeepEqual(keys, []string{"args", "name"}) {
		t.Fatalf("keys = %v; want [args name] (headers empty, so omitted)", keys)
	}
	if m["name"] != "search" {
		t.Fatalf("name = %#v", m["name"])
	}
	args, ok := m["args"].(map[string]any)
	if !ok {
		t.Fatalf("args = %#v", m["args"])
	}
	if !isGoInteger(args["n"]) || args["n"] != int64(3) {
		t.Fatalf("args.n = %#v (%T); want the integer 3", args["n"], args["n"])
	}
	if args["q"] != "x" {
		t.Fatalf("args.q = %#v", args["q"])
	}
	var back ToolPreInvokePayload
	if err := decode(data, &back, "payload"); err != nil || back.Name != "search" || back.Args["n"] != int64(3) {
		t.Fatalf("decoded back as %+v, %v", back, err)
	}
}

// Fields with a py-cpex default that zero must not replace survive as 0; the others
// are omitted when empty and py-cpex fills in its default.
func TestHookPayloadDefaultsAndPointers(t *testing.T) {
	zero := int64(0)
	data, err := encode(IdentityResult{RejectStatus: &zero}, "identity result")
	if err != nil {
		t.Fatal(err)
	}
	if m := hookPayloadAsMap(t, data); !reflect.DeepEqual(hookPayloadKeys(m), []string{"reject_status"}) || m["reject_status"] != int64(0) {
		t.Fatalf("IdentityResult{RejectStatus: &0} = %v", m)
	}
	data, err = encode(DelegationPayload{TargetName: "search", TargetType: "tool", AuthEnforcedBy: "caller"}, "delegation")
	if err != nil {
		t.Fatal(err)
	}
	if keys := hookPayloadKeys(hookPayloadAsMap(t, data)); !reflect.DeepEqual(keys, []string{"auth_enforced_by", "target_name", "target_type"}) {
		t.Fatalf("DelegationPayload keys = %v", keys)
	}
	raw, err := encode(map[string]any{"raw_token": "t"}, "identity")
	if err != nil {
		t.Fatal(err)
	}
	var identity IdentityPayload
	if err := decode(raw, &identity, "identity"); err != nil || identity.Source != "bearer" {
		t.Fatalf("IdentityPayload without source = %+v, %v; want source bearer", identity, err)
	}
}

// A Go host invokes with a typed payload; the plugin (Python) receives py-cpex's
// field names and an integer stays an integer.
func TestInvokeWithATypedHookPayload(t *testing.T) {
	m := started(t, config(t, "", plugin("keys", "PayloadKeys", "[tool_pre_invoke, identity_resolve]")))
	payload := ToolPreInvokePayload{Name: "search", Args: map[string]any{"q": "x", "n": 3, "raw": []byte{0, 0xff}}}
	res, _, _, err := Invoke(m, "tool_pre_invoke", PayloadGeneric, payload, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.ContinueProcessing || res.ModifiedPayload != nil {
		t.Fatalf("result = %+v", res.PipelineResult)
	}
	if got := res.Metadata["payload_keys"]; !reflect.DeepEqual(got, []any{"args", "name"}) {
		t.Fatalf("the plugin saw keys %#v; want [args name]", got)
	}
	want := map[string]any{"q": "str", "n": "int", "raw": "bytes"}
	if got := res.Metadata["arg_types"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("the plugin saw arg types %#v; want %v", got, want)
	}
	who := IdentityPayload{RawToken: "eyJ...", Source: "bearer", Headers: map[string]string{"authorization": "Bearer eyJ..."}}
	out, _, _, err := m.InvokeByName("identity_resolve", PayloadGeneric, who, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Metadata["payload_keys"]; !reflect.DeepEqual(got, []any{"headers", "raw_token", "source"}) {
		t.Fatalf("identity_resolve: the plugin saw keys %#v", got)
	}
}

// Go's empty values mean py-cpex's: a required list left nil goes as an empty list (a
// nil would fail py-cpex's model), and a defaulted string left "" is left off the wire
// so the default applies.
func TestGoZeroValuesMeanPyCpexDefaults(t *testing.T) {
	data, err := encode(AgentPreInvokePayload{AgentID: "a"}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	if m := hookPayloadAsMap(t, data); !reflect.DeepEqual(m["messages"], []any{}) {
		t.Fatalf("AgentPreInvokePayload{} messages = %#v; want an empty list", m["messages"])
	}
	data, err = encode(IdentityPayload{RawToken: "t"}, "identity")
	if err != nil {
		t.Fatal(err)
	}
	if m := hookPayloadAsMap(t, data); !reflect.DeepEqual(hookPayloadKeys(m), []string{"raw_token"}) {
		t.Fatalf("IdentityPayload{RawToken} = %v; want raw_token only", m)
	}

	m := started(t, config(t, "", "  - name: defaults\n    kind: pycpex_test_plugins.SeesDefaults\n    hooks: [agent_pre_invoke, identity_resolve]\n"))
	res, _, _, err := m.InvokeByName("agent_pre_invoke", PayloadGeneric, AgentPreInvokePayload{AgentID: "a"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Metadata["messages"]; !reflect.DeepEqual(got, []any{}) {
		t.Fatalf("the py-cpex plugin saw messages %#v; want []", got)
	}
	res, _, _, err = m.InvokeByName("identity_resolve", PayloadGeneric, IdentityPayload{RawToken: "t"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Metadata["source"]; got != "bearer" {
		t.Fatalf("the py-cpex plugin saw source %#v; want py-cpex's default bearer", got)
	}
}
