// Package allowlist will hold the security officers' signed list of servers
// Chappe may federate with: its format, verification, refresh, the
// Allowed(server) gate and the audit trail. It is built by the allowlist
// issue; until then Chappe has no federation endpoint other than its key.
package allowlist
