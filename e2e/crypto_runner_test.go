//go:build !goolm

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestMautrixCryptoGoolm runs the mautrix-go end-to-end encryption tests of
// crypto_test.go. They need mautrix's pure-Go Olm (goolm), which mautrix
// v0.31 selects only with the goolm build tag: without it, its crypto
// package links libolm through cgo. So that a plain `go test ./...` runs
// them, this test (built only without the tag) starts
//
//	go test -tags goolm -run '^TestMautrixCrypto' -count=1 -v .
//
// on this package with CGO_ENABLED=0, and fails if that run fails. The child
// uses the same test database server (CHAPPE_TEST_DATABASE_URL, or its own
// private cluster). Its output is streamed to this test's log.
func TestMautrixCryptoGoolm(t *testing.T) {
	goBin := goTool(t)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	args := []string{"test", "-tags", "goolm", "-run", "^TestMautrixCrypto", "-count=1", "-timeout", "7m", "-v", "."}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := runStreaming(t, cmd, "goolm")
	t.Logf("go test -tags goolm took %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("go %v (CGO_ENABLED=0): %v (the failing steps are above, prefixed with goolm |)", args, err)
	}
}

// goTool is the go command: the one on PATH, else the one of the toolchain
// that built this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the go command is not on PATH nor in %s: the goolm crypto tests run in a child go test", p)
	}
	return p
}
