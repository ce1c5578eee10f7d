package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/signingkey"
)

// The request signature of server-server-api.md, "Request Authentication":
// the method, the target (path and query), the origin and destination server
// names and the JSON-parsed body are wrapped in a JSON object, which the
// origin signs with the algorithm of appendices.md, "Signing JSON". The
// signature travels in an "Authorization: X-Matrix ..." header. The same
// requestJSON builds what the client signs and what the inbound middleware
// verifies, so the two cannot drift apart.

// xMatrix is what one X-Matrix Authorization header carries.
type xMatrix struct {
	Origin      string
	Destination string // "" when the sender left it out (servers older than v1.3)
	Key         string
	Sig         string
}

// requestJSON is the object whose signature authenticates a request.
// content is the raw JSON body, nil when the request has none.
func requestJSON(method, uri, origin, destination string, content []byte) ([]byte, error) {
	return json.Marshal(struct {
		Method      string          `json:"method"`
		URI         string          `json:"uri"`
		Origin      string          `json:"origin"`
		Destination string          `json:"destination"`
		Content     json.RawMessage `json:"content,omitempty"`
	}{method, uri, origin, destination, content})
}

// signRequest returns the X-Matrix Authorization header value for a
// request from origin to destination.
func signRequest(key signingkey.Key, method, uri, origin, destination string, content []byte) (string, error) {
	unsigned, err := requestJSON(method, uri, origin, destination, content)
	if err != nil {
		return "", err
	}
	signed, err := gomatrixserverlib.SignJSON(origin, key.ID, key.Private, unsigned)
	if err != nil {
		return "", err
	}
	var sigs struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &sigs); err != nil {
		return "", err
	}
	return formatXMatrix(xMatrix{Origin: origin, Destination: destination, Key: string(key.ID), Sig: sigs.Signatures[origin][string(key.ID)]})
}

// verifyRequestSignature checks that sig, by key keyID of origin, signs the
// request. destination is the one the header named, or our name when it
// named none (what older senders signed).
func verifyRequestSignature(pub ed25519.PublicKey, a xMatrix, method, uri, destination string, content []byte) error {
	unsigned, err := requestJSON(method, uri, a.Origin, destination, content)
	if err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(unsigned, &obj); err != nil {
		return err
	}
	sigs, err := json.Marshal(map[string]map[string]string{a.Origin: {a.Key: a.Sig}})
	if err != nil {
		return err
	}
	obj["signatures"] = sigs
	message, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(a.Origin, gomatrixserverlib.KeyID(a.Key), pub, message)
}

// formatXMatrix writes the header the way the spec asks senders to, for
// older servers: one space after X-Matrix, lower-case names, quoted values,
// no spaces around commas, no backslashes.
func formatXMatrix(a xMatrix) (string, error) {
	for _, v := range []string{a.Origin, a.Destination, a.Key, a.Sig} {
		if v == "" || strings.ContainsAny(v, "\"\\\r\n") {
			return "", fmt.Errorf("cannot put %q in an X-Matrix header", v)
		}
	}
	return fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, a.Origin, a.Destination, a.Key, a.Sig), nil
}

// errNotXMatrix: the header uses another authorisation scheme.
var errNotXMatrix = errors.New("not an X-Matrix authorization")

// parseXMatrix reads one Authorization header value with the grammar of
// server-server-api.md, "Request Authentication" (RFC 9110 section 11.4):
// the scheme (case-insensitive), one or more spaces, then comma-separated
// name=value parameters with optional spaces and tabs around the commas.
// Names are case-insensitive; a value is a token or a quoted string with
// backslash escapes, and for older servers an unquoted value may hold
// colons. Unknown parameters are ignored; a repeated one is refused.
func parseXMatrix(header string) (xMatrix, error) {
	scheme, rest, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return xMatrix{}, errNotXMatrix
	}
	params := map[string]string{}
	p := paramParser{s: rest}
	for {
		p.skip(" \t,")
		if p.done() {
			break
		}
		name, value, err := p.param()
		if err != nil {
			return xMatrix{}, err
		}
		if _, dup := params[name]; dup {
			return xMatrix{}, fmt.Errorf("parameter %q is given twice", name)
		}
		params[name] = value
		p.skip(" \t")
		if !p.done() && p.s[p.i] != ',' {
			return xMatrix{}, fmt.Errorf("expected a comma after parameter %q", name)
		}
	}
	a := xMatrix{Origin: params["origin"], Destination: params["destination"], Key: params["key"], Sig: params["sig"]}
	if a.Origin == "" || a.Key == "" || a.Sig == "" {
		return xMatrix{}, errors.New("the origin, key and sig parameters are required")
	}
	if _, ok := params["destination"]; ok && a.Destination == "" {
		return xMatrix{}, errors.New("the destination parameter is empty")
	}
	return a, nil
}

// paramParser walks the parameter list of an Authorization header.
type paramParser struct {
	s string
	i int
}

func (p *paramParser) done() bool { return p.i >= len(p.s) }

func (p *paramParser) skip(chars string) {
	for !p.done() && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

// param reads name BWS "=" BWS value.
func (p *paramParser) param() (name, value string, err error) {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", "", fmt.Errorf("expected a parameter name at %q", p.s[start:])
	}
	name = strings.ToLower(p.s[start:p.i])
	p.skip(" \t")
	if p.done() || p.s[p.i] != '=' {
		return "", "", fmt.Errorf("parameter %q has no value", name)
	}
	p.i++
	p.skip(" \t")
	if !p.done() && p.s[p.i] == '"' {
		value, err = p.quoted()
		return name, value, err
	}
	start = p.i
	for !p.done() && isBareValueChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", "", fmt.Errorf("parameter %q has an empty or malformed value", name)
	}
	return name, p.s[start:p.i], nil
}

// quoted reads a quoted-string, unescaping backslash pairs.
func (p *paramParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return "", errors.New("a quoted value ends with a backslash")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", errors.New("a quoted value holds a control character")
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", errors.New("a quoted value is not closed")
}

// isBareValueChar is what an unquoted value may hold: a token, but leniently
// (the spec allows colons for older servers; unquoted base64 signatures
// also bring '/' and '=').
func isBareValueChar(c byte) bool { return c > ' ' && c < 0x7f && c != ',' && c != '"' && c != '\\' }

// isTokenChar: the tchar of RFC 9110 section 5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseAuthorization reads every X-Matrix header of a request (a server may
// sign with several keys): they must name the same origin and destination.
// It returns one xMatrix per signature.
func parseAuthorization(headers []string) ([]xMatrix, error) {
	var out []xMatrix
	for _, h := range headers {
		a, err := parseXMatrix(h)
		if errors.Is(err, errNotXMatrix) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(out) > 0 && (a.Origin != out[0].Origin || a.Destination != out[0].Destination) {
			return nil, errors.New("the X-Matrix headers name different origins or destinations")
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New(`the request has no "Authorization: X-Matrix ..." header`)
	}
	return out, nil
}
