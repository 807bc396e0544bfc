package cpex

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A build without cgo fails with one error that says what to do.
func TestABuildWithoutCgoFailsWithOneClearError(t *testing.T) {
	cmd := exec.Command("go", "build", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("CGO_ENABLED=0 go build succeeded")
	}
	var errors []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, ".go:") {
			errors = append(errors, line)
		}
	}
	if len(errors) != 1 || !strings.Contains(errors[0], "cpex_needs_cgo__build_with_CGO_ENABLED_1") {
		t.Fatalf("want one error naming the fix, got:\n%s", out)
	}
}
