package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMediaDefaults(t *testing.T) {
	d := Defaults()
	if d.Media.URLPreview.Enabled {
		t.Error("URL previews must be off by default")
	}
	if d.Media.LegacyDownloadCutoff != "" {
		t.Error("the unauthenticated endpoints must be frozen by default")
	}
	if got := d.MediaPath(); got != filepath.Join("./data", "media") {
		t.Errorf("media path %q, want under data_dir", got)
	}
	if cutoff, err := d.MediaLegacyCutoff(); err != nil || !cutoff.IsZero() {
		t.Errorf("default cutoff %v %v", cutoff, err)
	}
}

func TestMediaEnvOverrides(t *testing.T) {
	cfg, err := Load(examplePath, []string{
		"CHAPPE_MEDIA_PATH=/srv/media",
		"CHAPPE_MEDIA_MAX_UPLOAD_BYTES=2048",
		"CHAPPE_MEDIA_USER_QUOTA_BYTES=1000000",
		"CHAPPE_MEDIA_LEGACY_DOWNLOAD_CUTOFF=2024-09-01T00:00:00Z",
		"CHAPPE_MEDIA_URL_PREVIEW_ENABLED=true",
		"CHAPPE_MEDIA_URL_PREVIEW_ALLOWED_NETWORKS=127.0.0.1/32, 10.1.0.0/16",
		"CHAPPE_MEDIA_URL_PREVIEW_TIMEOUT=3s",
	})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Media
	if cfg.MediaPath() != "/srv/media" || m.MaxUploadBytes != 2048 || m.UserQuotaBytes != 1000000 || !m.URLPreview.Enabled ||
		!reflect.DeepEqual(m.URLPreview.AllowedNetworks, []string{"127.0.0.1/32", "10.1.0.0/16"}) || m.URLPreview.Timeout.D() != 3*time.Second {
		t.Fatalf("overrides not applied: %+v", m)
	}
	if cutoff, err := cfg.MediaLegacyCutoff(); err != nil || !cutoff.Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("cutoff %v %v", cutoff, err)
	}
}

func TestMediaBadValuesReportedTogether(t *testing.T) {
	_, err := Load("", []string{
		"CHAPPE_MEDIA_MAX_UPLOAD_BYTES=10",
		"CHAPPE_MEDIA_USER_QUOTA_BYTES=-1",
		"CHAPPE_MEDIA_LEGACY_DOWNLOAD_CUTOFF=yesterday",
		"CHAPPE_MEDIA_URL_PREVIEW_DENIED_NETWORKS=10.0.0.0/8,not-a-network",
		"CHAPPE_MEDIA_MAX_PENDING_UPLOADS=0",
	})
	if err == nil {
		t.Fatal("bad media values accepted")
	}
	for _, want := range []string{
		"media.max_upload_bytes", "media.user_quota_bytes", `media.legacy_download_cutoff`, `"yesterday"`,
		"media.url_preview.denied_networks", `"not-a-network"`, "media.max_pending_uploads",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}
