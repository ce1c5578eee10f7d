package allowlist

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// TrustedKey is a security officer's public key as servers configure it
// (allowlist.trusted_keys): one line "SIGNER ed25519:KEYID PUBLICKEY", the
// line `chappe allowlist keygen` prints.
type TrustedKey struct {
	Signer string
	KeyID  string
	Public ed25519.PublicKey
}

// String is the configuration line of the key.
func (k TrustedKey) String() string {
	return k.Signer + " " + k.KeyID + " " + base64.RawStdEncoding.EncodeToString(k.Public)
}

// Name is "SIGNER ed25519:KEYID", how signatures are named in messages,
// statuses and the audit trail.
func (k TrustedKey) Name() string { return k.Signer + " " + k.KeyID }

// ParseTrustedKey reads "SIGNER ed25519:KEYID PUBLICKEY".
func ParseTrustedKey(line string) (TrustedKey, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return TrustedKey{}, fmt.Errorf("%q: a trusted key is 'SIGNER ed25519:KEYID PUBLICKEY', as printed by `chappe allowlist keygen`", line)
	}
	if err := validSigner(f[0]); err != nil {
		return TrustedKey{}, err
	}
	pub, err := ParseVerifyKey(f[1], f[2])
	if err != nil {
		return TrustedKey{}, err
	}
	return TrustedKey{Signer: f[0], KeyID: f[1], Public: pub}, nil
}

// ParseTrustedKeys reads several lines and refuses the same key twice (by
// signer and key ID, or by public key).
func ParseTrustedKeys(lines []string) ([]TrustedKey, error) {
	var keys []TrustedKey
	var errs []error
	byName := map[string]bool{}
	byPublic := map[string]string{}
	for _, line := range lines {
		k, err := ParseTrustedKey(line)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if byName[k.Name()] {
			errs = append(errs, fmt.Errorf("%s is given twice", k.Name()))
			continue
		}
		if other, ok := byPublic[string(k.Public)]; ok {
			errs = append(errs, fmt.Errorf("%s has the same public key as %s", k.Name(), other))
			continue
		}
		byName[k.Name()] = true
		byPublic[string(k.Public)] = k.Name()
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

// DistinctSigners counts the different signers among keys: the most
// signatures that can ever count towards a threshold.
func DistinctSigners(keys []TrustedKey) int {
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k.Signer] = true
	}
	return len(seen)
}

// secretKeyTag starts an officer's secret key file. It makes the file
// impossible to mistake for (or paste as) a trusted public key line.
const secretKeyTag = "chappe-allowlist-secret-key"

// SecretKey is a security officer's signing key.
type SecretKey struct {
	Signer  string
	KeyID   string
	Private ed25519.PrivateKey
}

// Trusted is the public half, as servers configure it.
func (k SecretKey) Trusted() TrustedKey {
	return TrustedKey{Signer: k.Signer, KeyID: k.KeyID, Public: k.Private.Public().(ed25519.PublicKey)}
}

// GenerateKey makes a new officer key. keyID may be empty: a random one is chosen.
func GenerateKey(signer, keyID string) (SecretKey, error) {
	if err := validSigner(signer); err != nil {
		return SecretKey{}, err
	}
	if keyID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		keyID = "ed25519:" + strings.NewReplacer("+", "_", "/", "_").Replace(base64.RawStdEncoding.EncodeToString(b[:]))
	} else if !strings.HasPrefix(keyID, "ed25519:") {
		keyID = "ed25519:" + keyID
	}
	if err := validKeyID(keyID); err != nil {
		return SecretKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SecretKey{}, err
	}
	return SecretKey{Signer: signer, KeyID: keyID, Private: priv}, nil
}

// Marshal is the key file's content: one line
// "chappe-allowlist-secret-key SIGNER ed25519:KEYID SEED".
func (k SecretKey) Marshal() []byte {
	return []byte(fmt.Sprintf("%s %s %s %s\n", secretKeyTag, k.Signer, k.KeyID, base64.RawStdEncoding.EncodeToString(k.Private.Seed())))
}

// ParseSecretKey reads a key file's content.
func ParseSecretKey(data []byte) (SecretKey, error) {
	f := strings.Fields(string(data))
	if len(f) != 4 || f[0] != secretKeyTag {
		return SecretKey{}, fmt.Errorf("not an allowlist secret key file (expected one line '%s SIGNER ed25519:KEYID SEED')", secretKeyTag)
	}
	if err := validSigner(f[1]); err != nil {
		return SecretKey{}, err
	}
	if err := validKeyID(f[2]); err != nil {
		return SecretKey{}, err
	}
	seed, err := base64.RawStdEncoding.DecodeString(f[3])
	if err != nil || len(seed) != ed25519.SeedSize {
		return SecretKey{}, errors.New("the key file's seed is not 32 bytes of unpadded base64")
	}
	return SecretKey{Signer: f[1], KeyID: f[2], Private: ed25519.NewKeyFromSeed(seed)}, nil
}

// WriteSecretKey writes a new key file with mode 0600; it never overwrites
// an existing file.
func WriteSecretKey(path string, k SecretKey) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(k.Marshal()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadSecretKey reads a key file, refusing one that others may read.
func ReadSecretKey(path string) (SecretKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		return SecretKey{}, err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return SecretKey{}, fmt.Errorf("%s is readable by others (mode %v): run chmod 600 %s", path, info.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return SecretKey{}, err
	}
	k, err := ParseSecretKey(data)
	if err != nil {
		return SecretKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// signContent signs the document's content with k, through
// gomatrixserverlib's JSON signing, and returns the signature.
func signContent(d *Document, k SecretKey) (string, error) {
	content, err := d.Content()
	if err != nil {
		return "", err
	}
	signed, err := gomatrixserverlib.SignJSON(k.Signer, gomatrixserverlib.KeyID(k.KeyID), k.Private, content)
	if err != nil {
		return "", err
	}
	var out struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &out); err != nil {
		return "", err
	}
	sig, ok := out.Signatures[k.Signer][k.KeyID]
	if !ok {
		return "", errors.New("signing produced no signature")
	}
	return sig, nil
}
