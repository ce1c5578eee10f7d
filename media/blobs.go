package media

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// blobStore keeps files by content: the file with SHA-256 h is
// dir/h[0:2]/h[2:4]/h. A file is written to dir/tmp first, fsynced, then
// renamed into place, so a path under its content address always holds the
// whole content and nothing else.
type blobStore struct {
	dir string
	tmp string
}

// staleTempAge is how old a leftover temporary file (from a crash in the
// middle of an upload) must be before New removes it.
const staleTempAge = time.Hour

func newBlobStore(dir string) (*blobStore, error) {
	b := &blobStore{dir: dir, tmp: filepath.Join(dir, "tmp")}
	if err := os.MkdirAll(b.tmp, 0o750); err != nil {
		return nil, fmt.Errorf("media directory: %w", err)
	}
	entries, err := os.ReadDir(b.tmp)
	if err != nil {
		return nil, fmt.Errorf("media directory: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTempAge {
			_ = os.Remove(filepath.Join(b.tmp, e.Name()))
		}
	}
	return b, nil
}

// path is where the file with this SHA-256 lives.
func (b *blobStore) path(sum []byte) string {
	h := hex.EncodeToString(sum)
	return filepath.Join(b.dir, h[0:2], h[2:4], h)
}

// tempBlob is content written to a temporary file, not yet in place.
type tempBlob struct {
	path   string
	sha256 []byte
	size   int64
}

// discard removes the temporary file (a no-op once it was placed).
func (t *tempBlob) discard() {
	if t != nil && t.path != "" {
		_ = os.Remove(t.path)
	}
}

// errTooBig is returned by writeTemp when the content exceeds the limit.
var errTooBig = errors.New("content larger than the limit")

// writeTemp copies r into a new temporary file, hashing it on the way, and
// fsyncs it. More than limit bytes: errTooBig, and nothing is kept.
func (b *blobStore) writeTemp(r io.Reader, limit int64) (*tempBlob, error) {
	f, err := os.CreateTemp(b.tmp, "upload-*")
	if err != nil {
		return nil, err
	}
	t := &tempBlob{path: f.Name()}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = errTooBig
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.discard()
		return nil, err
	}
	t.sha256, t.size = h.Sum(nil), n
	return t, nil
}

// place moves the temporary file to its content address, or drops it if an
// identical file is already there. The caller holds the blob's lock, so no
// deletion of the same content runs meanwhile.
func (b *blobStore) place(t *tempBlob) error {
	final := b.path(t.sha256)
	if info, err := os.Stat(final); err == nil && info.Size() == t.size {
		t.discard()
		t.path = ""
		return nil
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := os.Rename(t.path, final); err != nil {
		return err
	}
	t.path = ""
	// Make the rename itself durable before the upload is acknowledged.
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// open opens the file with this SHA-256.
func (b *blobStore) open(sum []byte) (*os.File, error) {
	return os.Open(b.path(sum))
}

// has tells whether the file with this SHA-256 is in the directory.
func (b *blobStore) has(sum []byte) bool {
	_, err := os.Stat(b.path(sum))
	return err == nil
}

// remove deletes the file with this SHA-256; the caller holds its lock and
// has checked that nothing refers to it any more.
func (b *blobStore) remove(sum []byte) error {
	err := os.Remove(b.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
