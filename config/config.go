// Package config is Chappe's one YAML configuration file: its sections, their
// defaults, the CHAPPE_* environment overrides, and Verify, which reports every
// problem at once before the server starts.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"chappe/allowlist"
)

// Config is the whole configuration. Each field's yaml key is also its
// environment name: CHAPPE_ + the key path in upper snake case
// (client_api.listen → CHAPPE_CLIENT_API_LISTEN).
type Config struct {
	// ServerName is the Matrix server name: the part after the colon in user IDs.
	ServerName string `yaml:"server_name"`
	// DataDir holds the signing key, the embedded PostgreSQL cluster and media.
	DataDir      string       `yaml:"data_dir"`
	Database     Database     `yaml:"database"`
	ClientAPI    ClientAPI    `yaml:"client_api"`
	Registration Registration `yaml:"registration"`
	Auth         Auth         `yaml:"auth"`
	RateLimit    RateLimit    `yaml:"rate_limit"`
	SigningKey   SigningKey   `yaml:"signing_key"`
	Allowlist    Allowlist    `yaml:"allowlist"`
	Federation   Federation   `yaml:"federation"`
	Rooms        Rooms        `yaml:"rooms"`
	WellKnown    WellKnown    `yaml:"well_known"`
	Media        Media        `yaml:"media"`
	Presence     Presence     `yaml:"presence"`
	Push         Push         `yaml:"push"`
	TURN         TURN         `yaml:"turn"`
	Log          Log          `yaml:"log"`
}

// Database says which PostgreSQL to use.
type Database struct {
	// URL is a PostgreSQL connection URL. Empty: start a private cluster under data_dir.
	URL string `yaml:"url"`
	// MaxConns caps the connection pool.
	MaxConns int `yaml:"max_conns"`
}

// ClientAPI is the listener for /_matrix/client, /_matrix/media and /.well-known.
type ClientAPI struct {
	// Listen is host:port for plain HTTP (put a TLS reverse proxy in front).
	Listen string `yaml:"listen"`
	// MaxRequestBytes caps JSON request bodies (413 M_TOO_LARGE beyond).
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// TrustedProxies are the networks (CIDR) of reverse proxies whose
	// X-Forwarded-For header is believed; empty: the peer address is the client.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Registration modes.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Registration says who may create accounts through /register.
type Registration struct {
	// Mode is open (anyone), token (a registration token is needed) or closed.
	Mode string `yaml:"mode"`
	// SharedSecret enables /_synapse/admin/v1/register for operators. Empty: disabled.
	SharedSecret string `yaml:"shared_secret"`
	// MinPasswordLength is the shortest password accepted (M_WEAK_PASSWORD below).
	MinPasswordLength int `yaml:"min_password_length"`
}

// Auth tunes access and refresh tokens.
type Auth struct {
	// RefreshableAccessTokenLifetime is how long an access token lives when the
	// client asked for a refresh token.
	RefreshableAccessTokenLifetime Duration `yaml:"refreshable_access_token_lifetime"`
	// UIASessionLifetime is how long a user-interactive auth session stays usable.
	UIASessionLifetime Duration `yaml:"uia_session_lifetime"`
}

// RateLimit is the per user (or per IP when unauthenticated) request limiter.
type RateLimit struct {
	// Enabled switches rate limiting on.
	Enabled bool `yaml:"enabled"`
	// PerSecond is the sustained rate of requests per user or IP.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many requests may arrive at once above the sustained rate.
	Burst int `yaml:"burst"`
	// LoginPerSecond is the sustained rate of login and registration attempts per IP.
	LoginPerSecond float64 `yaml:"login_per_second"`
	// LoginBurst is the burst of login and registration attempts per IP.
	LoginBurst int `yaml:"login_burst"`
}

// Rooms configures the room graph.
type Rooms struct {
	// DefaultVersion is the room version of rooms created without one.
	DefaultVersion string `yaml:"default_version"`
	// EncryptPrivateByDefault gives new private rooms (private_chat and
	// trusted_private_chat presets, direct chats) an m.room.encryption state
	// event (m.megolm.v1.aes-sha2).
	EncryptPrivateByDefault bool `yaml:"encrypt_private_by_default"`
	// RefusePlaintextInEncrypted refuses plaintext m.room.message events in
	// rooms with m.room.encryption (400 M_BAD_JSON).
	RefusePlaintextInEncrypted bool `yaml:"refuse_plaintext_in_encrypted"`
}

// SigningKey is the server's ed25519 federation signing key.
type SigningKey struct {
	// Path of the key file; generated on first start. Empty: data_dir/signing.key.
	Path string `yaml:"path"`
	// Validity is how long other servers may cache our key (valid_until_ts).
	Validity Duration `yaml:"validity"`
}

// Allowlist modes.
const (
	AllowlistEnforce = "enforce"
	AllowlistOpen    = "open"
)

// Allowlist is the security officers' signed list of federation servers.
type Allowlist struct {
	// Mode is enforce (federate only with listed servers) or open (with any
	// server: conformance suites and laboratories only).
	Mode string `yaml:"mode"`
	// Federation is the federation's name; lists for another one are refused.
	Federation string `yaml:"federation"`
	// TrustedKeys are the officers' public keys, "SIGNER ed25519:KEYID KEY".
	TrustedKeys []string `yaml:"trusted_keys"`
	// Threshold is how many distinct trusted keys must sign a list (k of n).
	Threshold int `yaml:"threshold"`
	// File is a local copy of the signed list, read at every refresh. Empty: none.
	File string `yaml:"file"`
	// URL is an https:// address of the signed list, polled with ETag. Empty: none.
	URL string `yaml:"url"`
	// RefreshInterval is the time between two reads of the file and the URL.
	RefreshInterval Duration `yaml:"refresh_interval"`
}

// Federation is the server-server API: the TLS listener other servers
// call, and the outbound client that calls them.
type Federation struct {
	// Enabled switches federation on. When off, no listener is started and
	// every outbound request is refused.
	Enabled bool `yaml:"enabled"`
	// Listen is host:port of the federation TLS listener (default
	// 0.0.0.0:8448). It starts when a certificate is configured; a server
	// in a federation (allowlist.trusted_keys set) must have one. Empty:
	// none.
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are the PEM files of the listener's certificate
	// (for server_name) and private key.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CAFile is a PEM bundle of certificate authorities trusted, on top of
	// the system's, for the certificates of the servers we call. Empty: none.
	CAFile string `yaml:"ca_file"`
	// RequestTimeout bounds one outbound request, discovery included.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxRequestBytes caps inbound request bodies (413 M_TOO_LARGE beyond).
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// BackoffInitial and BackoffMax bound the exponential backoff of a
	// destination that fails.
	BackoffInitial Duration `yaml:"backoff_initial"`
	BackoffMax     Duration `yaml:"backoff_max"`
	// ServePublicRooms lets the other servers of the federation list this
	// server's published rooms (GET and POST /_matrix/federation/v1/publicRooms);
	// when off they get 403 M_FORBIDDEN. Local clients see the directory
	// either way.
	ServePublicRooms bool `yaml:"serve_public_rooms"`
	// ShareDeviceNames sends the display names of local users' devices to
	// the other servers of the federation (device_display_name in
	// m.device_list_update, GET /user/devices and POST /user/keys/query;
	// spec: server-server-api.md, "Device Management"). Off by default: a
	// device name can tell other ministries who uses it and where. Local
	// users see the names either way.
	ShareDeviceNames bool `yaml:"share_device_names"`
}

// FederationListens tells whether the federation TLS listener is to be
// started: federation enabled, with a listen address and a certificate. A
// standalone server (no allowlist) without a certificate runs without
// one; Verify refuses a federation member without a certificate.
func (c *Config) FederationListens() bool {
	f := c.Federation
	return f.Enabled && f.Listen != "" && f.TLSCert != "" && f.TLSKey != ""
}

// inFederation tells whether the server is configured to join a
// federation: it trusts officers' keys for an allowlist.
func (c *Config) inFederation() bool { return len(c.Allowlist.TrustedKeys) > 0 }

// WellKnown is what /.well-known/matrix/* answers.
type WellKnown struct {
	// ClientBaseURL is m.homeserver.base_url in /.well-known/matrix/client. Empty: 404.
	ClientBaseURL string `yaml:"client_base_url"`
	// Server is m.server (host:port) in /.well-known/matrix/server. Empty: 404.
	Server string `yaml:"server"`
}

// Media is the content repository (uploads, downloads, thumbnails, previews).
type Media struct {
	// Path is the directory of the media files. Empty: data_dir/media.
	Path string `yaml:"path"`
	// MaxUploadBytes caps one upload (413 M_TOO_LARGE beyond), and one
	// media fetched from another server (502 M_TOO_LARGE beyond).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UserQuotaBytes caps the total size of one user's uploads; 0: no quota.
	UserQuotaBytes int64 `yaml:"user_quota_bytes"`
	// MaxImagePixels: larger images (width × height) are not thumbnailed.
	MaxImagePixels int64 `yaml:"max_image_pixels"`
	// LegacyDownloadCutoff (RFC 3339): media uploaded before it stays on the
	// unauthenticated /_matrix/media/v3 download endpoints. Empty: none does.
	LegacyDownloadCutoff string `yaml:"legacy_download_cutoff"`
	// PendingUploadLifetime is how long an mxc:// URI from /create awaits its content.
	PendingUploadLifetime Duration `yaml:"pending_upload_lifetime"`
	// MaxPendingUploads is how many such URIs one user may have awaiting at once.
	MaxPendingUploads int             `yaml:"max_pending_uploads"`
	URLPreview        MediaURLPreview `yaml:"url_preview"`
}

// MediaURLPreview is /preview_url, which makes the server fetch URLs.
type MediaURLPreview struct {
	// Enabled switches URL previews on.
	Enabled bool `yaml:"enabled"`
	// AllowedNetworks (CIDR) are fetched even inside the built-in denied ranges.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// DeniedNetworks (CIDR) are never fetched, in addition to the built-in ranges.
	DeniedNetworks []string `yaml:"denied_networks"`
	// MaxPageBytes is how much of a page is read.
	MaxPageBytes int64 `yaml:"max_page_bytes"`
	// Timeout bounds one preview.
	Timeout Duration `yaml:"timeout"`
}

// MediaPath is the media directory, defaulting under the data dir.
func (c *Config) MediaPath() string {
	if c.Media.Path != "" {
		return c.Media.Path
	}
	return filepath.Join(c.DataDir, "media")
}

// MediaLegacyCutoff is media.legacy_download_cutoff parsed; zero when empty.
func (c *Config) MediaLegacyCutoff() (time.Time, error) {
	if c.Media.LegacyDownloadCutoff == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, c.Media.LegacyDownloadCutoff)
}

// Push configures delivery to push gateways (the pushers clients register).
type Push struct {
	// GatewayAllowedNetworks are CIDR networks push gateways may be reached
	// in even inside the built-in denied ranges (loopback, private, link-local…),
	// e.g. a ministry's own gateway on its internal network.
	GatewayAllowedNetworks []string `yaml:"gateway_allowed_networks"`
	// GatewayDeniedNetworks are refused in addition to the built-in ranges.
	GatewayDeniedNetworks []string `yaml:"gateway_denied_networks"`
}

// Presence is the online/offline status users share with their rooms.
type Presence struct {
	// Enabled switches presence on. When off, setting it is accepted and
	// ignored, reading it answers offline, and /sync carries none.
	Enabled bool `yaml:"enabled"`
}

// TURN is the TURN server handed to clients for calls (GET /voip/turnServer).
type TURN struct {
	// URIs are the turn: and turns: URIs of the TURN server. Empty: none.
	URIs []string `yaml:"uris"`
	// SharedSecret is the TURN server's static-auth-secret (coturn
	// use-auth-secret), from which time-limited credentials are derived.
	SharedSecret string `yaml:"shared_secret"`
	// TTL is how long credentials stay valid.
	TTL Duration `yaml:"ttl"`
}

// Log configures zerolog.
type Log struct {
	// Level is trace, debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json (for log collectors) or console (for people).
	Format string `yaml:"format"`
}

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	return Config{
		ServerName: "localhost",
		DataDir:    "./data",
		Database:   Database{MaxConns: 20},
		ClientAPI:  ClientAPI{Listen: "127.0.0.1:8008", MaxRequestBytes: 1 << 20, TrustedProxies: []string{}},
		Registration: Registration{
			Mode:              RegistrationClosed,
			MinPasswordLength: 8,
		},
		Auth: Auth{
			RefreshableAccessTokenLifetime: Duration(5 * time.Minute),
			UIASessionLifetime:             Duration(15 * time.Minute),
		},
		RateLimit: RateLimit{
			Enabled:        true,
			PerSecond:      10,
			Burst:          50,
			LoginPerSecond: 0.5,
			LoginBurst:     10,
		},
		SigningKey: SigningKey{Validity: Duration(7 * 24 * time.Hour)},
		Rooms:      Rooms{DefaultVersion: "10", EncryptPrivateByDefault: true},
		Allowlist: Allowlist{
			Mode:            AllowlistEnforce,
			TrustedKeys:     []string{},
			Threshold:       2,
			RefreshInterval: Duration(5 * time.Minute),
		},
		Federation: Federation{
			Enabled:         true,
			Listen:          "0.0.0.0:8448",
			RequestTimeout:  Duration(30 * time.Second),
			MaxRequestBytes: 10 << 20,
			BackoffInitial:  Duration(5 * time.Second),
			BackoffMax:      Duration(time.Hour),
			// Publishing a room is a local decision; sharing the directory
			// with the federation is a second one.
			ServePublicRooms: false,
			ShareDeviceNames: false,
		},
		Media: Media{
			MaxUploadBytes:        100 << 20,
			MaxImagePixels:        32_000_000,
			PendingUploadLifetime: Duration(24 * time.Hour),
			MaxPendingUploads:     10,
			URLPreview: MediaURLPreview{
				AllowedNetworks: []string{},
				DeniedNetworks:  []string{},
				MaxPageBytes:    1 << 20,
				Timeout:         Duration(10 * time.Second),
			},
		},
		Presence: Presence{Enabled: true},
		Push:     Push{GatewayAllowedNetworks: []string{}, GatewayDeniedNetworks: []string{}},
		TURN:     TURN{URIs: []string{}, TTL: Duration(24 * time.Hour)},
		Log:      Log{Level: "info", Format: "json"},
	}
}

// Load reads the YAML file at path (if path is not empty) over the defaults,
// then applies the CHAPPE_* environment overrides from environ, then Verify.
// Every error found is returned together.
func Load(path string, environ []string) (Config, error) {
	cfg := Defaults()
	var fileErrs []error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("reading config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		err = dec.Decode(&cfg)
		var typeErr *yaml.TypeError
		switch {
		case err == nil, errors.Is(err, errEOF):
		case errors.As(err, &typeErr):
			// Bad values: decoding went on, so keep collecting errors.
			for _, msg := range typeErr.Errors {
				fileErrs = append(fileErrs, fmt.Errorf("config file %s: %s", path, msg))
			}
		default:
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	errs := fileErrs
	errs = append(errs, applyEnv(&cfg, environ)...)
	if err := cfg.Verify(); err != nil {
		errs = append(errs, err)
	}
	return cfg, errors.Join(errs...)
}

// SigningKeyPath is the key file's path, defaulting under the data dir.
func (c *Config) SigningKeyPath() string {
	if c.SigningKey.Path != "" {
		return c.SigningKey.Path
	}
	return filepath.Join(c.DataDir, "signing.key")
}

// Verify checks every field and returns all problems joined, or nil.
func (c *Config) Verify() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := ValidServerName(c.ServerName); err != nil {
		bad("server_name", "%v", err)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Database.MaxConns < 1 {
		bad("database.max_conns", "must be at least 1, got %d", c.Database.MaxConns)
	}
	if _, _, err := net.SplitHostPort(c.ClientAPI.Listen); err != nil {
		bad("client_api.listen", "must be host:port, got %q", c.ClientAPI.Listen)
	}
	for _, p := range c.ClientAPI.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("client_api.trusted_proxies", "%q is not a network in CIDR form like 10.0.0.0/8", p)
		}
	}
	if c.ClientAPI.MaxRequestBytes < 1024 {
		bad("client_api.max_request_bytes", "must be at least 1024, got %d", c.ClientAPI.MaxRequestBytes)
	}
	switch c.Registration.Mode {
	case RegistrationOpen, RegistrationToken, RegistrationClosed:
	default:
		bad("registration.mode", "must be open, token or closed, got %q", c.Registration.Mode)
	}
	if c.Registration.MinPasswordLength < 1 {
		bad("registration.min_password_length", "must be at least 1")
	}
	if c.Auth.RefreshableAccessTokenLifetime.D() < 10*time.Second {
		bad("auth.refreshable_access_token_lifetime", "must be at least 10s")
	}
	if c.Auth.UIASessionLifetime.D() < time.Minute {
		bad("auth.uia_session_lifetime", "must be at least 1m")
	}
	if c.RateLimit.Enabled {
		if c.RateLimit.PerSecond <= 0 || c.RateLimit.LoginPerSecond <= 0 {
			bad("rate_limit", "per_second and login_per_second must be positive when enabled")
		}
		if c.RateLimit.Burst < 1 || c.RateLimit.LoginBurst < 1 {
			bad("rate_limit", "burst and login_burst must be at least 1 when enabled")
		}
	}
	switch c.Rooms.DefaultVersion {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12":
	default:
		bad("rooms.default_version", "must be a room version from 1 to 12, got %q", c.Rooms.DefaultVersion)
	}
	for _, nets := range [][]string{c.Push.GatewayAllowedNetworks, c.Push.GatewayDeniedNetworks} {
		for _, n := range nets {
			if _, err := netip.ParsePrefix(n); err != nil {
				bad("push", "%q is not a network in CIDR form like 10.0.0.0/8", n)
			}
		}
	}
	if c.SigningKey.Validity.D() < time.Hour {
		bad("signing_key.validity", "must be at least 1h")
	}
	if u := c.WellKnown.ClientBaseURL; u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		bad("well_known.client_base_url", "must be an http(s) URL, got %q", u)
	}
	if s := c.WellKnown.Server; s != "" {
		if err := ValidServerName(s); err != nil {
			bad("well_known.server", "%v", err)
		}
	}
	if c.Media.MaxUploadBytes < 1024 {
		bad("media.max_upload_bytes", "must be at least 1024, got %d", c.Media.MaxUploadBytes)
	}
	if c.Media.UserQuotaBytes < 0 {
		bad("media.user_quota_bytes", "must be 0 (no quota) or more, got %d", c.Media.UserQuotaBytes)
	}
	if c.Media.MaxImagePixels < 10_000 {
		bad("media.max_image_pixels", "must be at least 10000, got %d", c.Media.MaxImagePixels)
	}
	if _, err := c.MediaLegacyCutoff(); err != nil {
		bad("media.legacy_download_cutoff", "must be empty or an RFC 3339 time like 2024-09-01T00:00:00Z, got %q", c.Media.LegacyDownloadCutoff)
	}
	if c.Media.PendingUploadLifetime.D() < time.Minute {
		bad("media.pending_upload_lifetime", "must be at least 1m")
	}
	if c.Media.MaxPendingUploads < 1 {
		bad("media.max_pending_uploads", "must be at least 1, got %d", c.Media.MaxPendingUploads)
	}
	for _, p := range c.Media.URLPreview.AllowedNetworks {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("media.url_preview.allowed_networks", "%q is not a network in CIDR form like 192.0.2.0/24", p)
		}
	}
	for _, p := range c.Media.URLPreview.DeniedNetworks {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("media.url_preview.denied_networks", "%q is not a network in CIDR form like 192.0.2.0/24", p)
		}
	}
	if c.Media.URLPreview.MaxPageBytes < 1024 {
		bad("media.url_preview.max_page_bytes", "must be at least 1024, got %d", c.Media.URLPreview.MaxPageBytes)
	}
	if c.Media.URLPreview.Timeout.D() < time.Second {
		bad("media.url_preview.timeout", "must be at least 1s")
	}
	c.verifyAllowlist(bad)
	c.verifyFederation(bad)
	c.verifyTURN(bad)
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be trace, debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// verifyTURN checks the turn section: URIs and secret go together.
func (c *Config) verifyTURN(bad func(key, format string, args ...any)) {
	t := c.TURN
	for _, u := range t.URIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			bad("turn.uris", "%q is not a turn: or turns: URI like turn:turn.example.gouv.fr:3478?transport=udp", u)
		}
	}
	if len(t.URIs) > 0 && t.SharedSecret == "" {
		bad("turn.shared_secret", "must be set when turn.uris is: clients cannot use the TURN server without credentials")
	}
	if len(t.URIs) == 0 && t.SharedSecret != "" {
		bad("turn.uris", "must list the TURN server's URIs when turn.shared_secret is set")
	}
	if t.TTL.D() < time.Minute {
		bad("turn.ttl", "must be at least 1m")
	}
}

// verifyFederation checks the federation section.
func (c *Config) verifyFederation(bad func(key, format string, args ...any)) {
	f := c.Federation
	if f.Listen != "" {
		if _, _, err := net.SplitHostPort(f.Listen); err != nil {
			bad("federation.listen", "must be host:port or empty, got %q", f.Listen)
		}
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		bad("federation.tls_cert", "tls_cert and tls_key go together: set both or neither")
	}
	if f.Enabled && f.Listen != "" && c.inFederation() && (f.TLSCert == "" || f.TLSKey == "") {
		bad("federation.tls_cert", "tls_cert and tls_key are required when federation is enabled with a listen address "+
			"on a server of a federation (allowlist.trusted_keys set): other servers only talk to this one over TLS "+
			"with a certificate for %s (or set federation.listen to \"\" to accept no federation requests)", c.ServerName)
	}
	if f.TLSCert != "" && f.TLSKey != "" {
		if _, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey); err != nil {
			bad("federation.tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
	if f.CAFile != "" {
		if err := checkCAFile(f.CAFile); err != nil {
			bad("federation.ca_file", "%v", err)
		}
	}
	if f.RequestTimeout.D() < time.Second {
		bad("federation.request_timeout", "must be at least 1s")
	}
	if f.MaxRequestBytes < 64<<10 {
		bad("federation.max_request_bytes", "must be at least 65536, got %d", f.MaxRequestBytes)
	}
	if f.BackoffInitial.D() < 100*time.Millisecond {
		bad("federation.backoff_initial", "must be at least 100ms")
	}
	if f.BackoffMax.D() < f.BackoffInitial.D() {
		bad("federation.backoff_max", "must be at least backoff_initial (%s)", f.BackoffInitial.D())
	}
}

// checkCAFile checks that path is a PEM bundle of at least one certificate.
func checkCAFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// verifyAllowlist checks the allowlist section.
func (c *Config) verifyAllowlist(bad func(key, format string, args ...any)) {
	a := c.Allowlist
	switch a.Mode {
	case AllowlistEnforce, AllowlistOpen:
	default:
		bad("allowlist.mode", "must be enforce or open, got %q", a.Mode)
	}
	keys, err := allowlist.ParseTrustedKeys(a.TrustedKeys)
	if err != nil {
		bad("allowlist.trusted_keys", "%v", err)
	}
	if a.Threshold < 1 {
		bad("allowlist.threshold", "must be at least 1, got %d", a.Threshold)
	} else if n := allowlist.DistinctSigners(keys); err == nil && n > 0 && a.Threshold > n {
		bad("allowlist.threshold", "is %d but the trusted keys belong to only %d signers, so no list could ever be accepted", a.Threshold, n)
	}
	if len(a.TrustedKeys) > 0 || a.Federation != "" {
		if err := allowlist.ValidFederationName(a.Federation); err != nil {
			bad("allowlist.federation", "must name the federation when trusted keys are set: %v", err)
		}
	}
	if a.URL != "" {
		if u, err := url.Parse(a.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("allowlist.url", "must be an https:// URL, got %q", a.URL)
		}
	}
	if a.RefreshInterval.D() < time.Second {
		bad("allowlist.refresh_interval", "must be at least 1s")
	}
}
