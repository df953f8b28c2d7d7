package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/edgeid/edgeid/store"
)

// DecodeBatch reads an import file (the body of POST /v1/import) strictly:
// unknown fields are errors, so a typo does not silently import half a record.
// The CLI runs it before sending, the server again on receipt.
func DecodeBatch(r io.Reader) (*store.Batch, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var b store.Batch
	if err := dec.Decode(&b); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("import file: JSON syntax error at byte %d: %v", se.Offset, err)
		}
		return nil, fmt.Errorf("import file: %v (see docs/OPERATIONS.md for the format)", err)
	}
	if dec.More() {
		return nil, errors.New("import file: trailing data after the JSON object")
	}
	if b.Empty() {
		return nil, errors.New("import file: no records (expected classes, devices, users, grants, issuers, revocations or delete)")
	}
	return &b, nil
}
