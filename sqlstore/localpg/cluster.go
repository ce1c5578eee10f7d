// Package localpg runs a private PostgreSQL cluster from the machine's
// PostgreSQL installation: the embedded default used when no database URL is
// configured, and the test database when no test server is given.
//
// The cluster lives under one directory, listens on a unix socket only (no
// TCP), trusts local connections (the socket directory is private to its
// owner) and is stopped by Stop. When the process runs as root, PostgreSQL
// refuses to run, so the cluster runs as the "postgres" system user.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// superuser is the role initdb creates; the cluster is private so one role is enough.
const superuser = "chappe"

// Cluster is a running private PostgreSQL.
type Cluster struct {
	dir       string // root directory: data/, run/ (socket), postgres.log
	socketDir string
	bindir    string
	cred      *syscall.Credential // non-nil when running the binaries as another user
	owned     bool                // we started it, so Stop stops it
}

// ErrNoPostgres says PostgreSQL is not installed, and what to install.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL " +
	"(Debian/Ubuntu: apt install postgresql) or set database.url / CHAPPE_DATABASE_URL to an existing server")

// FindBinDir locates initdb and pg_ctl: `pg_config --bindir` first, then the
// newest /usr/lib/postgresql/*/bin (Debian's layout), then PATH.
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", ErrNoPostgres
}

func pgVersion(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

// Start initialises the cluster under dir if needed and starts it. If a
// postmaster from an earlier run is still serving that directory, Start
// connects to it and Stop leaves it running.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	bindir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bindir: bindir}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if c.running(ctx) {
		return c, nil
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	c.owned = true
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// prepareDirs creates the directory tree, owned by the user running PostgreSQL,
// and picks a socket directory short enough for a unix socket path.
func (c *Cluster) prepareDirs() error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	c.socketDir = filepath.Join(c.dir, "run")
	// A unix socket path is limited to 107 bytes; deep data dirs use a short
	// private directory under /tmp named after a hash of the cluster path.
	if len(c.socketDir)+len("/.s.PGSQL.5432") > 100 {
		c.socketDir = filepath.Join(os.TempDir(), fmt.Sprintf("chappe-pg-%x", shortHash(c.dir)))
	}
	if err := os.MkdirAll(c.socketDir, 0o700); err != nil {
		return err
	}
	if c.cred != nil {
		if err := makeTraversable(filepath.Dir(c.dir), c.cred.Uid); err != nil {
			return err
		}
		for _, d := range []string{c.dir, c.socketDir} {
			if err := chownTree(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	_, err := c.run(ctx, "initdb", "-D", c.dataDir(), "-U", superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-instructions")
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories='%s' -c unix_socket_permissions=0700 -c fsync=on", c.socketDir)
	_, err := c.run(ctx, "pg_ctl", "-D", c.dataDir(), "-l", filepath.Join(c.dir, "postgres.log"),
		"-o", opts, "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("starting PostgreSQL (log: %s): %w", filepath.Join(c.dir, "postgres.log"), err)
	}
	return nil
}

func (c *Cluster) running(ctx context.Context) bool {
	_, err := c.run(ctx, "pg_ctl", "-D", c.dataDir(), "status")
	if err != nil {
		return false
	}
	// The postmaster may run from an earlier boot with another socket dir;
	// only reuse it if our socket answers.
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return false
	}
	_ = conn.Close(ctx)
	return true
}

// Stop stops the cluster if Start started it.
func (c *Cluster) Stop() error {
	if !c.owned {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.run(ctx, "pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "stop")
	return err
}

// URL is the connection URL of database db in the cluster.
func (c *Cluster) URL(db string) string {
	q := url.Values{}
	q.Set("host", c.socketDir)
	q.Set("user", superuser)
	return "postgres:///" + url.PathEscape(db) + "?" + q.Encode()
}

// CreateDatabase creates db if it does not exist.
func (c *Cluster) CreateDatabase(ctx context.Context, db string) error {
	return CreateDatabase(ctx, c.URL("postgres"), db)
}

// CreateDatabase connects to adminURL and creates db if it does not exist.
func CreateDatabase(ctx context.Context, adminURL, db string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()+" ENCODING 'UTF8' TEMPLATE template0")
	return err
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bindir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// postgresUser is the credential of the "postgres" system user, used when we
// run as root because PostgreSQL refuses to.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root: PostgreSQL will not run as root and there is no 'postgres' system user to run it as; run Chappe as an ordinary user or install PostgreSQL's package")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// makeTraversable lets the postgres user reach the cluster: the data dir
// (Chappe's own) gets o+x, which allows passing through but not listing; any
// ancestor that still blocks the way is reported rather than changed.
func makeTraversable(dataDir string, uid uint32) error {
	info, err := os.Stat(dataDir)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o001 == 0 {
		if err := os.Chmod(dataDir, info.Mode().Perm()|0o001); err != nil {
			return err
		}
	}
	for d := filepath.Dir(dataDir); ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm()&0o001 == 0 && (st == nil || st.Uid != uid) {
			return fmt.Errorf("running as root, PostgreSQL runs as the postgres user, which cannot enter %s: run 'chmod o+x %s' or choose a data_dir it can reach", d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func shortHash(s string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
