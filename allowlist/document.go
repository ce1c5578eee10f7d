package allowlist

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
)

// MaxDocumentBytes caps a list read from a file, a URL or a peer.
const MaxDocumentBytes = 8 << 20

// maxSafeInteger is the largest integer canonical JSON allows (2^53 - 1).
// Spec: appendices.md, "Canonical JSON".
const maxSafeInteger = 1<<53 - 1

// Document is the signed allowlist. Its JSON form is the wire and file
// format; signatures cover everything but "signatures" and "unsigned", as
// for every signed Matrix object (spec: appendices.md, "Signing JSON").
type Document struct {
	// Federation names the federation the list is for; a server refuses a
	// list for another one.
	Federation string `json:"federation"`
	// Serial increases strictly with every published list.
	Serial int64 `json:"serial"`
	// IssuedAt and ExpiresAt are in milliseconds since the Unix epoch.
	IssuedAt  int64 `json:"issued_at"`
	ExpiresAt int64 `json:"expires_at"`
	// Servers are the listed servers, by exact Matrix server name.
	Servers map[string]Server `json:"servers"`
	// Removed are servers taken out of the list, so every server can tell
	// "removed" from "never listed".
	Removed map[string]Removal `json:"removed"`
	// Signatures is {signer: {"ed25519:keyid": unpadded base64 signature}}.
	Signatures map[string]map[string]string `json:"signatures,omitempty"`
	// Unsigned is not covered by the signatures and is ignored by servers;
	// the officers' tool keeps its own bookkeeping there (see LastSigned).
	Unsigned json.RawMessage `json:"unsigned,omitempty"`
}

// Server is one listed server.
type Server struct {
	// Organisation is a label for people (e.g. "Ministère de l'Intérieur").
	Organisation string `json:"organisation,omitempty"`
	// VerifyKeys pins the server's signing keys: {"ed25519:id": base64}.
	// When present, federation uses them instead of fetching the server's keys.
	VerifyKeys map[string]string `json:"verify_keys,omitempty"`
	// Endpoint is host:port; when present, federation connects there instead
	// of resolving the server name through .well-known and DNS.
	Endpoint string `json:"endpoint,omitempty"`
}

// Removal records a server taken out of the list.
type Removal struct {
	// RemovedAt is in milliseconds since the Unix epoch.
	RemovedAt int64  `json:"removed_at"`
	Reason    string `json:"reason"`
	// VerifyKeys are the keys the server signed with while it was listed
	// ({"ed25519:keyid": unpadded base64}), carried over from its entry:
	// with them, servers can still check its signatures on the events it
	// sent before RemovedAt, so the rooms it was in stay joinable, without
	// ever asking it for its keys. May be empty.
	VerifyKeys map[string]string `json:"verify_keys,omitempty"`
}

// Parse reads a document and checks that it is well formed: a JSON object
// in UTF-8 without duplicate keys, made only of the fields above, in normal
// form (what Encode writes), with valid server names, keys and endpoints. It
// does not check signatures, federation, expiry or serial: see Policy.Judge.
//
// The normal-form rule means that what a server applies is exactly what the
// officers signed: no field is ignored, no value read differently.
func Parse(raw []byte) (*Document, error) {
	if len(raw) > MaxDocumentBytes {
		return nil, fmt.Errorf("the document is larger than %d bytes", MaxDocumentBytes)
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("the document is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("the document is not a JSON object")
	}
	if !json.Valid(trimmed) {
		return nil, errors.New("the document is not valid JSON, or has data after its JSON object")
	}
	if err := checkNoDuplicateKeys(trimmed); err != nil {
		return nil, err
	}
	var d Document
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("the document does not have the allowlist's shape: %v", err)
	}
	signed, err := signedContent(trimmed)
	if err != nil {
		return nil, err
	}
	ours, err := d.Content()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(signed, ours) {
		return nil, errors.New("the document is not in normal form: it has a field in another letter case, " +
			"a null or empty value where the field should be left out, or a number written as a fraction; " +
			"rewrite it with the officers' tool")
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// signedContent is what signatures cover: the object without "signatures"
// and "unsigned", in canonical JSON, computed the way gomatrixserverlib's
// VerifyJSON does.
func signedContent(raw []byte) ([]byte, error) {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(raw, &object); err != nil {
		return nil, fmt.Errorf("the document is not a JSON object: %v", err)
	}
	delete(object, "signatures")
	delete(object, "unsigned")
	unsorted, err := json.Marshal(object)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(unsorted)
}

// Content is the signed part of the document in canonical JSON.
func (d *Document) Content() ([]byte, error) {
	c := d.normalised()
	c.Signatures = nil
	c.Unsigned = nil
	unsorted, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(unsorted)
}

// ContentHash is the SHA-256 of Content, in lower-case hex: two documents
// with the same hash say exactly the same thing, whoever signed them.
func (d *Document) ContentHash() (string, error) {
	c, err := d.Content()
	if err != nil {
		return "", err
	}
	return hashHex(c), nil
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// normalised returns a copy of the document in normal form, without
// touching d: nil maps become empty ones, so "servers" and "removed" are
// always written, and empty per-server key maps become nil, so they are left
// out.
func (d *Document) normalised() Document {
	c := *d
	if c.Servers == nil {
		c.Servers = map[string]Server{}
	}
	if c.Removed == nil {
		c.Removed = map[string]Removal{}
	}
	for _, s := range d.Servers {
		if s.VerifyKeys != nil && len(s.VerifyKeys) == 0 {
			c.Servers = make(map[string]Server, len(d.Servers))
			for name, s := range d.Servers {
				if len(s.VerifyKeys) == 0 {
					s.VerifyKeys = nil
				}
				c.Servers[name] = s
			}
			break
		}
	}
	if len(c.Signatures) == 0 {
		c.Signatures = nil
	}
	if u := bytes.TrimSpace(c.Unsigned); len(u) == 0 || bytes.Equal(u, []byte("null")) {
		c.Unsigned = nil
	}
	return c
}

// Encode writes the document for a file or an HTTP answer: canonical JSON
// (sorted keys), indented for people and version control, ending with a
// newline. Servers verify the canonical form, so the indentation is free.
func (d *Document) Encode() ([]byte, error) {
	c := d.normalised()
	unsorted, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(unsorted)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, canonical, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// Clone returns a deep copy.
func (d *Document) Clone() *Document {
	c := *d
	c.Servers = make(map[string]Server, len(d.Servers))
	for name, s := range d.Servers {
		if s.VerifyKeys != nil {
			keys := make(map[string]string, len(s.VerifyKeys))
			for id, k := range s.VerifyKeys {
				keys[id] = k
			}
			s.VerifyKeys = keys
		}
		c.Servers[name] = s
	}
	c.Removed = make(map[string]Removal, len(d.Removed))
	for name, r := range d.Removed {
		if r.VerifyKeys != nil {
			r.VerifyKeys = maps.Clone(r.VerifyKeys)
		}
		c.Removed[name] = r
	}
	if d.Signatures != nil {
		c.Signatures = make(map[string]map[string]string, len(d.Signatures))
		for signer, sigs := range d.Signatures {
			m := make(map[string]string, len(sigs))
			for id, s := range sigs {
				m[id] = s
			}
			c.Signatures[signer] = m
		}
	}
	c.Unsigned = append(json.RawMessage(nil), d.Unsigned...)
	return &c
}

// ServerNames returns the listed servers, sorted.
func (d *Document) ServerNames() []string { return sortedKeys(d.Servers) }

// Validate checks every field's value (Parse calls it; the tool calls it
// before writing a file).
func (d *Document) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := ValidFederationName(d.Federation); err != nil {
		bad("federation: %v", err)
	}
	if d.Serial < 1 || d.Serial > maxSafeInteger {
		bad("serial: must be between 1 and 2^53-1, got %d", d.Serial)
	}
	if d.IssuedAt < 1 || d.IssuedAt > maxSafeInteger {
		bad("issued_at: must be a time in milliseconds since 1970, got %d", d.IssuedAt)
	}
	if d.ExpiresAt <= d.IssuedAt || d.ExpiresAt > maxSafeInteger {
		bad("expires_at: must be after issued_at (%d), got %d", d.IssuedAt, d.ExpiresAt)
	}
	for _, name := range sortedKeys(d.Servers) {
		s := d.Servers[name]
		if err := ValidServerName(name); err != nil {
			bad("servers: %v", err)
		}
		if err := validText(s.Organisation, 200); err != nil {
			bad("servers.%s.organisation: %v", name, err)
		}
		if s.Endpoint != "" {
			if err := ValidEndpoint(s.Endpoint); err != nil {
				bad("servers.%s.endpoint: %v", name, err)
			}
		}
		for _, id := range sortedKeys(s.VerifyKeys) {
			if _, err := ParseVerifyKey(id, s.VerifyKeys[id]); err != nil {
				bad("servers.%s.verify_keys: %v", name, err)
			}
		}
		if _, ok := d.Removed[name]; ok {
			bad("servers.%s: also in removed; a server is either listed or removed", name)
		}
	}
	for _, name := range sortedKeys(d.Removed) {
		r := d.Removed[name]
		if err := ValidServerName(name); err != nil {
			bad("removed: %v", err)
		}
		if r.RemovedAt < 1 || r.RemovedAt > maxSafeInteger {
			bad("removed.%s.removed_at: must be a time in milliseconds since 1970, got %d", name, r.RemovedAt)
		}
		for _, id := range sortedKeys(r.VerifyKeys) {
			if _, err := ParseVerifyKey(id, r.VerifyKeys[id]); err != nil {
				bad("removed.%s.verify_keys: %v", name, err)
			}
		}
		if strings.TrimSpace(r.Reason) == "" {
			bad("removed.%s.reason: must say why the server was removed", name)
		} else if err := validText(r.Reason, 1000); err != nil {
			bad("removed.%s.reason: %v", name, err)
		}
	}
	for _, signer := range sortedKeys(d.Signatures) {
		if err := validSigner(signer); err != nil {
			bad("signatures: %v", err)
		}
		for id := range d.Signatures[signer] {
			if err := validKeyID(id); err != nil {
				bad("signatures.%s: %v", signer, err)
			}
		}
	}
	return errors.Join(errs...)
}

var (
	federationRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	signerRe     = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,100}$`)
	keyIDRe      = regexp.MustCompile(`^ed25519:[A-Za-z0-9_]{1,64}$`)
	dnsLabelRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidFederationName checks a federation name: 1 to 100 letters, digits,
// dots, underscores or hyphens.
func ValidFederationName(name string) error {
	if !federationRe.MatchString(name) {
		return fmt.Errorf("%q is not a federation name (1 to 100 of A-Z a-z 0-9 . _ -)", name)
	}
	return nil
}

func validSigner(name string) error {
	if !signerRe.MatchString(name) {
		return fmt.Errorf("%q is not a signer name (1 to 100 of A-Z a-z 0-9 . _ @ -)", name)
	}
	return nil
}

func validKeyID(id string) error {
	if !keyIDRe.MatchString(id) {
		return fmt.Errorf("%q is not a key ID like ed25519:abc_1", id)
	}
	return nil
}

func validText(s string, max int) error {
	if utf8.RuneCountInString(s) > max {
		return fmt.Errorf("longer than %d characters", max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains a control character")
		}
	}
	return nil
}

// ParseVerifyKey checks a pinned key: an ed25519 key ID and 32 bytes in
// unpadded standard base64 (the way the spec writes keys).
func ParseVerifyKey(id, b64 string) ([]byte, error) {
	if err := validKeyID(id); err != nil {
		return nil, err
	}
	key, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s: %q is not a 32-byte ed25519 public key in unpadded base64", id, b64)
	}
	return key, nil
}

// ValidServerName checks a server name as the list must write it: a Matrix
// server name (spec: appendices.md, "Server Name") in its one normal form,
// since server names are compared exactly. DNS names are lower case, made of
// labels of letters, digits and hyphens; IP literals are written the way Go
// prints them (no leading zeros; IPv6 compressed, lower case, in brackets);
// a port, if any, has no leading zero. No wildcards.
func ValidServerName(name string) error {
	if name == "" {
		return errors.New("a server name must not be empty")
	}
	if len(name) > 255 {
		return fmt.Errorf("%q: longer than 255 characters", name)
	}
	host, port, err := splitHostPort(name)
	if err != nil {
		return fmt.Errorf("%q: %v", name, err)
	}
	if port != "" {
		if err := validPort(port); err != nil {
			return fmt.Errorf("%q: %v", name, err)
		}
	}
	if err := validHost(host); err != nil {
		return fmt.Errorf("%q: %v", name, err)
	}
	return nil
}

// ValidEndpoint checks an endpoint: host:port with the host written as in a
// server name.
func ValidEndpoint(endpoint string) error {
	host, port, err := splitHostPort(endpoint)
	if err != nil {
		return fmt.Errorf("%q: %v", endpoint, err)
	}
	if port == "" {
		return fmt.Errorf("%q: an endpoint is host:port, with the port", endpoint)
	}
	if err := validPort(port); err != nil {
		return fmt.Errorf("%q: %v", endpoint, err)
	}
	if err := validHost(host); err != nil {
		return fmt.Errorf("%q: %v", endpoint, err)
	}
	return nil
}

// splitHostPort splits name into host (brackets kept for IPv6) and port.
func splitHostPort(name string) (host, port string, err error) {
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 {
			return "", "", errors.New("unclosed IPv6 literal")
		}
		host, rest := name[:end+1], name[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", "", errors.New("junk after the IPv6 literal")
		}
		if rest == ":" {
			return "", "", errors.New("empty port")
		}
		return host, rest[1:], nil
	}
	if i := strings.LastIndex(name, ":"); i >= 0 {
		if i == len(name)-1 {
			return "", "", errors.New("empty port")
		}
		return name[:i], name[i+1:], nil
	}
	return name, "", nil
}

func validPort(port string) error {
	if port == "" || len(port) > 5 || port[0] == '0' {
		return fmt.Errorf("bad port %q", port)
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("bad port %q", port)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return fmt.Errorf("port %s above 65535", port)
	}
	return nil
}

func validHost(host string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if strings.HasPrefix(host, "[") {
		inner := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		ip, err := parseIP(inner)
		if err != nil || !ip.is6 {
			return fmt.Errorf("%s is not an IPv6 literal", host)
		}
		if ip.normal != inner {
			return fmt.Errorf("write the IPv6 literal as [%s]", ip.normal)
		}
		return nil
	}
	if strings.Contains(host, ":") {
		return errors.New("an IPv6 literal must be in brackets")
	}
	labels := strings.Split(host, ".")
	if isAllDigits(labels[len(labels)-1]) {
		ip, err := parseIP(host)
		if err != nil || ip.is6 {
			return fmt.Errorf("%s is neither an IPv4 address nor a DNS name (a DNS name's last label is not all digits)", host)
		}
		if ip.normal != host {
			return fmt.Errorf("write the IPv4 address as %s", ip.normal)
		}
		return nil
	}
	if len(host) > 253 {
		return errors.New("DNS name longer than 253 characters")
	}
	if strings.ToLower(host) != host {
		return fmt.Errorf("server names are compared exactly: write %s in lower case", host)
	}
	for _, l := range labels {
		if !dnsLabelRe.MatchString(l) {
			if strings.Contains(l, "*") {
				return errors.New("wildcards are not allowed: list each server")
			}
			return fmt.Errorf("%q is not a DNS label (a-z, 0-9 and inner hyphens, 1 to 63 characters)", l)
		}
	}
	return nil
}

// ipLiteral is a parsed IP address and the one way Go writes it.
type ipLiteral struct {
	is6    bool
	normal string
}

func parseIP(s string) (ipLiteral, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ipLiteral{}, err
	}
	if a.Zone() != "" {
		return ipLiteral{}, errors.New("zoned addresses are not server names")
	}
	return ipLiteral{is6: a.Is6(), normal: a.String()}, nil
}

func isAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// sortedKeys returns a map's keys in order, for stable messages and output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkNoDuplicateKeys refuses a JSON text in which an object has the same
// key twice: parsers disagree on which one wins, and a signed document must
// mean one thing.
func checkNoDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		delim, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch delim {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				keyTok, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := keyTok.(string)
				if seen[key] {
					return fmt.Errorf("the key %q appears twice in %s", key, path)
				}
				seen[key] = true
				if err := walk(path + "." + key); err != nil {
					return err
				}
			}
		case '[':
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	if err := walk("the document"); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the document has data after its JSON object")
	}
	return nil
}
