//go:build linux

package labtest

import (
	"testing"

	"github.com/mptunnel/mptunnel/internal/netlab"
)

func TestMain(m *testing.M) { netlab.Main(m) }
