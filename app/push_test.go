package app

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"chappe/config"
	"chappe/netguard"
)

// TestPushGatewayClientStaysOutOfInternalNetworks: pusher URLs come from
// clients, so the gateway client refuses loopback unless configured.
func TestPushGatewayClientStaysOutOfInternalNetworks(t *testing.T) {
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	defer gateway.Close()

	cfg := config.Defaults()
	s := &Server{Config: cfg}
	_, err := s.pushGatewayClient().Get(gateway.URL)
	var blocked *netguard.BlockedAddrError
	if !errors.As(err, &blocked) {
		t.Fatalf("a loopback gateway was reached: %v", err)
	}

	cfg.Push.GatewayAllowedNetworks = []string{"127.0.0.1/32"}
	s = &Server{Config: cfg}
	resp, err := s.pushGatewayClient().Get(gateway.URL)
	if err != nil {
		t.Fatalf("an allowed gateway network was refused: %v", err)
	}
	resp.Body.Close()
}
