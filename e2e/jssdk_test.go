package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"chappe/app/apptest"
	"chappe/config"
)

// jssdkDir is the Node package with the matrix-js-sdk test (see its
// package.json and sync.test.mjs).
const jssdkDir = "jssdk"

// TestJSSDKSync runs e2e/jssdk/sync.test.mjs, where two matrix-js-sdk
// clients (the SDK Element Web is built on) run their real sync loops against
// a real server: invite, join, live messages, typing, receipts, unread counts,
// renames and leaves. Node and npm must be installed: the test fails, never
// skips, without them. node_modules is installed with `npm ci` from the
// committed package-lock.json when it is missing or out of date (.ci/run does
// it beforehand).
func TestJSSDKSync(t *testing.T) {
	node := lookTool(t, "node")
	ensureNodeModules(t)
	// This scenario runs matrix-js-sdk without its crypto, so its rooms must
	// not be encrypted by default (the crypto scenario covers encryption).
	srv := apptest.Start(t, func(c *config.Config) { c.Rooms.EncryptPrivateByDefault = false })

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "sync.test.mjs")
	cmd.Dir = jssdkDir
	cmd.Env = append(os.Environ(), "CHAPPE_BASE_URL="+srv.URL)
	cmd.WaitDelay = 5 * time.Second
	if err := runStreaming(t, cmd, "node sync.test.mjs"); err != nil {
		t.Fatalf("node sync.test.mjs against %s: %v (each failed step is listed above as FAIL, with what it waited for and the server's error answers)", srv.URL, err)
	}
}

// lookTool finds a command on PATH or fails the test saying how to get it.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (or not on PATH): the matrix-js-sdk end-to-end test needs Node.js 20 or newer and npm (Debian: apt-get install nodejs npm): %v", name, err)
	}
	return p
}

// ensureNodeModules runs `npm ci` in e2e/jssdk unless node_modules already
// holds the matrix-js-sdk version that package-lock.json pins.
func ensureNodeModules(t *testing.T) {
	t.Helper()
	want, err := lockedVersion(filepath.Join(jssdkDir, "package-lock.json"), "node_modules/matrix-js-sdk")
	if err != nil {
		t.Fatalf("reading e2e/jssdk/package-lock.json: %v", err)
	}
	have, err := installedVersion(filepath.Join(jssdkDir, "node_modules", "matrix-js-sdk", "package.json"))
	if err == nil && have == want {
		return
	}
	reason := "node_modules is missing"
	if err == nil {
		reason = "node_modules has matrix-js-sdk " + have + ", the lock file pins " + want
	}
	npm := lookTool(t, "npm")
	t.Logf("e2e/jssdk: %s; running npm ci", reason)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = jssdkDir
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := runStreaming(t, cmd, "npm ci"); err != nil {
		t.Fatalf("npm ci in e2e/jssdk failed after %v: %v (it needs the npm registry; run it by hand to see why)", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("npm ci took %v", time.Since(start).Round(time.Millisecond))
	if have, err := installedVersion(filepath.Join(jssdkDir, "node_modules", "matrix-js-sdk", "package.json")); err != nil || have != want {
		t.Fatalf("after npm ci, node_modules has matrix-js-sdk %q (%v), want %s", have, err, want)
	}
}

func lockedVersion(lockFile, pkg string) (string, error) {
	raw, err := os.ReadFile(lockFile)
	if err != nil {
		return "", err
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(raw, &lock); err != nil {
		return "", err
	}
	p, ok := lock.Packages[pkg]
	if !ok || p.Version == "" {
		return "", errors.New("no " + pkg + " in the lock file")
	}
	return p.Version, nil
}

func installedVersion(packageJSON string) (string, error) {
	raw, err := os.ReadFile(packageJSON)
	if err != nil {
		return "", err
	}
	var p struct {
		Version string `json:"version"`
	}
	err = json.Unmarshal(raw, &p)
	return p.Version, err
}

// runStreaming runs cmd with its stdout and stderr written line by line to
// the test log as they come, so a hung step shows how far it got.
func runStreaming(t *testing.T, cmd *exec.Cmd, label string) error {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			t.Logf("%s | %s", label, strings.TrimRight(sc.Text(), "\r"))
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	_ = pw.Close()
	wg.Wait()
	return err
}
