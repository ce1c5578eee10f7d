package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"chappe/allowlist"
	"chappe/app"
	"chappe/config"
)

const allowlistUsage = `chappe allowlist — the security officers' tool for the signed allowlist

Working offline on files (the list is --file, by default ./allowlist.json):
  keygen --signer NAME --out KEYFILE [--key-id ID]
                     make an officer key: the secret key goes to KEYFILE (mode
                     0600, never overwritten), the public key line for the
                     servers' allowlist.trusted_keys is printed
  new --federation NAME [--validity 720h] [--force]
                     start a list: serial 1, no servers
  add SERVER [--org ORG] [--endpoint HOST:PORT] [--key ed25519:ID=KEY]... [--replace]
                     list a server, with pinned keys and endpoint if given
  remove SERVER --reason TEXT
                     take a server out (recorded, with the time and reason)
  bump [--validity DURATION]
                     serial + 1, issued now, expiring after DURATION (default:
                     as long as the previous list)
  sign --key KEYFILE add your signature
  verify --trusted-key 'SIGNER ed25519:ID KEY'... [--threshold K] [--federation NAME]
                     say which signatures are valid and whether a server would
                     accept the list
  show               print the list
  diff OLD NEW       what changed between two lists

Every edit that changes the content drops the signatures (they covered the
old content) and says so on standard error.

On a server (uses the configuration, like the other subcommands):
  status [--config FILE] [--json]
                     the list in force in the database, the last refresh and
                     the recent refusals
`

// allowlistTool runs `chappe allowlist …`; now is the clock (tests set it).
type allowlistTool struct {
	stdout, stderr io.Writer
	now            func() time.Time
}

// cmdAllowlist is `chappe allowlist`.
func cmdAllowlist(args []string, stdout, stderr io.Writer) error {
	return allowlistTool{stdout: stdout, stderr: stderr, now: time.Now}.run(args)
}

func (t allowlistTool) run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(t.stderr, allowlistUsage)
		return errors.New("allowlist: say which command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "keygen":
		return t.keygen(args)
	case "new":
		return t.newList(args)
	case "add":
		return t.add(args)
	case "remove":
		return t.remove(args)
	case "bump":
		return t.bump(args)
	case "sign":
		return t.sign(args)
	case "verify":
		return t.verify(args)
	case "show":
		return t.show(args)
	case "diff":
		return t.diff(args)
	case "status":
		return t.status(args)
	case "help", "-h", "--help":
		fmt.Fprint(t.stdout, allowlistUsage)
		return nil
	}
	fmt.Fprint(t.stderr, allowlistUsage)
	return fmt.Errorf("allowlist: unknown command %q", cmd)
}

// flags makes a flag set that reports errors instead of exiting.
func (t allowlistTool) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("allowlist "+name, flag.ContinueOnError)
	fs.SetOutput(t.stderr)
	return fs
}

// parse parses args with flags and positional arguments in any order
// (`add SERVER --org X` as well as `add --org X SERVER`) and checks that
// there are exactly npos positional arguments.
func parse(fs *flag.FlagSet, args []string, npos int, names string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != npos {
		if npos == 0 {
			return nil, fmt.Errorf("%s: unexpected argument %q", fs.Name(), pos[0])
		}
		return nil, fmt.Errorf("%s: give %s", fs.Name(), names)
	}
	return pos, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ", ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const defaultListFile = "allowlist.json"

func (t allowlistTool) keygen(args []string) error {
	fs := t.flags("keygen")
	signer := fs.String("signer", "", "the officer's name, as it will appear in signatures (e.g. anssi.alice)")
	keyID := fs.String("key-id", "", "key ID after ed25519: (random if empty)")
	out := fs.String("out", "", "file for the secret key (created with mode 0600; never overwritten)")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *signer == "" || *out == "" {
		return errors.New("allowlist keygen: --signer and --out are required")
	}
	k, err := allowlist.GenerateKey(*signer, *keyID)
	if err != nil {
		return fmt.Errorf("allowlist keygen: %w", err)
	}
	if err := allowlist.WriteSecretKey(*out, k); err != nil {
		return fmt.Errorf("allowlist keygen: %w", err)
	}
	fmt.Fprintf(t.stderr, "wrote the secret key to %s (mode 0600): keep it offline, never share it\n", *out)
	fmt.Fprintln(t.stderr, "public key, for the servers' allowlist.trusted_keys:")
	fmt.Fprintln(t.stdout, k.Trusted().String())
	return nil
}

func (t allowlistTool) newList(args []string) error {
	fs := t.flags("new")
	file := fs.String("file", defaultListFile, "the list")
	federation := fs.String("federation", "", "the federation's name (e.g. etat.gouv.fr)")
	validity := fs.Duration("validity", 30*24*time.Hour, "how long the list is valid")
	force := fs.Bool("force", false, "overwrite an existing file")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if _, err := os.Stat(*file); err == nil && !*force {
		return fmt.Errorf("allowlist new: %s exists (use --force to overwrite it)", *file)
	}
	d, err := allowlist.NewDocument(*federation, t.now(), *validity)
	if err != nil {
		return fmt.Errorf("allowlist new: %w", err)
	}
	if err := writeList(*file, d); err != nil {
		return err
	}
	fmt.Fprintf(t.stderr, "created %s: federation %s, serial 1, expires %s\n", *file, d.Federation, formatTime(d.ExpiresAt))
	return nil
}

func (t allowlistTool) add(args []string) error {
	fs := t.flags("add")
	file := fs.String("file", defaultListFile, "the list")
	org := fs.String("org", "", "the organisation running the server")
	endpoint := fs.String("endpoint", "", "host:port to connect to, instead of .well-known and DNS discovery")
	replace := fs.Bool("replace", false, "replace the entry of a server already listed")
	var keys multi
	fs.Var(&keys, "key", "pinned signing key ed25519:ID=BASE64 (repeatable)")
	pos, err := parse(fs, args, 1, "one SERVER")
	if err != nil {
		return err
	}
	srv := allowlist.Server{Organisation: *org, Endpoint: *endpoint}
	for _, k := range keys {
		id, b64, ok := strings.Cut(k, "=")
		if !ok {
			return fmt.Errorf("allowlist add: --key %q: expected ed25519:ID=BASE64", k)
		}
		if _, err := allowlist.ParseVerifyKey(id, b64); err != nil {
			return fmt.Errorf("allowlist add: --key: %w", err)
		}
		if srv.VerifyKeys == nil {
			srv.VerifyKeys = map[string]string{}
		}
		srv.VerifyKeys[id] = b64
	}
	return t.edit("add", *file, allowlist.AddServer(pos[0], srv, *replace), "listed "+pos[0])
}

func (t allowlistTool) remove(args []string) error {
	fs := t.flags("remove")
	file := fs.String("file", defaultListFile, "the list")
	reason := fs.String("reason", "", "why the server is removed (recorded in the list)")
	pos, err := parse(fs, args, 1, "one SERVER")
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New("allowlist remove: --reason is required")
	}
	if err := t.edit("remove", *file, allowlist.RemoveServer(pos[0], *reason, t.now()), "removed "+pos[0]); err != nil {
		return err
	}
	if d, err := readList(*file); err == nil && len(d.Removed[pos[0]].VerifyKeys) == 0 {
		fmt.Fprintf(t.stderr, "warning: %s had no pinned keys, so its removal record carries none: servers cannot check its "+
			"events from before the removal, and rooms it created may become unjoinable (see the README)\n", pos[0])
	}
	return nil
}

func (t allowlistTool) bump(args []string) error {
	fs := t.flags("bump")
	file := fs.String("file", defaultListFile, "the list")
	validity := fs.Duration("validity", 0, "how long the new list is valid (0: as long as the previous one)")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	return t.edit("bump", *file, allowlist.Bump(t.now(), *validity), "bumped")
}

// edit reads the list, applies fn, reports the dropped signatures on
// standard error, and writes the list back.
func (t allowlistTool) edit(cmd, file string, fn func(*allowlist.Document) error, done string) error {
	d, err := readList(file)
	if err != nil {
		return fmt.Errorf("allowlist %s: %w", cmd, err)
	}
	rep, err := allowlist.Edit(d, fn)
	if err != nil {
		return fmt.Errorf("allowlist %s: %w", cmd, err)
	}
	if !rep.Changed {
		fmt.Fprintf(t.stderr, "%s: nothing changed\n", file)
		return nil
	}
	if err := writeList(file, d); err != nil {
		return err
	}
	fmt.Fprintf(t.stderr, "%s: %s; serial %d, expires %s\n", file, done, d.Serial, formatTime(d.ExpiresAt))
	if len(rep.Dropped) > 0 {
		fmt.Fprintf(t.stderr, "dropped %d signature(s), which covered the previous content: %s; the list must be signed again\n",
			len(rep.Dropped), strings.Join(rep.Dropped, ", "))
	}
	if rep.SerialAlreadySigned {
		fmt.Fprintf(t.stderr, "serial %d was already signed with other content: run `chappe allowlist bump` before signing\n", d.Serial)
	}
	return nil
}

func (t allowlistTool) sign(args []string) error {
	fs := t.flags("sign")
	file := fs.String("file", defaultListFile, "the list")
	keyFile := fs.String("key", "", "your secret key file (from keygen)")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("allowlist sign: --key is required")
	}
	k, err := allowlist.ReadSecretKey(*keyFile)
	if err != nil {
		return fmt.Errorf("allowlist sign: %w", err)
	}
	d, err := readList(*file)
	if err != nil {
		return fmt.Errorf("allowlist sign: %w", err)
	}
	added, err := allowlist.Sign(d, k, t.now())
	if err != nil {
		return fmt.Errorf("allowlist sign: refusing to sign %s: %w", *file, err)
	}
	name := k.Trusted().Name()
	if !added {
		fmt.Fprintf(t.stderr, "%s: already signed by %s; nothing to do\n", *file, name)
		return nil
	}
	if err := writeList(*file, d); err != nil {
		return err
	}
	var all []string
	for _, signer := range sortedNames(d.Signatures) {
		for _, id := range sortedNames(d.Signatures[signer]) {
			all = append(all, signer+" "+id)
		}
	}
	fmt.Fprintf(t.stderr, "%s: signed serial %d as %s; signatures now: %s\n", *file, d.Serial, name, strings.Join(all, ", "))
	return nil
}

func (t allowlistTool) verify(args []string) error {
	fs := t.flags("verify")
	file := fs.String("file", defaultListFile, "the list")
	threshold := fs.Int("threshold", 2, "signatures from distinct trusted keys required (k)")
	federation := fs.String("federation", "", "the federation the list must be for (not checked if empty)")
	var keyLines multi
	fs.Var(&keyLines, "trusted-key", "a trusted officer key 'SIGNER ed25519:ID KEY' (repeatable)")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	keys, err := allowlist.ParseTrustedKeys(keyLines)
	if err != nil {
		return fmt.Errorf("allowlist verify: --trusted-key: %w", err)
	}
	if len(keys) == 0 {
		return errors.New("allowlist verify: give the trusted keys with --trusted-key")
	}
	raw, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("allowlist verify: %w", err)
	}
	d, err := allowlist.Parse(raw)
	if err != nil {
		return fmt.Errorf("allowlist verify: %s: %w", *file, err)
	}
	v := allowlist.VerifySignatures(raw, d, keys, *threshold)
	fmt.Fprintf(t.stdout, "%s: federation %s, serial %d, expires %s\n", *file, d.Federation, d.Serial, formatTime(d.ExpiresAt))
	if len(v.Checks) == 0 {
		fmt.Fprintln(t.stdout, "  no signatures")
	}
	for _, c := range v.Checks {
		switch {
		case c.Counted:
			fmt.Fprintf(t.stdout, "  valid    %s\n", c.Name())
		case c.Valid:
			fmt.Fprintf(t.stdout, "  valid    %s — not counted: %s\n", c.Name(), c.Problem)
		default:
			fmt.Fprintf(t.stdout, "  INVALID  %s — %s\n", c.Name(), c.Problem)
		}
	}
	var problems []string
	if !v.Met() {
		problems = append(problems, fmt.Sprintf("%d of %d required signatures from distinct trusted keys", v.Counted, v.Threshold))
	}
	if *federation != "" && d.Federation != *federation {
		problems = append(problems, fmt.Sprintf("it is for federation %q, not %q", d.Federation, *federation))
	}
	if t.now().UnixMilli() >= d.ExpiresAt {
		problems = append(problems, "it has expired")
	}
	if len(problems) > 0 {
		fmt.Fprintf(t.stdout, "REFUSED: a server would not apply this list: %s\n", strings.Join(problems, "; "))
		return errors.New("allowlist verify: the list would be refused")
	}
	fmt.Fprintf(t.stdout, "OK: %d of %d required signatures; a server with these keys would apply it if its serial is above the one in force\n", v.Counted, v.Threshold)
	return nil
}

func (t allowlistTool) show(args []string) error {
	fs := t.flags("show")
	file := fs.String("file", defaultListFile, "the list")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	d, err := readList(*file)
	if err != nil {
		return fmt.Errorf("allowlist show: %w", err)
	}
	hash, _ := d.ContentHash()
	expiry := formatTime(d.ExpiresAt)
	if left := time.UnixMilli(d.ExpiresAt).Sub(t.now()); left <= 0 {
		expiry += "  EXPIRED"
	} else {
		expiry += "  (in " + roughDuration(left) + ")"
	}
	w := tabwriter.NewWriter(t.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "federation\t%s\n", d.Federation)
	fmt.Fprintf(w, "serial\t%d\n", d.Serial)
	fmt.Fprintf(w, "issued\t%s\n", formatTime(d.IssuedAt))
	fmt.Fprintf(w, "expires\t%s\n", expiry)
	fmt.Fprintf(w, "content\tsha256:%s\n", hash)
	fmt.Fprintf(w, "\nservers (%d)\n", len(d.Servers))
	for _, name := range d.ServerNames() {
		fmt.Fprintf(w, "  %s\t%s\n", name, describeServer(d.Servers[name]))
	}
	fmt.Fprintf(w, "\nremoved (%d)\n", len(d.Removed))
	for _, name := range sortedNames(d.Removed) {
		r := d.Removed[name]
		fmt.Fprintf(w, "  %s\t%s: %s\n", name, formatTime(r.RemovedAt), r.Reason)
	}
	fmt.Fprintf(w, "\nsignatures (not verified here: use verify)\n")
	for _, signer := range sortedNames(d.Signatures) {
		for _, id := range sortedNames(d.Signatures[signer]) {
			fmt.Fprintf(w, "  %s %s\n", signer, id)
		}
	}
	return w.Flush()
}

func (t allowlistTool) diff(args []string) error {
	fs := t.flags("diff")
	pos, err := parse(fs, args, 2, "OLD and NEW")
	if err != nil {
		return err
	}
	oldDoc, err := readList(pos[0])
	if err != nil {
		return fmt.Errorf("allowlist diff: %w", err)
	}
	newDoc, err := readList(pos[1])
	if err != nil {
		return fmt.Errorf("allowlist diff: %w", err)
	}
	out := t.stdout
	if oldDoc.Federation != newDoc.Federation {
		fmt.Fprintf(out, "federation: %s → %s\n", oldDoc.Federation, newDoc.Federation)
	}
	fmt.Fprintf(out, "serial: %d → %d", oldDoc.Serial, newDoc.Serial)
	if newDoc.Serial <= oldDoc.Serial {
		fmt.Fprint(out, "  (not higher: servers holding OLD would refuse NEW)")
	}
	fmt.Fprintln(out)
	if oldDoc.ExpiresAt != newDoc.ExpiresAt {
		fmt.Fprintf(out, "expires: %s → %s\n", formatTime(oldDoc.ExpiresAt), formatTime(newDoc.ExpiresAt))
	}
	c := allowlist.Diff(oldDoc, newDoc)
	for _, name := range c.Added {
		fmt.Fprintf(out, "+ %s  %s\n", name, describeServer(newDoc.Servers[name]))
	}
	for _, name := range c.Removed {
		why := "(no removal record)"
		if r, ok := newDoc.Removed[name]; ok {
			why = "removed: " + r.Reason
		}
		fmt.Fprintf(out, "- %s  %s\n", name, why)
	}
	for _, name := range c.Changed {
		fmt.Fprintf(out, "~ %s  %s  →  %s\n", name, describeServer(oldDoc.Servers[name]), describeServer(newDoc.Servers[name]))
	}
	if len(c.Added)+len(c.Removed)+len(c.Changed) == 0 {
		fmt.Fprintln(out, "servers: no change")
	}
	return nil
}

func (t allowlistTool) status(args []string) error {
	fs := t.flags("status")
	asJSON := fs.Bool("json", false, "print the status as JSON (as the admin endpoint does)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("allowlist status: unexpected argument %q", fs.Arg(0))
	}
	ctx := context.Background()
	log := app.NewLogger(config.Log{Level: "warn", Format: "console"}, t.stderr)
	db, err := app.OpenDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := app.NewAllowlist(cfg, db.Store, log)
	if err != nil {
		return err
	}
	if err := svc.Load(ctx); err != nil {
		return err
	}
	st, err := svc.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(t.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(t.stdout, st)
	return nil
}

func printStatus(out io.Writer, st allowlist.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "server\t%s\n", st.ServerName)
	fmt.Fprintf(w, "mode\t%s\n", st.Mode)
	if st.OpenModeWarning != "" {
		fmt.Fprintf(w, "WARNING\t%s\n", st.OpenModeWarning)
	}
	if st.FederationClosed {
		fmt.Fprintf(w, "federation\tCLOSED: %s\n", st.ClosedReason)
	} else {
		fmt.Fprintf(w, "federation\topen to the listed servers\n")
	}
	fmt.Fprintf(w, "policy\tfederation %q, %d of %d trusted keys\n", st.Federation, st.Threshold, len(st.TrustedKeys))
	if c := st.Current; c == nil {
		fmt.Fprintf(w, "list in force\tnone\n")
	} else {
		fmt.Fprintf(w, "list in force\tserial %d, applied %s from %s\n", c.Serial, formatTime(c.AppliedAt), c.Source)
		if c.Verified {
			exp := formatTime(c.ExpiresAt)
			if c.Expired {
				exp += "  EXPIRED"
			}
			fmt.Fprintf(w, "expires\t%s\n", exp)
			fmt.Fprintf(w, "signers\t%s\n", strings.Join(c.Signers, ", "))
			fmt.Fprintf(w, "servers\t%d listed, %d removed\n", len(c.Servers), len(c.Removed))
		} else {
			fmt.Fprintf(w, "verified\tno (see the reason above)\n")
		}
	}
	if r := st.LastRefresh; r != nil {
		fmt.Fprintf(w, "last refresh\t%s\n", formatTime(r.TS))
		for _, s := range r.Sources {
			line := s.Result
			if s.Serial != 0 {
				line += fmt.Sprintf(" (serial %d)", s.Serial)
			}
			if s.Detail != "" {
				line += ": " + s.Detail
			}
			fmt.Fprintf(w, "  %s\t%s\n", s.Source, line)
		}
	}
	if len(st.RecentRefusals) > 0 {
		fmt.Fprintf(w, "recent refusals\n")
		for _, a := range st.RecentRefusals {
			fmt.Fprintf(w, "  %s\t%s: %s\n", formatTime(a.TS), a.Source, a.Reason)
		}
	}
	if len(st.RecentChanges) > 0 {
		fmt.Fprintf(w, "recent changes\n")
		for _, a := range st.RecentChanges {
			fmt.Fprintf(w, "  %s\tserial %d from %s: +%v -%v ~%v\n", formatTime(a.TS), a.Serial, a.Source, a.Added, a.Removed, a.Changed)
		}
	}
}

func describeServer(s allowlist.Server) string {
	var parts []string
	if s.Organisation != "" {
		parts = append(parts, s.Organisation)
	}
	if s.Endpoint != "" {
		parts = append(parts, "endpoint "+s.Endpoint)
	}
	for _, id := range sortedNames(s.VerifyKeys) {
		parts = append(parts, "key "+id+"="+s.VerifyKeys[id])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// readList reads and parses a list file.
func readList(path string) (*allowlist.Document, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d, err := allowlist.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// writeList writes the list through a temporary file and a rename, so a
// reader (a server polling the file) never sees half a list.
func writeList(path string, d *allowlist.Document) error {
	data, err := d.Encode()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// roughDuration writes d in days, hours or minutes.
func roughDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	default:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
}

func formatTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
