// Package signingkey is the server's ed25519 signing key: generated on first
// start, kept in a file, used to sign federation requests, events and our
// key document. Spec: server-server-api.md, "Retrieving server keys";
// appendices.md, "Signing JSON".
package signingkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Key is a server signing key.
type Key struct {
	ID      gomatrixserverlib.KeyID // "ed25519:" + a short version
	Private ed25519.PrivateKey
}

// Public is the key's public half.
func (k Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// PublicBase64 is the public key in unpadded standard base64, as the spec writes keys.
func (k Key) PublicBase64() string {
	return base64.RawStdEncoding.EncodeToString(k.Public())
}

// LoadOrGenerate reads the key file at path or, if it does not exist, creates
// a new key and writes it there (mode 0600). The file holds one line,
// "ed25519 <version> <unpadded base64 seed>", the format Synapse uses, so keys
// can be carried over.
func LoadOrGenerate(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return generate(path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("reading signing key: %w", err)
	}
	return Parse(string(data))
}

// Load reads the key file at path, which must exist: for tools that act
// as the server (they must not make up a key of their own).
func Load(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Key{}, fmt.Errorf("no signing key at %s: the server creates it at its first start (chappe serve)", path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("reading signing key: %w", err)
	}
	return Parse(string(data))
}

// Parse reads the one-line key file format.
func Parse(text string) (Key, error) {
	fields := strings.Fields(text)
	if len(fields) != 3 || fields[0] != "ed25519" {
		return Key{}, errors.New("signing key file: expected one line 'ed25519 <version> <base64 seed>'")
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return Key{}, errors.New("signing key file: the seed is not 32 bytes of base64")
	}
	return Key{ID: gomatrixserverlib.KeyID("ed25519:" + fields[1]), Private: ed25519.NewKeyFromSeed(seed)}, nil
}

func generate(path string) (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, err
	}
	var v [4]byte
	_, _ = rand.Read(v[:])
	version := "a_" + strings.NewReplacer("+", "", "/", "").Replace(base64.RawStdEncoding.EncodeToString(v[:]))
	line := fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(priv.Seed()))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, err
	}
	// O_EXCL: two processes starting together must not both write a key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadOrGenerate(path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("writing signing key: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return Key{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return Key{}, err
	}
	if err := f.Close(); err != nil {
		return Key{}, err
	}
	return Parse(line)
}
