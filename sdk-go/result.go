//go:build cgo

package cpex

// IsDenied reports whether a plugin denied the call (Violation says who and why).
func (r *PipelineResult) IsDenied() bool {
	return !r.ContinueProcessing
}

// DecodeModifiedPayload decodes the modified payload into out (a pointer; a struct's
// fields are matched by their msgpack tags, else their json tags, as InvokeByName
// names them) and reports whether there was one; without a modification, out is left
// alone.
func (r *PipelineResult) DecodeModifiedPayload(out any) (bool, error) {
	if r.ModifiedPayload == nil {
		return false, nil
	}
	return true, decode(r.ModifiedPayload, out, "modified payload")
}
