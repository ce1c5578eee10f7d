// Package e2e drives real Chappe servers with a real Matrix client library
// (mautrix-go), the way Element and bots would, to check that what the
// server says on the wire is what clients expect.
package e2e

import (
	"testing"

	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }
