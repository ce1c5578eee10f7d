package media

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"testing"
	"time"

	"chappe/mxerr"
)

// gradient is a w×h test image: pixel (x, y) is RGBA(2x, 3y, 128, 255), the
// formula the WebP fixtures in testdata were made from.
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x * 2), uint8(y * 3), 128, 255})
		}
	}
	return img
}

func encodeTestImage(t testing.TB, format string, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	case "gif":
		err = gif.Encode(&buf, img, nil)
	default:
		t.Fatalf("unknown format %s", format)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// pngHeaderOnly is the start of a PNG claiming to be w×h RGBA pixels: the
// signature and a valid IHDR chunk, and no image data at all. Decoding it
// would fail; only a check made on the header can answer before that.
func pngHeaderOnly(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8 bits per sample, RGBA
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func wantCode(t *testing.T, what string, err error, code mxerr.Code) {
	t.Helper()
	e, ok := mxerr.As(err)
	if !ok || e.Code != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	if e.Message == "" {
		t.Fatalf("%s: %s without a message", what, code)
	}
}

func TestThumbnailBox(t *testing.T) {
	big := image.Point{4000, 3000}
	cases := []struct {
		w, h int
		src  image.Point
		want image.Point
	}{
		{32, 32, big, image.Point{32, 32}},
		{1, 1, big, image.Point{32, 32}},
		{50, 20, big, image.Point{96, 96}},
		{96, 96, big, image.Point{96, 96}},
		{97, 96, big, image.Point{320, 240}},
		{300, 100, big, image.Point{320, 240}},
		{640, 480, big, image.Point{640, 480}},
		{800, 600, big, image.Point{800, 600}},
		{801, 600, big, image.Point{896, 640}},             // beyond the standard boxes: rounded up to 128
		{1000, 1000, big, image.Point{1024, 1024}},         // idem
		{96, 96, image.Point{50, 40}, image.Point{50, 40}}, // never more than the image
		{320, 240, image.Point{1000, 100}, image.Point{320, 100}},
	}
	for _, c := range cases {
		if got := thumbnailBox(c.w, c.h, c.src); got != c.want {
			t.Errorf("thumbnailBox(%d, %d, %v) = %v, want %v", c.w, c.h, c.src, got, c.want)
		}
	}
}

func TestThumbnailPlan(t *testing.T) {
	cases := []struct {
		src, box image.Point
		method   string
		wantFrom image.Rectangle
		wantOut  image.Point
	}{
		// scale: the whole image, fitted in the box, aspect kept.
		{image.Point{1000, 500}, image.Point{320, 240}, MethodScale, image.Rect(0, 0, 1000, 500), image.Point{320, 160}},
		{image.Point{500, 1000}, image.Point{320, 240}, MethodScale, image.Rect(0, 0, 500, 1000), image.Point{120, 240}},
		{image.Point{400, 300}, image.Point{800, 600}, MethodScale, image.Rect(0, 0, 400, 300), image.Point{400, 300}}, // no upscaling
		// crop: exactly the box, the middle of the image.
		{image.Point{400, 300}, image.Point{96, 96}, MethodCrop, image.Rect(50, 0, 350, 300), image.Point{96, 96}},
		{image.Point{300, 400}, image.Point{96, 96}, MethodCrop, image.Rect(0, 50, 300, 350), image.Point{96, 96}},
		{image.Point{1000, 500}, image.Point{320, 240}, MethodCrop, image.Rect(166, 0, 833, 500), image.Point{320, 240}},
		// crop of an image narrower than the box: no upscaling, the box's height.
		{image.Point{200, 50}, image.Point{96, 96}, MethodCrop, image.Rect(52, 0, 148, 50), image.Point{96, 50}},
		{image.Point{1, 1}, image.Point{32, 32}, MethodCrop, image.Rect(0, 0, 1, 1), image.Point{1, 1}},
	}
	for _, c := range cases {
		from, out := thumbnailPlan(c.src, c.box, c.method)
		if from != c.wantFrom || out != c.wantOut {
			t.Errorf("thumbnailPlan(%v, %v, %s) = %v → %v, want %v → %v", c.src, c.box, c.method, from, out, c.wantFrom, c.wantOut)
		}
	}
}

// Every supported format is recognised from its bytes, decoded and reduced
// with both methods, to the expected size.
func TestRenderEveryFormat(t *testing.T) {
	src := gradient(120, 80)
	inputs := []struct {
		name   string
		data   []byte
		format string
	}{
		{"png", encodeTestImage(t, "png", src), "png"},
		{"jpeg", encodeTestImage(t, "jpeg", src), "jpeg"},
		{"gif", encodeTestImage(t, "gif", src), "gif"},
		{"webp lossless", readFixture(t, "gradient-120x80-lossless.webp"), "webp"},
		{"webp lossy", readFixture(t, "gradient-120x80-lossy.webp"), "webp"},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			r := bytes.NewReader(in.data)
			format, cfg, err := inspect(r, 1_000_000)
			if err != nil {
				t.Fatal(err)
			}
			if format.name != in.format || cfg.Width != 120 || cfg.Height != 80 {
				t.Fatalf("inspect: %s %dx%d, want %s 120x80", format.name, cfg.Width, cfg.Height, in.format)
			}
			for _, m := range []struct {
				method string
				box    image.Point
				want   image.Point
			}{
				{MethodScale, image.Point{32, 32}, image.Point{32, 21}},
				{MethodScale, image.Point{96, 96}, image.Point{96, 64}},
				{MethodCrop, image.Point{32, 32}, image.Point{32, 32}},
				{MethodCrop, image.Point{96, 96}, image.Point{96, 80}}, // 120x80 cannot fill 96 high without upscaling
			} {
				img, err := render(format, bytes.NewReader(in.data), m.box, m.method)
				if err != nil {
					t.Fatalf("%s %v: %v", m.method, m.box, err)
				}
				if got := img.Bounds().Size(); got != m.want {
					t.Errorf("%s %v: thumbnail %v, want %v", m.method, m.box, got, m.want)
				}
				// The colours survive: the middle pixel is close to the source's.
				c := img.RGBAAt(img.Bounds().Dx()/2, img.Bounds().Dy()/2)
				if c.B < 100 || c.B > 156 || c.A != 255 {
					t.Errorf("%s %v: middle pixel %v, want blue near 128 and opaque", m.method, m.box, c)
				}
			}
		})
	}
}

// A PNG header claiming 50,000 × 50,000 pixels (10 GB once decoded) is
// refused from its header alone with M_TOO_LARGE; the decoder never runs (it
// would fail differently: there is no image data).
func TestDecompressionBombRefused(t *testing.T) {
	bomb := pngHeaderOnly(50_000, 50_000)
	start := time.Now()
	_, cfg, err := inspect(bytes.NewReader(bomb), 32_000_000)
	wantCode(t, "50000x50000 PNG", err, mxerr.TooLarge)
	if cfg.Width != 50_000 || cfg.Height != 50_000 {
		t.Fatalf("header read as %dx%d", cfg.Width, cfg.Height)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusing took %v", d)
	}
	// The same header under the limit passes inspection, and then fails to
	// decode: proof that the refusal above came from the header check.
	small := pngHeaderOnly(100, 100)
	format, _, err := inspect(bytes.NewReader(small), 32_000_000)
	if err != nil {
		t.Fatalf("100x100 header: %v", err)
	}
	_, err = render(format, bytes.NewReader(small), image.Point{32, 32}, MethodScale)
	wantCode(t, "header without data", err, mxerr.Unknown)
}

func TestInspectRefusesOtherContent(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":           {},
		"text":            []byte("hello, this is not an image"),
		"html":            []byte("<html><script>alert(1)</script></html>"),
		"encrypted blob":  bytes.Repeat([]byte{0x8f, 0x13, 0xa7}, 100),
		"truncated png":   []byte("\x89PNG\r\n\x1a\n\x00\x00"),
		"bmp":             []byte("BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"),
		"svg":             []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`),
		"riff not webp":   []byte("RIFF\x10\x00\x00\x00WAVEfmt "),
		"zero-width png":  pngHeaderOnly(0, 10),
		"jpeg magic only": []byte("\xff\xd8\xff"),
	} {
		_, _, err := inspect(bytes.NewReader(data), 32_000_000)
		wantCode(t, name, err, mxerr.Unknown)
	}
}

func BenchmarkRenderJPEG4000x3000(b *testing.B) {
	data := encodeTestImage(b, "jpeg", gradient(4000, 3000))
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := render(formatJPEG, bytes.NewReader(data), image.Point{320, 240}, MethodScale); err != nil {
			b.Fatal(err)
		}
	}
}
