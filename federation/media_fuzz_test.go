package federation

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"chappe/media"
	"chappe/mxerr"
)

// Whatever a peer sends as a media answer, readMultipartMedia ends with nil
// or a Matrix error, never a panic; and nil means the sink read a content
// part to its end.
func FuzzReadMultipartMedia(f *testing.F) {
	const b = "multipart/mixed; boundary=b"
	f.Add(b, []byte("--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"))
	f.Add(b, []byte("--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://x\r\n\r\n\r\n--b--\r\n"))
	f.Add(b, []byte("--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\r\nhel"))
	f.Add("multipart/mixed", []byte("--\r\n"))
	f.Add("text/plain", []byte("hello"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(bytes.NewReader(body))}
		read := false
		err := readMultipartMedia("peer.test", resp, func(in media.Incoming) error {
			_, err := io.ReadAll(in.Body)
			read = err == nil
			return err
		})
		if err == nil && !read {
			t.Fatal("accepted an answer whose content was not read")
		}
		if _, ok := mxerr.As(err); err != nil && !ok {
			t.Fatalf("not a Matrix error: %v", err)
		}
	})
}
