package demo

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// browser returns a headless Chromium, or skips the test.
func browser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium installed (Debian: apt-get install chromium); the HTML report's rendering is not checked")
	return ""
}

// screenshot renders file in headless Chromium and returns the image.
func screenshot(t *testing.T, chrome, file string) image.Image {
	t.Helper()
	out := filepath.Join(t.TempDir(), "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--window-size=1000,1200", "--screenshot="+out, "file://"+file)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pixels counts the pixels within a small distance of the colour #rrggbb.
func pixels(img image.Image, hex string) int {
	var want [3]int
	for i := range want {
		var v int
		for _, c := range hex[1+2*i : 3+2*i] {
			v = v*16 + strings.IndexRune("0123456789abcdef", c)
		}
		want[i] = v
	}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			d := abs(int(r>>8)-want[0]) + abs(int(g>>8)-want[1]) + abs(int(bl>>8)-want[2])
			if d < 24 {
				n++
			}
		}
	}
	return n
}

func abs(v int) int { return max(v, -v) }

// TestHTMLRendersCharts: the HTML report, opened in headless Chromium, shows
// both streams' charts; a page without them shows neither colour.
func TestHTMLRendersCharts(t *testing.T) {
	chrome := browser(t)
	rep := Report{Duration: 3 * time.Second, Rate: 100, LossPct: 10, Delays: []float64{5, 20, 40},
		Single: Stream{Name: "best single path", Sent: 300, Received: 240, Lost: 60, LossPct: 20, P50Ms: 10, P99Ms: 12, PerSecond: []float64{80, 79, 81}},
		Tunnel: Stream{Name: "mptunnel, 3 paths", Sent: 300, Received: 300, P50Ms: 10, P99Ms: 40, PerSecond: []float64{100, 100, 100}}}
	dir := t.TempDir()
	page := filepath.Join(dir, "demo.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := screenshot(t, chrome, page)
	single, tunnel := pixels(img, colorSingle), pixels(img, colorTunnel)
	t.Logf("rendered %v: %d pixels of the single path's colour, %d of the tunnel's", img.Bounds().Size(), single, tunnel)
	if single < 2000 || tunnel < 2000 {
		t.Fatalf("the charts did not render: %d and %d pixels of their colours", single, tunnel)
	}
	plain := filepath.Join(dir, "plain.html")
	if err := os.WriteFile(plain, []byte("<!doctype html><p>no charts</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	img = screenshot(t, chrome, plain)
	if n := pixels(img, colorSingle) + pixels(img, colorTunnel); n > 100 {
		t.Fatalf("a page without charts has %d pixels of their colours: the check cannot fail", n)
	}
}
