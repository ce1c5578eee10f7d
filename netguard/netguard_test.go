package netguard

import (
	"net/netip"
	"testing"
)

func TestAddrFilter(t *testing.T) {
	none := NewAddrFilter(nil, nil)
	configured := NewAddrFilter(
		MustPrefixes("10.20.0.0/16", "127.0.0.1/32", "::ffff:192.168.7.0/120"),
		MustPrefixes("10.20.30.0/24", "198.51.100.7/32", "93.184.0.0/16"),
	)
	cases := []struct {
		addr       string
		none, conf bool
	}{
		{"93.184.215.14", true, false},        // public; denied by configuration
		{"8.8.8.8", true, true},               // public
		{"2606:4700::1111", true, true},       // public IPv6
		{"127.0.0.1", false, true},            // loopback; allowed by configuration
		{"127.0.0.2", false, false},           // the rest of loopback stays denied
		{"::1", false, false},                 // IPv6 loopback
		{"::ffff:127.0.0.1", false, true},     // IPv4-mapped loopback is loopback
		{"10.1.2.3", false, false},            // private
		{"10.20.1.1", false, true},            // inside an allowed private network
		{"10.20.30.40", false, false},         // inside a denied part of it: the most specific wins
		{"172.16.5.4", false, false},          // private
		{"172.32.0.1", true, true},            // just outside 172.16.0.0/12
		{"192.168.1.1", false, false},         // private
		{"192.168.7.9", false, true},          // allowed through an IPv4-mapped prefix
		{"169.254.169.254", false, false},     // cloud metadata
		{"100.64.0.1", false, false},          // carrier-grade NAT
		{"0.0.0.0", false, false},             // unspecified
		{"255.255.255.255", false, false},     // broadcast
		{"224.0.0.1", false, false},           // multicast
		{"fd00::1", false, false},             // unique local
		{"fe80::1", false, false},             // link-local
		{"fe80::1%eth0", false, false},        // with a zone
		{"64:ff9b::a00:1", false, false},      // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false, false},       // 6to4 of 10.0.0.1
		{"2001:0:4136:e378::1", false, false}, // Teredo
		{"198.51.100.7", false, false},        // documentation range, and denied explicitly
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.addr)
		if got := none.Allowed(a); got != c.none {
			t.Errorf("built-in filter: Allowed(%s) = %v, want %v", c.addr, got, c.none)
		}
		if got := configured.Allowed(a); got != c.conf {
			t.Errorf("configured filter: Allowed(%s) = %v, want %v", c.addr, got, c.conf)
		}
	}
}

// The check runs on the address being dialled, whatever name led there.
func TestDialControlChecksResolvedAddress(t *testing.T) {
	f := NewAddrFilter(nil, nil)
	for addr, allowed := range map[string]bool{
		"10.0.0.1:80": false, "[::1]:443": false, "[::ffff:169.254.169.254]:80": false, "93.184.215.14:443": true,
		"not-an-address:80": false,
	} {
		err := f.control("tcp", addr, nil)
		if (err == nil) != allowed {
			t.Errorf("control(%s) = %v, want allowed=%v", addr, err, allowed)
		}
	}
}
