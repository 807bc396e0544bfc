package cpex

import (
	"bytes"
	"reflect"
	"testing"
)

// The unchanged results generated from the schema (abi.yaml unchanged_result) are the
// bytes this SDK's encoder writes for a PipelineResult nobody changed, for every payload
// type; decodeResult recognises them and answers what a full decode would.
func TestUnchangedResultsAreWhatTheGoEncoderWrites(t *testing.T) {
	known := 0
	for id := 0; id <= 255; id++ {
		payloadType := uint8(id)
		want := unchangedResult(payloadType)
		if want == nil {
			continue
		}
		known++
		got, err := encode(PipelineResult{ContinueProcessing: true, PayloadType: payloadType}, "pipeline result")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("payload type %d: the Go encoder writes\n%x\nthe schema's unchanged result is\n%x", id, got, want)
		}
		decoded := &PipelineResult{}
		if err := decode(want, decoded, "pipeline result"); err != nil {
			t.Fatal(err)
		}
		shortcut, err := decodeResult(want, payloadType)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(shortcut, decoded) {
			t.Fatalf("payload type %d: decodeResult = %+v, a full decode = %+v", id, shortcut, decoded)
		}
		// A copy is recognised too (the library's buffer is never the constant itself).
		if again, err := decodeResult(append([]byte(nil), want...), payloadType); err != nil || !reflect.DeepEqual(again, decoded) {
			t.Fatalf("payload type %d: decodeResult of a copy = %+v, %v", id, again, err)
		}
	}
	if unchangedResult(PayloadGeneric) == nil || unchangedResult(PayloadCMFMessage) == nil {
		t.Fatalf("unchanged results for %d payload types; want one for each, PayloadGeneric and PayloadCMFMessage included", known)
	}
}

// Another payload type's unchanged result, or an empty buffer, is decoded, not taken
// for the shortcut.
func TestDecodeResultTakesTheShortcutOnlyForItsOwnPayloadType(t *testing.T) {
	res, err := decodeResult(unchangedResult(PayloadCMFMessage), PayloadGeneric)
	if err != nil || res.PayloadType != PayloadCMFMessage {
		t.Fatalf("decodeResult = %+v, %v; want the decoded payload type %d", res, err, PayloadCMFMessage)
	}
	if unchangedResult(200) != nil {
		t.Fatal("unchangedResult(200) is not nil")
	}
	if _, err := decodeResult(nil, 200); err == nil {
		t.Fatal("decodeResult of no bytes for an unknown payload type succeeded")
	}
}
