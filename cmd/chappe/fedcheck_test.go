package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"chappe/app/apptest"
	"chappe/config"
	"chappe/federation"
)

// `chappe federation check` against real servers: hs1 checks a listed
// server (OK), an unlisted one (REFUSED, never contacted unless probed), a
// listed one whose certificate comes from another CA (FAIL), and hs3, which
// lists hs1, checks hs1, which does not list hs3 (REFUSED by hs1).
func TestFederationCheckOnRealServers(t *testing.T) {
	ctx := context.Background()
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test")
	fed.Start(t, "hs2.chappe.test")
	otherCA := apptest.NewTestCA(t)
	fed.Start(t, "hs4.chappe.test", func(c *config.Config) {
		c.Federation.TLSCert, c.Federation.TLSKey = otherCA.IssueFiles(t, t.TempDir(), "hs4.chappe.test")
	})
	hs3 := fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)

	// The test's DNS: an unlisted server, which our list pins nowhere, is
	// found on the default port 8448 of its name.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == hs3.Name+":8448" {
			addr = hs3.FedAddr
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	check := func(t *testing.T, from *apptest.FedServer, server string, probe bool) checkReport {
		t.Helper()
		var logs bytes.Buffer
		rep, err := runCheck(ctx, from.Config, server, checkOptions{ProbeUnlisted: probe, Dial: dial}, &logs)
		if err != nil {
			t.Fatalf("check %s from %s: %v\n%s", server, from.Name, err, logs.String())
		}
		var out bytes.Buffer
		printReport(&out, rep)
		t.Logf("check %s from %s:\n%s", server, from.Name, out.String())
		return rep
	}
	// expect checks the steps' statuses, the verdict, a part of its
	// message and the exit status that goes with the verdict.
	expect := func(t *testing.T, r checkReport, steps, verdict, message string) {
		t.Helper()
		var got []string
		for _, st := range r.Steps {
			got = append(got, st.Step+"="+st.Status)
		}
		if strings.Join(got, " ") != steps || r.Verdict != verdict || !strings.Contains(r.Message, message) {
			t.Fatalf("steps %s, verdict %s: %s\nwant steps %s, verdict %s: …%s…", strings.Join(got, " "), r.Verdict, r.Message, steps, verdict, message)
		}
		code := map[string]int{verdictOK: 0, verdictRefused: exitRefused, verdictFail: exitFail}[verdict]
		var exit *exitError
		if err := r.exitError(); (code == 0) != (err == nil) || (err != nil && (!errors.As(err, &exit) || exit.code != code)) {
			t.Errorf("%s exits with %v, want status %d", verdict, err, code)
		}
	}

	t.Run("listed", func(t *testing.T) {
		r := check(t, hs1, "hs2.chappe.test", false)
		expect(t, r, "allowlist=ok discovery=ok tls=ok keys=ok version=ok their_list=ok", verdictOK, "federation with hs2.chappe.test works both ways")
		if !strings.Contains(r.Steps[1].Summary, "reached at 127.0.0.1:") || !strings.Contains(r.Steps[1].Details[0], "pins the endpoint") {
			t.Errorf("discovery: %+v", r.Steps[1])
		}
		if !strings.Contains(r.Steps[4].Summary, "runs Chappe") || !strings.Contains(r.Steps[5].Summary, "names hs1.chappe.test") {
			t.Errorf("version / their list: %+v / %+v", r.Steps[4], r.Steps[5])
		}
		raw, err := json.Marshal(r)
		if err != nil || !strings.Contains(string(raw), `"verdict":"OK"`) || !strings.Contains(string(raw), `"issuer":"CN=Chappe test CA"`) {
			t.Errorf("JSON: %s %v", raw, err)
		}
	})

	t.Run("unlisted is refused and never contacted", func(t *testing.T) {
		before := hs3.FedAccepts()
		r := check(t, hs1, "hs3.chappe.test", false)
		expect(t, r, "allowlist=refused discovery=skipped tls=skipped keys=skipped version=skipped their_list=skipped", verdictRefused, "hs3.chappe.test is not in our list")
		if n := hs3.FedAccepts() - before; n != 0 {
			t.Errorf("the unlisted server was contacted (%d connections)", n)
		}
	})

	t.Run("unlisted, probed on request", func(t *testing.T) {
		before := hs3.FedAccepts()
		r := check(t, hs1, "hs3.chappe.test", true)
		expect(t, r, "allowlist=refused discovery=ok tls=ok keys=ok version=ok their_list=ok", verdictRefused, "hs3.chappe.test is not in our list")
		if hs3.FedAccepts() == before {
			t.Error("--probe-unlisted did not contact the server")
		}
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		r := check(t, hs1, "hs4.chappe.test", false)
		expect(t, r, "allowlist=ok discovery=ok tls=fail keys=skipped version=skipped their_list=skipped", verdictFail,
			"hs4.chappe.test's certificate does not chain to a trusted authority")
		if d := strings.Join(r.Steps[2].Details, "\n"); !strings.Contains(d, "certificate 0: CN=hs4.chappe.test") || !strings.Contains(d, "issued by CN=Chappe test CA") {
			t.Errorf("the chain is not shown: %s", d)
		}
	})

	t.Run("a server that does not list us", func(t *testing.T) {
		// hs3's own list names hs1, but hs1's does not name hs3.
		r := check(t, hs3, "hs1.chappe.test", false)
		expect(t, r, "allowlist=ok discovery=ok tls=ok keys=ok version=ok their_list=refused", verdictRefused, "hs1.chappe.test refuses our requests")
	})

	t.Run("command line", func(t *testing.T) {
		var out, errOut bytes.Buffer
		var exit *exitError
		if err := cmdFederation([]string{"check"}, &out, &errOut); !errors.As(err, &exit) || exit.code != 2 || !strings.Contains(errOut.String(), "Usage:") {
			t.Errorf("no server: %v %q", err, errOut.String())
		}
		if err := cmdFederation([]string{"check", "Not A Name"}, &out, &errOut); !errors.As(err, &exit) || exit.code != 2 {
			t.Errorf("bad server name: %v", err)
		}
		if _, err := runCheck(ctx, hs1.Config, "hs1.chappe.test", checkOptions{}, &errOut); err == nil {
			t.Error("checking ourselves was accepted")
		}
	})
}

// The verdict: a refusal wins over a failure, a failure over OK; an
// unknown other direction is said.
func TestDecide(t *testing.T) {
	step := func(name, status, problem string) checkStep {
		return checkStep{Step: name, Status: status, Summary: name + " summary", Problem: problem}
	}
	tests := []struct {
		name    string
		steps   []checkStep
		verdict string
		message string
	}{
		{"all ok", []checkStep{step("allowlist", stepOK, ""), step("their_list", stepOK, "")}, verdictOK, "federation with x.test works both ways"},
		{"not a Chappe server", []checkStep{step("allowlist", stepOK, ""), step("their_list", stepUnknown, "")}, verdictOK,
			"x.test passes every check from our side; whether it accepts us could not be checked (their_list summary)"},
		{"refused", []checkStep{step("allowlist", stepRefused, "not listed"), step("tls", stepSkipped, "")}, verdictRefused, "not listed"},
		{"refused after a failure still refused", []checkStep{step("tls", stepFail, "bad cert"), step("their_list", stepRefused, "they refuse")}, verdictRefused, "they refuse"},
		{"first failure", []checkStep{step("tls", stepFail, "bad cert"), step("keys", stepFail, "bad keys")}, verdictFail, "bad cert"},
	}
	for _, tc := range tests {
		v, m := decide("x.test", tc.steps)
		if v != tc.verdict || m != tc.message {
			t.Errorf("%s: %s %q, want %s %q", tc.name, v, m, tc.verdict, tc.message)
		}
	}
}

// The report for people: numbered steps, status, details, the verdict last.
func TestPrintReport(t *testing.T) {
	var out bytes.Buffer
	printReport(&out, checkReport{Server: "x.test", CheckedAs: "us.test", Steps: []checkStep{
		{Step: "allowlist", Title: "Our allowlist", Status: stepOK, Summary: "x.test is in our allowlist", Details: []string{"endpoint pinned by the list: 10.0.0.1:8448"}},
		{Step: "tls", Title: "TLS certificate", Status: stepFail, Summary: "bad"},
	}, Verdict: verdictFail, Message: "x.test's certificate does not chain"})
	want := `Checking federation with x.test, as us.test

1. Our allowlist          OK
   x.test is in our allowlist
     endpoint pinned by the list: 10.0.0.1:8448
2. TLS certificate        FAIL
   bad

FAIL: x.test's certificate does not chain
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

// certProblem names the cause in plain words.
func TestCertProblem(t *testing.T) {
	chain := []federation.Certificate{{Subject: "CN=x.test", Issuer: "CN=Other CA", DNSNames: []string{"y.test"}}}
	tests := []struct {
		err  error
		want string
	}{
		{x509.UnknownAuthorityError{}, `x.test's certificate does not chain to a trusted authority: it is issued by "CN=Other CA", which neither the system nor federation.ca_file trusts (set federation.ca_file to the federation's CA?)`},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "x.test"}, "x.test's certificate is not valid for x.test (it names y.test)"},
		{x509.CertificateInvalidError{Reason: x509.Expired}, "x.test's certificate is expired or not yet valid (valid from 0001-01-01T00:00:00Z to 0001-01-01T00:00:00Z)"},
		{errors.New("odd"), "x.test's certificate does not verify: odd"},
	}
	for _, tc := range tests {
		if got := certProblem("x.test", "x.test", federation.TLSReport{Chain: chain, VerifyError: tc.err}); got != tc.want {
			t.Errorf("%T:\n got %s\nwant %s", tc.err, got, tc.want)
		}
	}
}
