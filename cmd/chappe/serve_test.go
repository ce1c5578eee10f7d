package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chappe/sqlstore/localpg"
)

// testVersion is stamped into the test binary the way release builds are.
const testVersion = "serve-test-1"

// TestBinary builds the real binary and runs it as an operator would: with
// no database configured, so `chappe serve` starts (and must stop) its
// embedded PostgreSQL cluster, and with the admin subcommands run next to it.
// It never uses CHAPPE_TEST_DATABASE_URL.
func TestBinary(t *testing.T) {
	if _, err := localpg.FindBinDir(); err != nil {
		t.Fatalf("the embedded default needs a PostgreSQL installation: %v", err)
	}
	bin := buildBinary(t)
	t.Run("version", func(t *testing.T) { testVersionCommand(t, bin) })
	t.Run("bad config", func(t *testing.T) { testBadConfig(t, bin) })
	t.Run("serve on the embedded database", func(t *testing.T) { testServeEmbedded(t, bin) })
}

// buildBinary runs `go build` on this package into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "chappe")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-ldflags", "-X main.version="+testVersion, "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// childEnv is this process's environment without any CHAPPE_ variable (so a
// CHAPPE_DATABASE_URL or CHAPPE_TEST_DATABASE_URL of the caller cannot leak
// in), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHAPPE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
}

// runChappe runs the binary to completion (at most timeout).
func runChappe(t *testing.T, bin string, env []string, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("chappe %s did not finish within %s\nstderr:\n%s", strings.Join(args, " "), timeout, stderr.String())
	}
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("running chappe %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func testVersionCommand(t *testing.T, bin string) {
	r := runChappe(t, bin, childEnv(), 30*time.Second, "version")
	if r.code != 0 {
		t.Fatalf("chappe version exited %d: %s", r.code, r.stderr)
	}
	if want := "chappe " + testVersion + "\n"; r.stdout != want {
		t.Fatalf("chappe version printed %q, want %q", r.stdout, want)
	}
}

// testBadConfig checks that serve refuses to start on a bad configuration
// and names every problem at once, before touching the data dir.
func testBadConfig(t *testing.T, bin string) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := childEnv(
		"CHAPPE_DATA_DIR="+dataDir,
		"CHAPPE_CLIENT_API_LISTEN=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"CHAPPE_REGISTRATION_MODE=bogus",
		"CHAPPE_LOG_LEVEL=loud",
	)
	r := runChappe(t, bin, env, 30*time.Second, "serve")
	if r.code == 0 {
		t.Fatalf("chappe serve with a bad configuration exited 0\nstderr:\n%s", r.stderr)
	}
	for _, want := range []string{"registration.mode", `"bogus"`, "log.level", `"loud"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not mention %s:\n%s", want, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused configuration still created %s/postgres (stat: %v)", dataDir, err)
	}
}

func testServeEmbedded(t *testing.T, bin string) {
	// When the tests run as root, PostgreSQL runs as the postgres user, which
	// must be able to walk down to the data dir: t.TempDir's directories are
	// 0700, so open them for traversal (not listing).
	top := t.TempDir()
	for _, d := range []string{filepath.Dir(top), top} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := filepath.Join(top, "data")
	pgData := filepath.Join(dataDir, "postgres", "data")
	pidFile := filepath.Join(pgData, "postmaster.pid")
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	env := childEnv(
		"CHAPPE_DATA_DIR="+dataDir,
		"CHAPPE_CLIENT_API_LISTEN=127.0.0.1:"+strconv.Itoa(port),
		"CHAPPE_REGISTRATION_MODE=open",
		"CHAPPE_LOG_FORMAT=json",
	)

	logPath := filepath.Join(top, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	serveLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	serve := exec.Command(bin, "serve")
	serve.Env = env
	serve.Stdout, serve.Stderr = logFile, logFile
	if err := serve.Start(); err != nil {
		t.Fatalf("starting chappe serve: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	stopped := false
	t.Cleanup(func() {
		// Only reached with the server still up when the test failed early:
		// never leave a server or a postmaster behind.
		if !stopped {
			_ = serve.Process.Kill()
			<-exited
		}
		if _, err := os.Stat(pidFile); err == nil {
			_, _ = pgCtl(t, "-D", pgData, "-m", "immediate", "-w", "stop")
		}
	})

	waitForVersions(t, base, exited, serveLog)
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("the server answers but the embedded cluster has no postmaster.pid: %v", err)
	}

	// An account through the client API: UIA with the dummy stage, then login.
	status, body := call(t, http.MethodPost, base+"/_matrix/client/v3/register", "",
		map[string]any{"username": "alice", "password": "alice's password"})
	session, _ := body["session"].(string)
	if status != http.StatusUnauthorized || session == "" || !strings.Contains(fmt.Sprint(body["flows"]), "m.login.dummy") {
		t.Fatalf("register without auth: %d %v, want a 401 UIA challenge offering m.login.dummy", status, body)
	}
	status, body = call(t, http.MethodPost, base+"/_matrix/client/v3/register", "", map[string]any{
		"username": "alice", "password": "alice's password",
		"auth": map[string]string{"type": "m.login.dummy", "session": session},
	})
	if status != http.StatusOK || body["user_id"] != "@alice:localhost" || body["access_token"] == nil {
		t.Fatalf("register: %d %v, want @alice:localhost with a token", status, body)
	}
	loginAs(t, base, "alice", "alice's password")

	// An administrator created by the CLI while the server runs: it must
	// reuse the running cluster, not start (or stop) one of its own.
	r := runChappe(t, bin, env, 2*time.Minute, "register-user", "--user", "bob", "--password", "bob's password", "--admin")
	if r.code != 0 {
		t.Fatalf("register-user exited %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if want := "created administrator @bob:localhost\n"; r.stdout != want {
		t.Fatalf("register-user printed %q, want %q", r.stdout, want)
	}
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("the embedded cluster stopped after register-user: %v", err)
	}
	loginAs(t, base, "bob", "bob's password")
	loginAs(t, base, "alice", "alice's password")

	// Registration tokens, also through the running cluster.
	r = runChappe(t, bin, env, 2*time.Minute, "registration-token", "create", "--uses", "1")
	token := strings.TrimSpace(r.stdout)
	if r.code != 0 || token == "" || strings.ContainsAny(token, " \t\n") {
		t.Fatalf("registration-token create: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	r = runChappe(t, bin, env, 2*time.Minute, "registration-token", "list")
	if r.code != 0 {
		t.Fatalf("registration-token list exited %d: %s", r.code, r.stderr)
	}
	if !hasTokenRow(r.stdout, token, "0", "1", "never") {
		t.Fatalf("registration-token list does not show %s as unused, 1 use allowed, never expiring:\n%s", token, r.stdout)
	}

	// SIGTERM: a clean exit, and the embedded cluster stopped with it.
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("chappe serve after SIGTERM: %v\nlog:\n%s", err, serveLog())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("chappe serve did not exit within 30s of SIGTERM\nlog:\n%s", serveLog())
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid still exists after the server stopped (stat: %v)", err)
	}
	if out, err := pgCtl(t, "-D", pgData, "status"); err == nil {
		t.Errorf("pg_ctl status says the cluster still runs:\n%s", out)
	} else if code := exitCode(err); code != 3 {
		t.Errorf("pg_ctl status: %v (exit %d), want exit 3 (no server running)\n%s", err, code, out)
	}
	if pids := processesMentioning(pgData); len(pids) > 0 {
		t.Errorf("processes still running on %s: %v", pgData, pids)
	}

	checkJSONLog(t, serveLog())
}

// checkJSONLog checks that with CHAPPE_LOG_FORMAT=json every line of the
// server's output is a JSON log record, that it said which version started
// and that it logged its stop.
func checkJSONLog(t *testing.T, log string) {
	t.Helper()
	var sawStart, sawStop bool
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["level"] == nil || rec["time"] == nil {
			t.Errorf("log record without level or time: %q", line)
		}
		switch rec["message"] {
		case "starting chappe":
			sawStart = rec["version"] == testVersion
		case "stopped":
			sawStop = true
		}
	}
	if !sawStart || !sawStop {
		t.Errorf("log lacks the start record with version %s (%v) or the stop record (%v):\n%s", testVersion, sawStart, sawStop, log)
	}
}

// waitForVersions polls /_matrix/client/versions until it answers (60s).
func waitForVersions(t *testing.T, base string, exited <-chan error, serveLog func() string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("chappe serve exited before answering (%v)\nlog:\n%s", err, serveLog())
		default:
		}
		resp, err := client.Get(base + "/_matrix/client/versions")
		if err == nil {
			var v struct {
				Versions []string `json:"versions"`
			}
			decodeErr := json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && decodeErr == nil && len(v.Versions) > 0 {
				return
			}
			t.Fatalf("/versions answered %d with %v (decode: %v)", resp.StatusCode, v, decodeErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/_matrix/client/versions did not answer within 60s: %v\nlog:\n%s", err, serveLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// call sends a JSON request and decodes the JSON answer.
func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object (status %d): %v", method, url, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// loginAs logs in with a password and checks the token with whoami.
func loginAs(t *testing.T, base, localpart, password string) {
	t.Helper()
	status, body := call(t, http.MethodPost, base+"/_matrix/client/v3/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": localpart},
		"password":   password,
	})
	userID := "@" + localpart + ":localhost"
	token, _ := body["access_token"].(string)
	if status != http.StatusOK || body["user_id"] != userID || token == "" {
		t.Fatalf("login as %s: %d %v, want %s with a token", localpart, status, body, userID)
	}
	status, body = call(t, http.MethodGet, base+"/_matrix/client/v3/account/whoami", token, nil)
	if status != http.StatusOK || body["user_id"] != userID {
		t.Fatalf("whoami for %s: %d %v", localpart, status, body)
	}
}

// hasTokenRow tells whether the list output has a row for token with these columns.
func hasTokenRow(list, token string, cols ...string) bool {
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == len(cols)+1 && f[0] == token {
			for i, c := range cols {
				if f[i+1] != c {
					return false
				}
			}
			return true
		}
	}
	return false
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// pgCtl runs the installation's pg_ctl, as the postgres user when we are root
// (pg_ctl refuses to run as root, and the cluster belongs to postgres).
func pgCtl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bindir, err := localpg.FindBinDir()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bindir, "pg_ctl"), args...)
	cmd.Dir = os.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode()
	}
	return -1
}

// processesMentioning lists the PIDs whose command line contains s (Linux /proc).
func processesMentioning(s string) []string {
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, e.Name()+": "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return pids
}
