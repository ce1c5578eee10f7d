// Package roomserver will be the only writer of the room graph: it builds and
// signs local events, checks incoming ones (signatures, hashes, auth chain,
// auth rules, state resolution), stores them and publishes them. It is built
// by the rooms issue; nothing here is in use yet.
package roomserver
