package apptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chappe/allowlist"
	"chappe/config"
	"chappe/signingkey"
)

// Federation is a set of real Chappe servers on loopback that federate over
// TLS (certificates from a test CA that every server trusts through
// federation.ca_file) under a signed allowlist (two officer keys,
// threshold 2):
//
//	fed := apptest.NewFederation(t)
//	hs1 := fed.Start(t, "hs1.chappe.test")
//	hs2 := fed.Start(t, "hs2.chappe.test")
//	rogue := fed.StartUnlisted(t, "hs3.chappe.test")
//	fed.Publish(t) // serial+1, listing hs1 and hs2 with their endpoints
//
// Servers are stopped, and their databases dropped, when the test ends.
type Federation struct {
	// Name is the federation's name in the lists.
	Name string
	// CA issues every server's certificate; CA.File is their ca_file.
	CA *TestCA

	officers []allowlist.SecretKey
	// rogueOfficer signs the unlisted servers' own list, which tells them
	// where everyone is.
	rogueOfficer allowlist.SecretKey

	mu          sync.Mutex
	serial      int64
	rogueSerial int64
	servers     map[string]*FedServer // every server started, by name
	listed      map[string]bool       // in the next list
	removed     map[string]bool       // removed from the list (shown as such)
	removedAt   map[string]int64      // when, in ms
	// external are listed servers the harness does not run (a test's own
	// peer), with their entries.
	external map[string]allowlist.Server
	pinKeys  map[string]bool // listed with their verify key pinned
}

// FedServer is one server of a Federation.
type FedServer struct {
	*Server
	// Name is its server name; FedAddr the address of its federation
	// listener (127.0.0.1:port), the endpoint the list pins.
	Name    string
	FedAddr string

	fed        *Federation
	cfg        config.Config
	clientAddr string
	listFile   string
	accepts    atomic.Int64

	mu  sync.Mutex
	run *running // nil when stopped
}

// NewFederation makes a test CA and two officer keys.
func NewFederation(t testing.TB) *Federation {
	t.Helper()
	f := &Federation{
		Name: "test.chappe", CA: NewTestCA(t),
		servers: map[string]*FedServer{}, listed: map[string]bool{}, removed: map[string]bool{}, removedAt: map[string]int64{}, external: map[string]allowlist.Server{}, pinKeys: map[string]bool{},
	}
	for _, name := range []string{"officer1", "officer2"} {
		k, err := allowlist.GenerateKey(name, "k1")
		if err != nil {
			t.Fatal(err)
		}
		f.officers = append(f.officers, k)
	}
	k, err := allowlist.GenerateKey("rogueofficer", "k1")
	if err != nil {
		t.Fatal(err)
	}
	f.rogueOfficer = k
	return f
}

// Start runs a server of the federation, listed in the next Publish. Its
// client API is plain HTTP on 127.0.0.1:0 (URL), its federation API TLS on
// FedAddr with a certificate for name. configure may change its
// configuration (applied after the harness's).
func (f *Federation) Start(t testing.TB, name string, configure ...func(*config.Config)) *FedServer {
	t.Helper()
	s := f.start(t, name, true, configure)
	f.mu.Lock()
	f.listed[name] = true
	f.mu.Unlock()
	return s
}

// StartUnlisted runs a server that is not in the federation's list: its
// certificate is as valid as the others', it signs with its real key, and
// it knows where every server is (through a list of its own, signed by
// another officer), but the federation does not know it.
func (f *Federation) StartUnlisted(t testing.TB, name string, configure ...func(*config.Config)) *FedServer {
	t.Helper()
	s := f.start(t, name, false, configure)
	f.publishRogue(t)
	return s
}

func (f *Federation) start(t testing.TB, name string, member bool, configure []func(*config.Config)) *FedServer {
	t.Helper()
	fedLn, clientLn := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	s := &FedServer{Name: name, FedAddr: fedLn.Addr().String(), fed: f, clientAddr: clientLn.Addr().String()}
	dir := t.TempDir()
	certFile, keyFile := f.CA.IssueFiles(t, dir, name)
	s.listFile = filepath.Join(dir, "allowlist.json")
	mine := []func(*config.Config){func(c *config.Config) {
		c.Federation.Listen = s.FedAddr
		c.Federation.TLSCert, c.Federation.TLSKey, c.Federation.CAFile = certFile, keyFile, f.CA.File
		c.Allowlist.File = s.listFile
		c.Allowlist.RefreshInterval = config.Duration(time.Hour) // Publish refreshes
		if member {
			c.Allowlist.Federation, c.Allowlist.Threshold = f.Name, len(f.officers)
			for _, k := range f.officers {
				c.Allowlist.TrustedKeys = append(c.Allowlist.TrustedKeys, k.Trusted().String())
			}
		} else {
			c.Allowlist.Federation, c.Allowlist.Threshold = "rogue.chappe", 1
			c.Allowlist.TrustedKeys = []string{f.rogueOfficer.Trusted().String()}
		}
	}}
	s.cfg = testConfig(t, name, append(mine, configure...)...)
	f.mu.Lock()
	f.servers[name] = s
	current := f.serial
	f.mu.Unlock()
	if member && current > 0 {
		// Started after a Publish: it gets the list in force at once.
		writeFile(t, s.listFile, f.document(t, current, false))
	}
	s.launch(t, clientLn, fedLn)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

func (s *FedServer) launch(t testing.TB, clientLn, fedLn net.Listener) {
	t.Helper()
	r := launch(t, s.cfg, testLogger(s.cfg, nil), clientLn, countingListener{Listener: fedLn, n: &s.accepts})
	s.mu.Lock()
	s.run = r
	s.Server = &Server{Server: r.srv, URL: "http://" + s.clientAddr}
	s.mu.Unlock()
}

// Stop shuts the server down (a no-op when it is stopped).
func (s *FedServer) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	r := s.run
	s.run = nil
	s.mu.Unlock()
	if r != nil {
		r.stop(t)
	}
}

// Restart starts a stopped server again: same data dir, database, signing
// key, certificate and ports.
func (s *FedServer) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.run != nil
	s.mu.Unlock()
	if running {
		t.Fatalf("%s is running", s.Name)
	}
	s.launch(t, listen(t, s.clientAddr), listen(t, s.FedAddr))
}

// FedAccepts is how many connections its federation listener accepted
// (since it was first started), so tests can tell that nothing reached it.
func (s *FedServer) FedAccepts() int64 { return s.accepts.Load() }

// Deliver gives the server a signed list as its allowlist file, and
// refreshes at once. It does not say whether the list was applied: look
// at s.Allowlist.Serial() or the status.
func (s *FedServer) Deliver(t testing.TB, list []byte) {
	t.Helper()
	writeFile(t, s.listFile, list)
	s.Allowlist.Refresh(context.Background())
}

// Remove takes a server out of the next list (it is shown as removed).
func (f *Federation) Remove(t testing.TB, name string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.listed[name] {
		t.Fatalf("%s is not listed", name)
	}
	delete(f.listed, name)
	f.removed[name] = true
	f.removedAt[name] = time.Now().UnixMilli()
}

// Add lists a server (again) in the next list.
func (f *Federation) Add(t testing.TB, name string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.servers[name]; !ok {
		t.Fatalf("%s was never started", name)
	}
	f.listed[name] = true
	delete(f.removed, name)
}

// AddExternal lists, in the next lists, a server the test runs itself (a
// peer written with gomatrixserverlib, say) at endpoint, with its verify
// key pinned so that nobody fetches it.
func (f *Federation) AddExternal(name, endpoint string, key signingkey.Key) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.external[name] = allowlist.Server{Endpoint: endpoint, VerifyKeys: map[string]string{string(key.ID): key.PublicBase64()}}
}

// PinKey makes the next lists pin name's signing key, so other servers
// never fetch it.
func (f *Federation) PinKey(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pinKeys[name] = true
}

// NextList signs the next list (serial + 1) without delivering it.
func (f *Federation) NextList(t testing.TB) []byte {
	t.Helper()
	f.mu.Lock()
	f.serial++
	serial := f.serial
	f.mu.Unlock()
	return f.document(t, serial, false)
}

// Publish signs the next list and delivers it to every listed server that
// is running, checking that each applied it; it returns the serial.
func (f *Federation) Publish(t testing.TB) int64 {
	t.Helper()
	list := f.NextList(t)
	f.mu.Lock()
	serial := f.serial
	var targets []*FedServer
	for name := range f.listed {
		targets = append(targets, f.servers[name])
	}
	f.mu.Unlock()
	for _, s := range targets {
		if !s.running() {
			continue
		}
		s.Deliver(t, list)
		if got := s.Allowlist.Serial(); got != serial {
			st, _ := s.Allowlist.Status(context.Background())
			t.Fatalf("%s did not apply list %d (it has %d): %+v", s.Name, serial, got, st.LastRefresh)
		}
	}
	f.publishRogue(t)
	return serial
}

func (s *FedServer) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run != nil
}

// publishRogue gives the unlisted servers a list of their own that pins
// every server's endpoint, so they can reach the federation's servers.
func (f *Federation) publishRogue(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	f.rogueSerial++
	serial := f.rogueSerial
	var rogues []*FedServer
	for name, s := range f.servers {
		if !f.listed[name] && !f.removed[name] {
			rogues = append(rogues, s)
		}
	}
	f.mu.Unlock()
	if len(rogues) == 0 {
		return
	}
	list := f.document(t, serial, true)
	for _, s := range rogues {
		if s.running() {
			s.Deliver(t, list)
		}
	}
}

// document is the signed list with this serial: the federation's (listed
// and removed servers) or the rogues' own (everyone, signed by the rogue
// officer).
func (f *Federation) document(t testing.TB, serial int64, rogue bool) []byte {
	t.Helper()
	name, signers := f.Name, f.officers
	if rogue {
		name, signers = "rogue.chappe", []allowlist.SecretKey{f.rogueOfficer}
	}
	now := time.Now()
	d, err := allowlist.NewDocument(name, now.Add(-time.Minute), 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d.Serial = serial
	f.mu.Lock()
	for srvName, entry := range f.external {
		d.Servers[srvName] = entry
	}
	for srvName, s := range f.servers {
		switch {
		case rogue || f.listed[srvName]:
			entry := allowlist.Server{Endpoint: s.FedAddr}
			if f.pinKeys[srvName] && !rogue {
				entry.VerifyKeys = map[string]string{string(s.Key.ID): s.Key.PublicBase64()}
			}
			d.Servers[srvName] = entry
		case f.removed[srvName]:
			// As the officers' tool does (allowlist.RemoveServer): the
			// pinned keys go with the removal record.
			removal := allowlist.Removal{RemovedAt: f.removedAt[srvName], Reason: "removed by the test"}
			if f.pinKeys[srvName] {
				removal.VerifyKeys = map[string]string{string(s.Key.ID): s.Key.PublicBase64()}
			}
			d.Removed[srvName] = removal
		}
	}
	f.mu.Unlock()
	for _, k := range signers {
		if _, err := allowlist.Sign(d, k, now); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Servers lists the names of the servers started, sorted.
func (f *Federation) Servers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name := range f.servers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestCA is a certificate authority for tests (ECDSA P-256).
type TestCA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File is the CA certificate as a PEM file (a ca_file).
	File string
	// Pool holds the CA certificate.
	Pool *x509.CertPool
}

// NewTestCA makes a CA valid for a day.
func NewTestCA(t testing.TB) *TestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: "Chappe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &TestCA{Cert: cert, key: key, File: filepath.Join(t.TempDir(), "ca.pem"), Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	writeFile(t, ca.File, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// Issue makes a server certificate for names (DNS names or IP addresses;
// a port, if any, is ignored), signed by the CA.
func (ca *TestCA) Issue(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, names)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// IssueFiles is Issue written as cert.pem and key.pem in dir.
func (ca *TestCA) IssueFiles(t testing.TB, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, names)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile
}

func (ca *TestCA) issuePEM(t testing.TB, names []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		host := n
		if h, _, err := net.SplitHostPort(n); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, host)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func randomSerial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
