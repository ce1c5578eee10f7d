package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"chappe/allowlist"
	"chappe/app"
	"chappe/config"
	"chappe/federation"
	"chappe/signingkey"
)

// `chappe federation check SERVER`: the onboarding check for the IT
// departments that join a ministry's server to the federation. It runs, as
// our server would, each step a federation request takes, and says in
// plain language what it found and, at the end, whether federation with
// SERVER works:
//
//  1. SERVER is in our allowlist (the list in force in our database);
//  2. discovery: the endpoint the list pins, or server-server-api.md,
//     "Resolving server names";
//  3. TLS: the certificate chain, verified for SERVER against the system's
//     roots and federation.ca_file;
//  4. its keys: GET /_matrix/key/v2/server, self-signed, unexpired, the same
//     as the keys the list pins ("Retrieving server keys");
//  5. GET /_matrix/federation/v1/version;
//  6. we are in its list: a Chappe server serves its list to the servers it
//     lists (federation.PeerListPath).
//
// Every network call goes through the federation package's client, behind
// our allowlist gate: a server that is not listed is not contacted at all,
// unless the operator asks for it with --probe-unlisted.

const federationUsage = `Usage:
  chappe federation check SERVER [--config FILE] [--json] [--probe-unlisted]

Checks, step by step, that federation with SERVER works: our allowlist,
discovery, TLS certificate, server keys, version, and whether SERVER lists us.
Exit status: 0 OK, 3 REFUSED (a list does not allow it), 4 FAIL (a technical
problem), 1 the check could not run, 2 bad usage.

  --json            print the report as JSON
  --probe-unlisted  run the technical checks even when SERVER is not in our
                    list (by default an unlisted server is never contacted);
                    the verdict stays REFUSED
`

// Exit statuses of `chappe federation check`.
const (
	exitRefused = 3
	exitFail    = 4
)

// exitError ends the program with a status and no further message (the
// report already said everything).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// cmdFederation is `chappe federation`.
func cmdFederation(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, federationUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return &exitError{code: 2}
	}
	fs := flag.NewFlagSet("federation check", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed once, below
	path := configFlag(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	probe := fs.Bool("probe-unlisted", false, "contact SERVER even if it is not in our list")
	pos, err := parse(fs, args[1:], 1, "the server name to check (e.g. matrix.interieur.gouv.fr)")
	if err == nil {
		err = allowlist.ValidServerName(pos[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, federationUsage)
		return nil
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, fs.Name()) {
			msg = fs.Name() + ": " + msg
		}
		fmt.Fprintf(stderr, "chappe %s\n\n%s", msg, federationUsage)
		return &exitError{code: 2}
	}
	cfg, err := readConfig(*path)
	if err != nil {
		return err
	}
	rep, err := runCheck(context.Background(), cfg, pos[0], checkOptions{ProbeUnlisted: *probe}, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	return rep.exitError()
}

// Status of a step.
const (
	stepOK      = "ok"
	stepRefused = "refused" // a list does not allow it
	stepFail    = "fail"    // a technical problem
	stepUnknown = "unknown" // could not be told
	stepSkipped = "skipped" // not run: an earlier step decided
)

// Verdicts.
const (
	verdictOK      = "OK"
	verdictRefused = "REFUSED"
	verdictFail    = "FAIL"
)

// checkStep is one step of the report.
type checkStep struct {
	// Step is its short name (allowlist, discovery, tls, keys, version,
	// their_list); Title what the report calls it.
	Step  string `json:"step"`
	Title string `json:"title"`
	// Status is ok, refused, fail, unknown or skipped.
	Status string `json:"status"`
	// Summary is one plain-language sentence; Details are more lines.
	Summary string   `json:"summary"`
	Details []string `json:"details,omitempty"`
	// Problem, for a refused or failed step, is the verdict's reason.
	Problem string `json:"problem,omitempty"`
	// Data is what the step found, for --json (certificates, keys...).
	Data any `json:"data,omitempty"`
}

// checkReport is the whole check.
type checkReport struct {
	Server    string      `json:"server"`
	CheckedAs string      `json:"checked_as"`
	Probed    bool        `json:"probed_unlisted,omitempty"`
	Steps     []checkStep `json:"steps"`
	Verdict   string      `json:"verdict"`
	Message   string      `json:"message"`
}

// exitError is nil for OK, the status of the verdict otherwise.
func (r checkReport) exitError() error {
	switch r.Verdict {
	case verdictOK:
		return nil
	case verdictRefused:
		return &exitError{code: exitRefused}
	}
	return &exitError{code: exitFail}
}

// decide is the verdict of the steps: the first refusal (a list says no,
// whatever else works), else the first failure, else OK, saying whether
// the other direction could be checked.
func decide(server string, steps []checkStep) (verdict, message string) {
	for _, s := range steps {
		if s.Status == stepRefused {
			return verdictRefused, s.Problem
		}
	}
	for _, s := range steps {
		if s.Status == stepFail {
			return verdictFail, s.Problem
		}
	}
	for _, s := range steps {
		if s.Step == "their_list" && s.Status == stepUnknown {
			return verdictOK, fmt.Sprintf("%s passes every check from our side; whether it accepts us could not be checked (%s)", server, s.Summary)
		}
	}
	return verdictOK, fmt.Sprintf("federation with %s works both ways", server)
}

// printReport writes the report for people.
func printReport(w io.Writer, r checkReport) {
	fmt.Fprintf(w, "Checking federation with %s, as %s\n", r.Server, r.CheckedAs)
	if r.Probed {
		fmt.Fprintf(w, "(--probe-unlisted: the technical checks run even if %s is not listed)\n", r.Server)
	}
	fmt.Fprintln(w)
	for i, s := range r.Steps {
		fmt.Fprintf(w, "%d. %-22s %s\n", i+1, s.Title, strings.ToUpper(s.Status))
		fmt.Fprintf(w, "   %s\n", s.Summary)
		for _, d := range s.Details {
			fmt.Fprintf(w, "     %s\n", d)
		}
	}
	fmt.Fprintf(w, "\n%s: %s\n", r.Verdict, r.Message)
}

// probeGate is our gate, which also lets through the one server the
// operator named with --probe-unlisted (and only it).
type probeGate struct {
	federation.Gate
	server string
}

func (g probeGate) Allowed(s string) bool { return s == g.server || g.Gate.Allowed(s) }

func (g probeGate) Check(s string) error {
	if s == g.server {
		return nil
	}
	return g.Gate.Check(s)
}

// checkOptions are the options of runCheck.
type checkOptions struct {
	// ProbeUnlisted runs the technical checks on a server our list does
	// not name (--probe-unlisted).
	ProbeUnlisted bool
	// Dial replaces the network's dialler (tests point names at loopback
	// servers with it, as in the federation package's tests). Nil: the
	// client's default.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// runCheck checks federation with server, as the server configured by cfg
// sees it: its database's list in force, its signing key, its ca_file. It
// changes nothing: the list is loaded, not refreshed, and lists seen are
// not offered. Messages of the libraries go to logTo (errors only).
func runCheck(ctx context.Context, cfg config.Config, server string, opts checkOptions, logTo io.Writer) (checkReport, error) {
	if server == cfg.ServerName {
		return checkReport{}, fmt.Errorf("federation check: %s is this server; name another server", server)
	}
	log := app.NewLogger(config.Log{Level: "error", Format: "console"}, logTo)
	key, err := signingkey.Load(cfg.SigningKeyPath())
	if err != nil {
		return checkReport{}, err
	}
	db, err := app.OpenDatabase(ctx, cfg, log)
	if err != nil {
		return checkReport{}, err
	}
	defer db.Close()
	lists, err := app.NewAllowlist(cfg, db.Store, log)
	if err != nil {
		return checkReport{}, err
	}
	if err := lists.Load(ctx); err != nil {
		return checkReport{}, err
	}
	var gate federation.Gate = lists
	if opts.ProbeUnlisted {
		gate = probeGate{Gate: lists, server: server}
	}
	ccfg := app.FederationClientConfig(cfg, nil)
	ccfg.Dial = opts.Dial
	// Each step is tried once: a failure must not hold the next step back.
	ccfg.BackoffInitial, ccfg.BackoffMax = time.Nanosecond, time.Nanosecond
	client, err := federation.NewClient(ccfg, gate, key, log)
	if err != nil {
		return checkReport{}, err
	}
	defer client.Close()
	c := &checker{server: server, us: cfg.ServerName, federation: cfg.Allowlist.Federation, enabled: cfg.Federation.Enabled, lists: lists, client: client}
	return c.run(ctx, opts.ProbeUnlisted), nil
}

// checker runs the steps.
type checker struct {
	server, us string
	// federation is the name of ours (allowlist.federation).
	federation string
	enabled    bool
	lists      *allowlist.Service
	client     *federation.Client
}

func (c *checker) run(ctx context.Context, probe bool) checkReport {
	r := checkReport{Server: c.server, CheckedAs: c.us, Probed: probe}
	listed := c.allowlistStep()
	r.Steps = append(r.Steps, listed)
	network := []struct {
		step, title string
	}{{"discovery", "Discovery"}, {"tls", "TLS certificate"}, {"keys", "Server keys"}, {"version", "Version"}, {"their_list", "Its list names us"}}
	skip := ""
	switch {
	case !c.enabled:
		skip = "not run: federation is disabled on this server"
	case listed.Status != stepOK && !probe:
		skip = fmt.Sprintf("not run: %s is not contacted, as it is not in our list (--probe-unlisted runs these checks anyway)", c.server)
	}
	var d federation.Discovery
	var version federation.ServerVersion
	for _, n := range network {
		if skip != "" {
			r.Steps = append(r.Steps, checkStep{Step: n.step, Title: n.title, Status: stepSkipped, Summary: skip})
			continue
		}
		var s checkStep
		switch n.step {
		case "discovery":
			s, d = c.discoveryStep(ctx)
		case "tls":
			s = c.tlsStep(ctx, d)
		case "keys":
			s = c.keysStep(ctx)
		case "version":
			s, version = c.versionStep(ctx)
		case "their_list":
			s = c.theirListStep(ctx, version)
		}
		s.Step, s.Title = n.step, n.title
		r.Steps = append(r.Steps, s)
		switch {
		case n.step == "discovery" && s.Status != stepOK:
			skip = fmt.Sprintf("not run: %s could not be found", c.server)
		case n.step == "tls" && s.Status != stepOK:
			skip = fmt.Sprintf("not run: no trusted TLS connection to %s", c.server)
		}
	}
	r.Verdict, r.Message = decide(c.server, r.Steps)
	return r
}

// allowlistStep: is the server in our list in force, and is our
// federation open at all?
func (c *checker) allowlistStep() checkStep {
	s := checkStep{Step: "allowlist", Title: "Our allowlist"}
	if !c.enabled {
		s.Status, s.Summary = stepRefused, "federation is disabled on this server (federation.enabled is false)"
		s.Problem = s.Summary
		return s
	}
	st, _ := c.lists.Status(context.Background())
	if st.Mode == allowlist.Open {
		s.Details = append(s.Details, "WARNING: allowlist.mode is open: this server federates with any server, listed or not")
	}
	if cur := st.Current; cur != nil && cur.Verified {
		s.Details = append(s.Details, fmt.Sprintf("list in force: federation %s, serial %d, expires %s", st.Federation, cur.Serial, formatTime(cur.ExpiresAt)))
	}
	if err := c.lists.Check(c.server); err != nil {
		s.Status, s.Summary = stepRefused, err.Error()
		s.Problem = fmt.Sprintf("%s is not in our list, so federation with it is refused (%s)", c.server, err)
		var na *allowlist.NotAllowedError
		if errors.As(err, &na) {
			s.Problem = fmt.Sprintf("%s is not in our list, so federation with it is refused (%s)", c.server, na.Reason)
		}
		if na != nil && strings.HasPrefix(na.Reason, "federation is closed") {
			s.Problem = fmt.Sprintf("federation with %s is refused: this server's own federation is closed (%s)", c.server, strings.TrimPrefix(na.Reason, "federation is closed: "))
		}
		return s
	}
	s.Status, s.Summary = stepOK, fmt.Sprintf("%s is in our allowlist", c.server)
	if pinned, ok := c.lists.Pinned(c.server); ok {
		if pinned.Organisation != "" {
			s.Details = append(s.Details, "organisation: "+pinned.Organisation)
		}
		if pinned.Endpoint != "" {
			s.Details = append(s.Details, "endpoint pinned by the list: "+pinned.Endpoint)
		}
		for _, id := range sortedNames(pinned.VerifyKeys) {
			s.Details = append(s.Details, fmt.Sprintf("key pinned by the list: %s %s", id, pinned.VerifyKeys[id]))
		}
	}
	return s
}

// discoveryStep finds where the server is reached.
// Spec: server-server-api.md, "Resolving server names".
func (c *checker) discoveryStep(ctx context.Context) (checkStep, federation.Discovery) {
	d, err := c.client.Discover(ctx, c.server)
	s := checkStep{Details: d.Steps, Data: d}
	if err != nil {
		s.Status, s.Summary = stepFail, fmt.Sprintf("%s cannot be found: %v", c.server, err)
		s.Problem = s.Summary
		return s, d
	}
	t := d.Targets[0]
	s.Status = stepOK
	s.Summary = fmt.Sprintf("%s is reached at %s; its certificate must be valid for %s", c.server, t.Addr, t.TLSName)
	for _, other := range d.Targets[1:] {
		s.Details = append(s.Details, "then, if that fails: "+other.Addr)
	}
	return s, d
}

// tlsStep connects to the first target that answers and checks its
// certificate chain as every request does.
func (c *checker) tlsStep(ctx context.Context, d federation.Discovery) checkStep {
	s := checkStep{}
	var errs []string
	for _, t := range d.Targets {
		rep, err := c.client.InspectTLS(ctx, c.server, t)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", t.Addr, err))
			continue
		}
		s.Data = rep
		for i, cert := range rep.Chain {
			s.Details = append(s.Details, describeCert(i, cert)...)
		}
		if rep.VerifyError != nil {
			s.Status, s.Summary = stepFail, certProblem(c.server, t.TLSName, rep)
			s.Problem = s.Summary
			return s
		}
		s.Status = stepOK
		s.Summary = fmt.Sprintf("%s at %s: the certificate is valid for %s and chains to a trusted authority (%s)", c.server, t.Addr, t.TLSName, rep.Version)
		return s
	}
	s.Status, s.Summary = stepFail, fmt.Sprintf("cannot connect to %s over TLS: %s", c.server, strings.Join(errs, "; "))
	s.Problem = s.Summary
	return s
}

// describeCert is a certificate in a few lines: number i of the chain.
func describeCert(i int, cert federation.Certificate) []string {
	names := append(append([]string{}, cert.DNSNames...), cert.IPAddresses...)
	lines := []string{
		fmt.Sprintf("certificate %d: %s", i, cert.Subject),
		fmt.Sprintf("  issued by %s", cert.Issuer),
		fmt.Sprintf("  valid from %s to %s", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339)),
	}
	if len(names) > 0 {
		lines = append(lines, "  names: "+strings.Join(names, ", "))
	}
	return lines
}

// certProblem says in plain words why a chain does not verify.
func certProblem(server, name string, rep federation.TLSReport) string {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(rep.VerifyError, &unknown):
		issuer := ""
		if len(rep.Chain) > 0 {
			issuer = rep.Chain[len(rep.Chain)-1].Issuer
		}
		return fmt.Sprintf("%s's certificate does not chain to a trusted authority: it is issued by %q, which neither the system nor federation.ca_file trusts (set federation.ca_file to the federation's CA?)", server, issuer)
	case errors.As(rep.VerifyError, &hostname):
		return fmt.Sprintf("%s's certificate is not valid for %s (it names %s)", server, name, certNames(rep))
	case errors.As(rep.VerifyError, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("%s's certificate is expired or not yet valid (valid from %s to %s)", server,
			rep.Chain[0].NotBefore.Format(time.RFC3339), rep.Chain[0].NotAfter.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s's certificate does not verify: %v", server, rep.VerifyError)
}

// certNames lists the names the server's certificate is valid for.
func certNames(rep federation.TLSReport) string {
	if len(rep.Chain) == 0 {
		return "nothing"
	}
	names := append(append([]string{}, rep.Chain[0].DNSNames...), rep.Chain[0].IPAddresses...)
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}

// keysStep fetches the server's keys from itself and checks them.
// Spec: server-server-api.md, "Retrieving server keys".
func (c *checker) keysStep(ctx context.Context) checkStep {
	rep, err := c.client.FetchServerKeys(ctx, c.server)
	s := checkStep{Data: rep}
	if err != nil {
		s.Status, s.Summary = stepFail, fmt.Sprintf("its key document (GET %s) cannot be had or does not check: %v", federation.KeyPath, err)
		s.Problem = fmt.Sprintf("%s's signing keys cannot be had or are not valid: %v", c.server, err)
		return s
	}
	ids := sortedNames(rep.VerifyKeys)
	for _, id := range ids {
		s.Details = append(s.Details, fmt.Sprintf("key %s %s", id, rep.VerifyKeys[id]))
	}
	s.Details = append(s.Details, "valid until "+rep.ValidUntil.Format(time.RFC3339))
	switch {
	case !rep.ValidUntil.After(time.Now()):
		s.Status = stepFail
		s.Summary = fmt.Sprintf("its key document expired at %s (valid_until_ts)", rep.ValidUntil.Format(time.RFC3339))
		s.Problem = fmt.Sprintf("%s publishes expired keys: its signatures will be refused", c.server)
	case len(rep.Unpinned) > 0:
		s.Status = stepFail
		s.Summary = fmt.Sprintf("it signs with %s, which our list does not pin (it pins %s)", strings.Join(rep.Unpinned, ", "), strings.Join(sortedNames(rep.Pinned), ", "))
		s.Problem = fmt.Sprintf("%s signs with a key that our list does not pin: its signatures will be refused (the security officers must update its verify_keys)", c.server)
	default:
		s.Status = stepOK
		s.Summary = fmt.Sprintf("%s signs with %s; the document is self-signed and valid", c.server, strings.Join(ids, ", "))
		if rep.Pinned != nil {
			s.Summary += "; the keys are the ones our list pins"
		}
	}
	return s
}

// versionStep asks which implementation the server runs.
func (c *checker) versionStep(ctx context.Context) (checkStep, federation.ServerVersion) {
	v, err := c.client.FetchVersion(ctx, c.server)
	if err != nil {
		s := checkStep{Status: stepFail, Summary: fmt.Sprintf("GET %s failed: %v", federation.VersionPath, err)}
		s.Problem = fmt.Sprintf("%s does not answer federation requests: %v", c.server, err)
		return s, v
	}
	return checkStep{Status: stepOK, Summary: fmt.Sprintf("%s runs %s %s", c.server, v.Name, v.Version), Data: v}, v
}

// theirListStep asks a Chappe server for its list (which it serves only
// to the servers it lists) and looks for our name in it.
func (c *checker) theirListStep(ctx context.Context, v federation.ServerVersion) checkStep {
	if v.Name != "" && v.Name != "Chappe" {
		return checkStep{Status: stepUnknown, Summary: "unknown (not a Chappe server)"}
	}
	raw, err := c.client.FetchPeerList(ctx, c.server)
	var remote *federation.RemoteError
	switch {
	case errors.As(err, &remote) && remote.Status == http.StatusNotFound && remote.ErrCode == "M_UNRECOGNIZED":
		return checkStep{Status: stepUnknown, Summary: "unknown (not a Chappe server)"}
	case errors.As(err, &remote) && remote.Status == http.StatusForbidden:
		return checkStep{Status: stepRefused, Summary: fmt.Sprintf("%s refuses our requests: %s", c.server, remote.Message),
			Problem: fmt.Sprintf("%s refuses our requests (does its list name %s?): %s", c.server, c.us, remote.Message)}
	case errors.As(err, &remote) && remote.Status == http.StatusUnauthorized:
		return checkStep{Status: stepFail, Summary: fmt.Sprintf("%s could not authenticate our request: %s", c.server, remote.Message),
			Problem: fmt.Sprintf("%s cannot check our signatures (can it reach %s and fetch its keys?): %s", c.server, c.us, remote.Message)}
	case errors.As(err, &remote) && remote.Status == http.StatusNotFound:
		return checkStep{Status: stepFail, Summary: fmt.Sprintf("%s has no valid allowlist: %s", c.server, remote.Message),
			Problem: fmt.Sprintf("%s has no valid allowlist, so its federation is closed", c.server)}
	case err != nil:
		return checkStep{Status: stepFail, Summary: fmt.Sprintf("its list could not be had: %v", err),
			Problem: fmt.Sprintf("%s's list could not be had: %v", c.server, err)}
	}
	doc, err := allowlist.Parse(raw)
	if err != nil {
		return checkStep{Status: stepFail, Summary: fmt.Sprintf("its list cannot be read: %v", err), Problem: fmt.Sprintf("%s serves a list that cannot be read: %v", c.server, err)}
	}
	s := checkStep{Data: map[string]any{"federation": doc.Federation, "serial": doc.Serial, "servers": doc.ServerNames()}}
	s.Details = []string{fmt.Sprintf("its list: federation %s, serial %d (ours: serial %d), %d servers", doc.Federation, doc.Serial, c.lists.Serial(), len(doc.Servers))}
	if ours := c.federation; doc.Federation != ours {
		s.Details = append(s.Details, fmt.Sprintf("WARNING: its list is for federation %s, ours for %s", doc.Federation, ours))
	}
	if _, ok := doc.Servers[c.us]; !ok {
		s.Status, s.Summary = stepRefused, fmt.Sprintf("%s's list (serial %d) does not name %s", c.server, doc.Serial, c.us)
		s.Problem = fmt.Sprintf("%s does not accept us: its list does not name %s", c.server, c.us)
		return s
	}
	s.Status, s.Summary = stepOK, fmt.Sprintf("%s's list (serial %d) names %s", c.server, doc.Serial, c.us)
	return s
}
