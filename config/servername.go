package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ValidServerName checks a Matrix server name: a DNS name, an IPv4 literal or
// a bracketed IPv6 literal, with an optional port.
// Spec: appendices.md, "Server Name".
func ValidServerName(name string) error {
	if name == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(name) > 255 {
		return fmt.Errorf("longer than 255 characters")
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 {
			return fmt.Errorf("%q: unclosed IPv6 literal", name)
		}
		host, port = name[1:end], name[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return fmt.Errorf("%q: not an IPv6 literal", name)
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return fmt.Errorf("%q: junk after the IPv6 literal", name)
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndex(name, ":"); i >= 0 {
		host, port = name[:i], name[i+1:]
	}
	if port != "" || strings.HasSuffix(name, ":") {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q: bad port", name)
		}
	}
	if strings.HasPrefix(name, "[") {
		return nil
	}
	if host == "" {
		return fmt.Errorf("%q: empty host", name)
	}
	for _, c := range host {
		ok := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("%q: character %q not allowed in a server name", name, c)
		}
	}
	return nil
}
