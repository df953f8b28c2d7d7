package edge_test

import (
	"testing"

	"github.com/edgeid/edgeid/internal/pgtest"
)

// TestMain stops the PostgreSQL server the replica tests start, if any.
func TestMain(m *testing.M) { pgtest.Main(m) }
