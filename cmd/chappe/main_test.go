package main

import (
	"testing"

	"chappe/sqlstore/sqltest"
)

// TestMain drops the test databases (and stops the private PostgreSQL
// cluster, if one was started) when the package's tests end.
func TestMain(m *testing.M) { sqltest.Main(m) }
