package cpex

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

type vector struct {
	Name string `json:"name"`
	Type string `json:"type"`
	File string `json:"file"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile("../tests/vectors/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// Every shared vector decodes into its generated type and re-encodes to the same
// bytes; the Python suite checks the same files.
func TestVectorsRoundTripByteForByte(t *testing.T) {
	vs := loadVectors(t)
	if len(vs) < 80 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("../tests/vectors", v.File))
			if err != nil {
				t.Fatal(err)
			}
			mk, ok := wireTypes[v.Type]
			if !ok {
				t.Fatalf("no Go type %s", v.Type)
			}
			value := mk()
			if err := decode(data, value, v.Name); err != nil {
				t.Fatal(err)
			}
			again, err := encode(value, v.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, data) {
				t.Fatalf("re-encoded bytes differ\n got %x\nwant %x", again, data)
			}
		})
	}
}

func TestUnknownFieldsAndVariantsAreKept(t *testing.T) {
	data, _ := os.ReadFile("../tests/vectors/ToolCall.unknown_field.msgpack")
	var call ToolCall
	if err := decode(data, &call, "tool call"); err != nil {
		t.Fatal(err)
	}
	if len(call.Extra) != 1 || call.Extra[0].Key != "x_future_field" {
		t.Fatalf("Extra = %+v", call.Extra)
	}
	data, _ = os.ReadFile("../tests/vectors/ContentPart.unknown_variant.msgpack")
	var part ContentPart
	if err := decode(data, &part, "part"); err != nil {
		t.Fatal(err)
	}
	if part.Known() || part.ContentType != "hologram" || part.Raw == nil {
		t.Fatalf("unknown variant decoded as %+v", part)
	}
	data, _ = os.ReadFile("../tests/vectors/ContentPart.tool_call.msgpack")
	if err := decode(data, &part, "part"); err != nil {
		t.Fatal(err)
	}
	if !part.Known() || part.ToolCall == nil || part.ToolCall.Name != "tool_call-content" && part.ToolCall.Name != "toolcall-name" {
		t.Fatalf("tool call part decoded as %+v", part)
	}
}

func TestMissingRequiredFieldIsAnError(t *testing.T) {
	data, err := encode(map[string]any{"name": "x"}, "tool call")
	if err != nil {
		t.Fatal(err)
	}
	var call ToolCall
	if err := decode(data, &call, "tool call"); err == nil {
		t.Fatal("a ToolCall without tool_call_id decoded")
	}
}
