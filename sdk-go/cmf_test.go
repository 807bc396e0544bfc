package cpex

import (
	"bytes"
	"os"
	"testing"
)

// A part of a content type Go does not know goes through the engine (which modifies
// the message) and comes back byte for byte.
func TestUnknownContentPartSurvivesGoEngineGo(t *testing.T) {
	raw, err := os.ReadFile("../tests/vectors/ContentPart.unknown_variant.msgpack")
	if err != nil {
		t.Fatal(err)
	}
	var unknown ContentPart
	if err := decode(raw, &unknown, "unknown part"); err != nil {
		t.Fatal(err)
	}
	m := started(t, config(t, "", plugin("append", "CmfAppendText", "[cmf.tool_pre_invoke]", "config: {text: done}")))
	payload := MessagePayload{Message: Message{SchemaVersion: "1.0", Role: "assistant", Content: []ContentPart{
		NewTextPart("please"),
		NewToolCallPart(ToolCall{ToolCallID: "c1", Name: "search", Arguments: map[string]any{"q": "x"}}),
		unknown,
	}}}
	res, _, _, err := m.InvokeByName("cmf.tool_pre_invoke", PayloadCMFMessage, payload, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DeserializePayload[MessagePayload](res.ModifiedPayload)
	if out == nil || err != nil {
		t.Fatalf("DeserializePayload = %v, %v", out, err)
	}
	parts := out.Message.Content
	if len(parts) != 4 {
		t.Fatalf("%d parts", len(parts))
	}
	if parts[2].Known() || !bytes.Equal(parts[2].Raw, raw) {
		t.Fatalf("unknown part came back as %+v", parts[2])
	}
	if parts[1].ToolCall == nil || parts[1].ToolCall.Arguments["q"] != "x" {
		t.Fatalf("tool call part came back as %+v", parts[1])
	}
	if parts[3].ContentType != "text" || parts[3].Text != "done" {
		t.Fatalf("appended part = %+v", parts[3])
	}
}

func TestToolPolicyDeniesAForbiddenCall(t *testing.T) {
	m := started(t, config(t, "", plugin("policy", "CmfToolPolicy", "[cmf.tool_pre_invoke]", "config: {forbidden: [delete]}")))
	msg := MessagePayload{Message: Message{SchemaVersion: "1.0", Role: "assistant", Content: []ContentPart{
		NewToolCallPart(ToolCall{ToolCallID: "c9", Name: "delete"}),
	}}}
	res, _, _, err := m.InvokeByName("cmf.tool_pre_invoke", PayloadCMFMessage, msg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsDenied() || res.Violation.PluginName != "policy" || res.Violation.Details["tool_call_id"] != "c9" {
		t.Fatalf("result = %+v", res)
	}
}

// A guarded write comes back in the modified extensions only with its capability.
func TestHeaderWritesNeedWriteHeaders(t *testing.T) {
	for _, tc := range []struct {
		caps    string
		written bool
	}{{"[read_headers]", false}, {"[read_headers, write_headers]", true}} {
		m := started(t, config(t, "", plugin("hdr", "ExtensionEditor", pre, "capabilities: "+tc.caps, "on_error: ignore",
			`config: {set: {"http.response_headers": {"x-processed": "yes"}}}`)))
		ext := Extensions{HTTP: &HttpExtension{RequestHeaders: map[string]string{"host": "a"}}}
		res, _, _, err := m.InvokeByName("tool_pre_invoke", PayloadGeneric, map[string]any{}, ext, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.written {
			if res.ModifiedExtensions != nil || len(res.Errors) != 1 || res.Errors[0].Code != "extension_write_refused" {
				t.Fatalf("%s: result %+v", tc.caps, res)
			}
			continue
		}
		var got Extensions
		if err := decode(res.ModifiedExtensions, &got, "extensions"); err != nil {
			t.Fatal(err)
		}
		if got.HTTP == nil || got.HTTP.ResponseHeaders["x-processed"] != "yes" || got.HTTP.RequestHeaders["host"] != "a" {
			t.Fatalf("%s: modified extensions %+v", tc.caps, got.HTTP)
		}
	}
}
