package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"os"
	"time"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Thumbnail methods. Spec: content_repo.md, "Thumbnails".
const (
	MethodCrop  = "crop"
	MethodScale = "scale"
)

// ThumbnailRequest is what a client asks a thumbnail for.
type ThumbnailRequest struct {
	Width, Height int
	// Method is crop or scale (scale when empty).
	Method string
}

// standardBoxes are the sizes the spec says servers should produce. A
// request is served with the smallest of them that covers it, so the cache
// holds a few thumbnails per image, not one per size ever asked for.
var standardBoxes = []image.Point{{32, 32}, {96, 96}, {320, 240}, {640, 480}, {800, 600}}

// boxStep rounds up requests larger than every standard box, for the same reason.
const boxStep = 128

// maxRequestSide bounds the width and height a client may ask for.
const maxRequestSide = 16384

// imageFormat is a format Chappe can thumbnail. Only these decoders ever see
// user content: the format is recognised from the file's first bytes, not
// from the Content-Type the uploader claimed.
type imageFormat struct {
	name         string
	outType      string // thumbnails of it are encoded as this
	decodeConfig func(io.Reader) (image.Config, error)
	decode       func(io.Reader) (image.Image, error)
}

var (
	formatPNG  = imageFormat{"png", "image/png", png.DecodeConfig, png.Decode}
	formatJPEG = imageFormat{"jpeg", "image/jpeg", jpeg.DecodeConfig, jpeg.Decode}
	formatGIF  = imageFormat{"gif", "image/png", gif.DecodeConfig, gif.Decode} // the first frame: no animated thumbnails
	formatWebP = imageFormat{"webp", "image/png", webp.DecodeConfig, webp.Decode}
)

// sniffFormat recognises the image format from the file's first bytes.
func sniffFormat(head []byte) (imageFormat, bool) {
	switch {
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return formatPNG, true
	case bytes.HasPrefix(head, []byte("\xff\xd8\xff")):
		return formatJPEG, true
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return formatGIF, true
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return formatWebP, true
	}
	return imageFormat{}, false
}

var errCannotThumbnail = mxerr.New(mxerr.Unknown, "Cannot generate thumbnails for this content: it is not a PNG, JPEG, GIF or WebP image")

// inspect reads only the image header: the format and the dimensions. An
// image above the pixel limit is refused here, before anything is decoded.
// Spec: content_repo.md, "Security considerations" (413 M_TOO_LARGE).
func inspect(r io.ReaderAt, maxPixels int64) (imageFormat, image.Config, error) {
	head := make([]byte, 12)
	n, _ := r.ReadAt(head, 0)
	format, ok := sniffFormat(head[:n])
	if !ok {
		return format, image.Config{}, errCannotThumbnail
	}
	cfg, err := format.decodeConfig(io.NewSectionReader(r, 0, math.MaxInt64))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return format, cfg, mxerr.New(mxerr.Unknown, "Cannot generate thumbnails for this content: its %s header is not valid", format.name)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
		return format, cfg, mxerr.New(mxerr.TooLarge, "The image is %d×%d pixels, more than the %d pixels this server thumbnails", cfg.Width, cfg.Height, maxPixels)
	}
	return format, cfg, nil
}

// requestBox is the box a request is served with: the smallest standard box
// covering it, or the request rounded up to boxStep.
func requestBox(reqW, reqH int) image.Point {
	for _, b := range standardBoxes {
		if b.X >= reqW && b.Y >= reqH {
			return b
		}
	}
	return image.Point{ceilTo(reqW, boxStep), ceilTo(reqH, boxStep)}
}

// thumbnailBox is the box a request is served with for an image of src
// size: requestBox, reduced to the image's own size where it is smaller,
// since images are never upscaled.
func thumbnailBox(reqW, reqH int, src image.Point) image.Point {
	box := requestBox(reqW, reqH)
	return image.Point{min(box.X, src.X), min(box.Y, src.Y)}
}

func ceilTo(n, step int) int { return (n + step - 1) / step * step }

// thumbnailPlan says which part of an image of size src becomes the
// thumbnail, and at what size, for a box and a method:
//   - scale keeps the aspect ratio and fits the whole image in the box;
//   - crop fills the box, cutting the overflowing sides off equally.
//
// Neither ever upscales.
func thumbnailPlan(src, box image.Point, method string) (from image.Rectangle, out image.Point) {
	sw, sh := float64(src.X), float64(src.Y)
	bw, bh := float64(box.X), float64(box.Y)
	if method == MethodCrop {
		f := min(1, max(bw/sw, bh/sh))
		out = image.Point{min(box.X, roundPos(sw*f)), min(box.Y, roundPos(sh*f))}
		cw, ch := min(src.X, roundPos(float64(out.X)/f)), min(src.Y, roundPos(float64(out.Y)/f))
		x0, y0 := (src.X-cw)/2, (src.Y-ch)/2
		return image.Rect(x0, y0, x0+cw, y0+ch), out
	}
	f := min(1, bw/sw, bh/sh)
	return image.Rect(0, 0, src.X, src.Y), image.Point{roundPos(sw * f), roundPos(sh * f)}
}

func roundPos(v float64) int { return max(1, int(math.Round(v))) }

// render decodes the image and draws its thumbnail.
func render(format imageFormat, r io.Reader, box image.Point, method string) (*image.RGBA, error) {
	img, err := format.decode(r)
	if err != nil {
		return nil, mxerr.New(mxerr.Unknown, "Cannot generate thumbnails for this content: the %s image does not decode", format.name)
	}
	b := img.Bounds()
	from, out := thumbnailPlan(b.Size(), box, method)
	dst := image.NewRGBA(image.Rectangle{Max: out})
	// Catmull-Rom is the sharper filter, bilinear half the work; both widen
	// with the reduction, so neither aliases. Big reductions (a photo to a
	// thumbnail) take bilinear: the difference does not show at that size.
	var scaler draw.Scaler = draw.CatmullRom
	if from.Dx() > 4*out.X && from.Dy() > 4*out.Y {
		scaler = draw.BiLinear
	}
	scaler.Scale(dst, dst.Bounds(), img, from.Add(b.Min), draw.Src, nil)
	return dst, nil
}

func encode(w io.Writer, img image.Image, contentType string) error {
	if contentType == "image/jpeg" {
		return jpeg.Encode(w, img, &jpeg.Options{Quality: 85})
	}
	return png.Encode(w, img)
}

func thumbnailName(contentType string) string {
	if contentType == "image/jpeg" {
		return "thumbnail.jpg"
	}
	return "thumbnail.png"
}

// check refuses a method other than crop or scale (scale when empty) and
// sizes out of bounds.
func (req *ThumbnailRequest) check() error {
	if req.Method == "" {
		req.Method = MethodScale
	}
	if req.Method != MethodCrop && req.Method != MethodScale {
		return mxerr.New(mxerr.InvalidParam, "method must be crop or scale, not %q", req.Method)
	}
	if req.Width < 1 || req.Height < 1 || req.Width > maxRequestSide || req.Height > maxRequestSide {
		return mxerr.New(mxerr.InvalidParam, "width and height must be between 1 and %d", maxRequestSide)
	}
	return nil
}

// Thumbnail returns a thumbnail of an image: of a local one, generated on
// the first request for its box and method, then kept; of another server's,
// fetched from it and kept (remote.go).
// Spec: GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} and the
// deprecated /_matrix/media/v3/thumbnail.
func (s *Service) Thumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, opts OpenOptions) (*Content, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	if serverName != s.cfg.ServerName {
		return s.remoteThumbnail(ctx, serverName, mediaID, req, opts)
	}
	m, err := s.lookup(ctx, serverName, mediaID, opts)
	if err != nil {
		return nil, err
	}
	src, err := s.openBlob(ctx, m.SHA256, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	format, cfg, err := inspect(src, s.cfg.MaxImagePixels)
	if err != nil {
		return nil, err
	}
	box := thumbnailBox(req.Width, req.Height, image.Point{cfg.Width, cfg.Height})
	t, err := s.store.GetThumbnail(ctx, mediaID, box.X, box.Y, req.Method)
	if errors.Is(err, sqlstore.ErrNotFound) {
		// One generation per thumbnail, however many requests ask for it at
		// once; it goes on if the first requester goes away.
		key := fmt.Sprintf("%s/%dx%d/%s", mediaID, box.X, box.Y, req.Method)
		var v any
		v, err, _ = s.thumbs.Do(key, func() (any, error) {
			return s.generate(context.WithoutCancel(ctx), m, src, format, box, req.Method)
		})
		if err == nil {
			t = v.(sqlstore.Thumbnail)
		}
	}
	if err != nil {
		return nil, err
	}
	return s.openThumbnail(ctx, t, serverName, mediaID)
}

// openThumbnail opens a stored thumbnail of mxc://serverName/mediaID.
func (s *Service) openThumbnail(ctx context.Context, t sqlstore.Thumbnail, serverName, mediaID string) (*Content, error) {
	f, err := s.openBlob(ctx, t.SHA256, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	return &Content{
		File: f, Size: t.SizeBytes, ContentType: t.ContentType, FileName: thumbnailName(t.ContentType),
		SHA256: t.SHA256, Modified: time.UnixMilli(t.CreatedTS),
	}, nil
}

// generate renders, stores and records one thumbnail.
func (s *Service) generate(ctx context.Context, m sqlstore.Media, src *os.File, format imageFormat, box image.Point, method string) (sqlstore.Thumbnail, error) {
	select {
	case s.thumbSlots <- struct{}{}:
		defer func() { <-s.thumbSlots }()
	case <-ctx.Done():
		return sqlstore.Thumbnail{}, ctx.Err()
	}
	img, err := render(format, io.NewSectionReader(src, 0, math.MaxInt64), box, method)
	if err != nil {
		return sqlstore.Thumbnail{}, err
	}
	var buf bytes.Buffer
	if err := encode(&buf, img, format.outType); err != nil {
		return sqlstore.Thumbnail{}, err
	}
	tmp, err := s.blobs.writeTemp(&buf, int64(buf.Len()))
	if err != nil {
		return sqlstore.Thumbnail{}, err
	}
	defer tmp.discard()
	t := sqlstore.Thumbnail{
		MediaID: m.MediaID, Width: box.X, Height: box.Y, Method: method, ContentType: format.outType,
		SizeBytes: tmp.size, SHA256: tmp.sha256, CreatedTS: s.now().UnixMilli(),
	}
	err = s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.LockMediaBlob(ctx, t.SHA256); err != nil {
			return err
		}
		if err := q.InsertThumbnail(ctx, t); err != nil {
			return err
		}
		return s.blobs.place(tmp)
	})
	if errors.Is(err, sqlstore.ErrNotFound) {
		return t, mxerr.New(mxerr.NotFound, "The media was deleted while its thumbnail was being made")
	}
	if err != nil {
		return t, err
	}
	// A concurrent generation in another process may have won the insert:
	// serve what is recorded.
	return s.store.GetThumbnail(ctx, m.MediaID, box.X, box.Y, method)
}
