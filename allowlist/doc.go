// Package allowlist is the security officers' signed list of the servers
// Chappe may federate with, and everything a server does with it:
//
//   - the document (document.go): Matrix canonical JSON with a federation
//     name, a strictly increasing serial, issue and expiry times, the listed
//     servers (optionally with pinned verify keys and an endpoint) and the
//     removed ones, signed in the Matrix "signatures" format;
//   - verification (verify.go): at least k valid signatures from distinct
//     trusted officer keys, the right federation, not expired, no rollback;
//   - the officers' edits (edit.go), used by `chappe allowlist`;
//   - the server side (service.go): the stored list, refresh from a file, an
//     HTTPS URL or a peer, the append-only audit trail, and the gate
//     (gate.go) that the federation code asks: Allowed(serverName);
//   - the status for administrators and the handler body through which a
//     listed peer fetches our list (status.go).
//
// The package imports nothing of Chappe's: the database is reached through
// the Store interface, which the app wires to sqlstore.
package allowlist
