package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate and its key as PEM files.
func writeSelfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hs.example"},
		DNSNames: []string{"hs.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{certPath: {Type: "CERTIFICATE", Bytes: der}, keyPath: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

func TestVerifyFederation(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	inFederation := false // the case's server trusts officer keys
	tests := []struct {
		name    string
		set     func(*Federation)
		wantErr string // "" when valid
	}{
		{"defaults", func(f *Federation) {}, ""},
		{"listener with certificate and CA bundle", func(f *Federation) {
			f.Listen, f.TLSCert, f.TLSKey, f.CAFile = "0.0.0.0:8448", cert, key, cert
		}, ""},
		{"standalone server without certificate", func(f *Federation) {}, ""},
		{"federation member without certificate", func(f *Federation) { inFederation = true }, "federation.tls_cert: tls_cert and tls_key are required"},
		{"federation member without listener", func(f *Federation) { inFederation, f.Listen = true, "" }, ""},
		{"disabled listener needs no certificate", func(f *Federation) { inFederation, f.Enabled = true, false }, ""},
		{"certificate without key", func(f *Federation) { f.TLSCert = cert }, "set both or neither"},
		{"unreadable certificate", func(f *Federation) { f.TLSCert, f.TLSKey = garbage, key }, "cannot load the certificate"},
		{"bad listen", func(f *Federation) { f.Listen, f.TLSCert, f.TLSKey = "8448", cert, key }, "federation.listen"},
		{"CA file without certificates", func(f *Federation) { f.CAFile = garbage }, "holds no PEM certificate"},
		{"missing CA file", func(f *Federation) { f.CAFile = filepath.Join(dir, "nope.pem") }, "federation.ca_file"},
		{"short timeout", func(f *Federation) { f.RequestTimeout = Duration(time.Millisecond) }, "federation.request_timeout"},
		{"tiny body cap", func(f *Federation) { f.MaxRequestBytes = 10 }, "federation.max_request_bytes"},
		{"backoff max below initial", func(f *Federation) { f.BackoffMax = Duration(time.Second) }, "federation.backoff_max"},
	}
	for _, tc := range tests {
		cfg := Defaults()
		inFederation = false
		tc.set(&cfg.Federation)
		if inFederation {
			cfg.Allowlist.Federation, cfg.Allowlist.TrustedKeys, cfg.Allowlist.Threshold = "gouv.test", []string{keyAlice}, 1
		}
		err := cfg.Verify()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: want an error about %s, got %v", tc.name, tc.wantErr, err)
		}
	}
	// Every problem is reported at once.
	cfg := Defaults()
	cfg.Allowlist.Federation, cfg.Allowlist.TrustedKeys, cfg.Allowlist.Threshold = "gouv.test", []string{keyAlice}, 1
	cfg.Federation.RequestTimeout, cfg.Federation.MaxRequestBytes = 0, 0
	err := cfg.Verify()
	for _, want := range []string{"federation.tls_cert", "federation.request_timeout", "federation.max_request_bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Verify: %v\nwant it to mention %s", err, want)
		}
	}
	env, err := Load("", []string{"CHAPPE_FEDERATION_ENABLED=false", "CHAPPE_FEDERATION_REQUEST_TIMEOUT=5s", "CHAPPE_FEDERATION_CA_FILE=" + cert})
	if err != nil {
		t.Fatal(err)
	}
	if f := env.Federation; f.Enabled || f.RequestTimeout.D() != 5*time.Second || f.CAFile != cert || env.FederationListens() {
		t.Errorf("environment: %+v", f)
	}
}

// checkFederationSwitch checks a boolean of the federation section, off by
// default: the example file leaves it off, variable (CHAPPE_FEDERATION_…)
// turns it on or off, and a value that is not a boolean is refused.
func checkFederationSwitch(t *testing.T, variable string, get func(Federation) bool) {
	t.Helper()
	if get(Defaults().Federation) {
		t.Errorf("%s is on by default", variable)
	}
	for _, tc := range []struct {
		path, env string
		want      bool
	}{
		{examplePath, "", false},
		{examplePath, variable + "=true", true},
		{"", variable + "=1", true},
		{"", variable + "=false", false},
	} {
		var environ []string
		if tc.env != "" {
			environ = []string{tc.env}
		}
		cfg, err := Load(tc.path, environ)
		if err != nil {
			t.Fatalf("Load(%q, %q): %v", tc.path, tc.env, err)
		}
		if got := get(cfg.Federation); got != tc.want {
			t.Errorf("Load(%q, %q): %v, want %v", tc.path, tc.env, got, tc.want)
		}
	}
	if _, err := Load("", []string{variable + "=sometimes"}); err == nil || !strings.Contains(err.Error(), variable) {
		t.Errorf("a value that is not a boolean: %v", err)
	}
}

// The room directory is served to other servers only when asked for, in
// the file or in the environment.
func TestServePublicRooms(t *testing.T) {
	checkFederationSwitch(t, "CHAPPE_FEDERATION_SERVE_PUBLIC_ROOMS", func(f Federation) bool { return f.ServePublicRooms })
}

// Device names go to other servers only when asked for, in the file or in
// the environment.
func TestShareDeviceNames(t *testing.T) {
	checkFederationSwitch(t, "CHAPPE_FEDERATION_SHARE_DEVICE_NAMES", func(f Federation) bool { return f.ShareDeviceNames })
}
