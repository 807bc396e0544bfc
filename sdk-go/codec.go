package cpex

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// fallbackStructTag names a struct field that has no msgpack tag. Hosts often have
// their payload structs tagged for encoding/json only; without the fallback such a
// field would go over under its Go name (ToolName, not tool_name) and no plugin would
// find it. The msgpack library reads the fallback tag exactly as a msgpack tag: its
// name, "-" to skip the field, omitempty; a field with a msgpack tag (even one with
// options only) never looks at its json tag. The generated records encode and decode
// themselves field by field, so the fallback does not touch them.
const fallbackStructTag = "json"

// newEncoder writes MessagePack as Python's msgpack does for the same values: compact
// integers (the smallest encoding), floats as float64, and map keys sorted (a Go map
// has no order; sorted keys make the bytes deterministic). Struct fields are named by
// their msgpack tags, else their json tags (fallbackStructTag).
func newEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	enc.SetCustomStructTag(fallbackStructTag)
	return enc
}

// newDecoder decodes untyped numbers as int64 / uint64 / float64 rather than the
// narrowest type of their encoding, and untyped maps as map[string]any. Struct fields
// are matched by their msgpack tags, else their json tags, as newEncoder names them.
func newDecoder(r io.Reader) *msgpack.Decoder {
	dec := msgpack.NewDecoder(r)
	dec.UseLooseInterfaceDecoding(true)
	dec.SetCustomStructTag(fallbackStructTag)
	return dec
}

// encode writes v as MessagePack with named fields.
func encode(v any, what string) ([]byte, error) {
	var buf bytes.Buffer
	if err := newEncoder(&buf).Encode(v); err != nil {
		return nil, &Error{Code: codeInvalidInput, Message: fmt.Sprintf("%s: cannot encode as MessagePack: %v", what, err)}
	}
	return buf.Bytes(), nil
}

// decode reads MessagePack into v.
func decode(data []byte, v any, what string) error {
	if err := newDecoder(bytes.NewReader(data)).Decode(v); err != nil {
		return &Error{Code: codeSerialize, Message: fmt.Sprintf("%s: cannot decode the library's MessagePack: %v", what, err)}
	}
	return nil
}
