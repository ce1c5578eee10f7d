package e2e

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"chappe/app/apptest"
)

// TestJSSDKCrypto runs e2e/jssdk/crypto.test.mjs: matrix-js-sdk clients with
// the Rust crypto (initRustCrypto, the stack Element Web runs) exchange
// Megolm-encrypted messages through a real server, with the keys, one-time
// keys, to-device messages and device-list changes that takes. Node and npm
// must be installed: the test fails, never skips, without them.
func TestJSSDKCrypto(t *testing.T) {
	node := lookTool(t, "node")
	ensureNodeModules(t)
	srv := apptest.Start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "crypto.test.mjs")
	cmd.Dir = jssdkDir
	cmd.Env = append(os.Environ(), "CHAPPE_BASE_URL="+srv.URL)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := runStreaming(t, cmd, "node crypto.test.mjs")
	t.Logf("node crypto.test.mjs took %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("node crypto.test.mjs against %s: %v (each failed step is listed above as FAIL, with what it waited for and the server's error answers)", srv.URL, err)
	}
}
